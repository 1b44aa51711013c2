"""Graphite target expressions: a tokenizer, a recursive-descent parser, and ``render``.

Grammar (graphite-web's, minus the pipe syntax and template variables)::

    expression = call | path | string | number | boolean | "None"
    call       = NAME "(" [argument ("," argument)*] ")"
    argument   = [NAME "="] expression
    path       = path characters, and any character between "{" and "}" except "}"
                 (so ``a.{b,c}.d`` is one path); ``*``, ``?``, ``[...]`` are globs
    string     = "'" ... "'" | '"' ... '"'   (a backslash escapes the quote or itself;
                 any other backslash is kept, so ``"\\1"`` stays a back-reference)
    number     = an integer or a float, optionally signed, with exponent
    boolean    = true | false   (any case)

``render(parse(text))`` gives a canonical text that parses back to the same tree.
Limits: a target is at most ``MAX_TARGET_LENGTH`` characters and calls nest at most
``MAX_DEPTH`` deep, so no input can exhaust the stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

MAX_TARGET_LENGTH: Final = 8192
MAX_DEPTH: Final = 32

_PATH_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.*?[]!^+"
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParseError(ValueError):
    """The target is not an expression; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Path:
    pattern: str


@dataclass(frozen=True, slots=True)
class String:
    value: str


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool


@dataclass(frozen=True, slots=True)
class NoneLiteral:
    pass


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...] = ()
    kwargs: tuple[tuple[str, Node], ...] = ()


Node = Path | String | Number | Bool | NoneLiteral | Call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> ParseError:
        return ParseError(f"{message} at character {self.pos + 1} of {self.text!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def expression(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"calls nested more than {MAX_DEPTH} deep")
        char = self.peek()
        if not char:
            raise self.fail("expected an expression, found the end")
        if char in "'\"":
            return String(self.string(char))
        word = self.word()
        if not word:
            raise self.fail(f"unexpected {char!r}")
        if self.peek() == "(":
            if _NAME.fullmatch(word) is None:
                raise self.fail(f"{word!r} is not a function name")
            self.pos += 1
            return self.call(word, depth)
        if _NUMBER.fullmatch(word):
            if len(word) > 64 or not math.isfinite(number := float(word)):
                raise self.fail(f"number {word!r} out of range")
            is_int = re.fullmatch(r"[-+]?\d+", word) is not None
            return Number(int(word) if is_int else number)
        if word.lower() in ("true", "false"):
            return Bool(word.lower() == "true")
        if word == "None":
            return NoneLiteral()
        return Path(word)

    def word(self) -> str:
        start = self.pos
        text = self.text
        braces = 0
        while self.pos < len(text):
            char = text[self.pos]
            if char == "{":
                braces += 1
            elif char == "}":
                if not braces:
                    break
                braces -= 1
            elif braces:
                if char in "()'\"" or char.isspace():
                    raise self.fail(f"{char!r} inside {{...}}")
            elif char not in _PATH_CHARS:
                break
            self.pos += 1
        if braces:
            raise self.fail("unclosed '{'")
        return text[start:self.pos]

    def string(self, quote: str) -> str:
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in (quote, "\\"):
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.fail("unclosed string")

    def call(self, name: str, depth: int) -> Call:
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        if self.peek() == ")":
            self.pos += 1
            return Call(name)
        while True:
            self.skip_space()
            keyword = _NAME.match(self.text, self.pos)
            if keyword is not None:
                after = keyword.end()
                while after < len(self.text) and self.text[after] in " \t":
                    after += 1
                if self.text.startswith("=", after):
                    self.pos = after + 1
                    if any(k == keyword.group() for k, _ in kwargs):
                        raise self.fail(f"argument {keyword.group()!r} given twice")
                    kwargs.append((keyword.group(), self.expression(depth + 1)))
                else:
                    keyword = None
            if keyword is None:
                if kwargs:
                    raise self.fail("a positional argument after a keyword argument")
                args.append(self.expression(depth + 1))
            char = self.peek()
            if char == ",":
                self.pos += 1
                continue
            if char == ")":
                self.pos += 1
                return Call(name, tuple(args), tuple(kwargs))
            found = repr(char) if char else "the end"
            raise self.fail(f"expected ',' or ')' in {name}(...), found {found}")


def parse(text: str) -> Node:
    """The expression tree of a target; ParseError if it is not one."""
    if len(text) > MAX_TARGET_LENGTH:
        raise ParseError(f"target longer than {MAX_TARGET_LENGTH} characters")
    parser = _Parser(text)
    node = parser.expression(0)
    if parser.peek():
        raise parser.fail(f"unexpected {parser.peek()!r} after the expression")
    return node


def render(node: Node) -> str:
    """Canonical text of ``node``: ``parse(render(node)) == node``."""
    if isinstance(node, Path):
        return node.pattern
    if isinstance(node, String):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, NoneLiteral):
        return "None"
    if isinstance(node, Number):
        return repr(node.value)
    parts = [render(arg) for arg in node.args]
    parts += [f"{key}={render(value)}" for key, value in node.kwargs]
    return f"{node.name}({','.join(parts)})"


def paths(node: Node) -> list[str]:
    """Every path expression in ``node``, depth first."""
    if isinstance(node, Path):
        return [node.pattern]
    if isinstance(node, Call):
        found = [p for arg in node.args for p in paths(arg)]
        return found + [p for _key, value in node.kwargs for p in paths(value)]
    return []
