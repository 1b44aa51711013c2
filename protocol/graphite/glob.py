"""Graphite globs on dot-separated nodes, and the virtual leaves of a metric.

A pattern is matched node by node: ``*`` is any run of characters within a node, ``?``
one character, ``[a-z]`` / ``[!a-z]`` a class, ``{a,b}`` alternatives (which may hold
``*`` and ``?`` themselves). A node never matches across a dot.

Every metric ``name`` is a leaf (its default series: counters sum per step, values
and gauges average, sets count distinct members) and also has the virtual leaves
``name.<aggregation>`` its kind answers (``leaves``): the six of every bucket for
counters, values and gauges; the percentiles of a value (``name.p99``; the named ones
are listed, any ``pNN`` without a dot reads: ``name.p995``); a gauge's ``last``; a
set's ``count``, ``rate`` and ``unique``. A stored metric with the same full name wins
over a virtual leaf.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from protocol.buckets import LAST, PERCENTILES, UNIQUE, aggregation_error, percentile

# virtual leaf -> the stored aggregation it reads (protocol.buckets.Aggregation): the
# leaves of every counter, value and gauge (and of a metric whose kind is not known)
VIRTUAL_LEAVES: Final = {
    "sum": "sum", "count": "count", "avg": "avg", "min": "min", "max": "max", "rate": "rate",
}
# The leaves each kind lists (an aggregation is named by its leaf).
_KIND_LEAVES: Final[dict[str, tuple[str, ...]]] = {
    "counter": tuple(VIRTUAL_LEAVES),
    "value": (*VIRTUAL_LEAVES, *PERCENTILES),
    "gauge": (*VIRTUAL_LEAVES, LAST),
    "set": ("count", "rate", UNIQUE),
}


def leaves(kind: str | None) -> tuple[str, ...]:
    """The virtual leaves ``/metrics/find`` lists for a metric of ``kind``."""
    return _KIND_LEAVES.get(kind or "", tuple(VIRTUAL_LEAVES))


def leaf_aggregation(leaf: str, kind: str | None) -> str | None:
    """The aggregation the virtual leaf ``leaf`` of a metric of ``kind`` reads, or None
    if it has no such leaf (any ``pNN`` of a value, not only the listed ones)."""
    if kind is None:
        return VIRTUAL_LEAVES.get(leaf)
    if leaf in leaves(kind) or (percentile(leaf) is not None
                                and aggregation_error(kind, leaf) is None):
        return leaf
    return None


def is_leaf_name(leaf: str) -> bool:
    """Could ``leaf`` be a virtual leaf of some kind of metric?"""
    return leaf in VIRTUAL_LEAVES or leaf in (LAST, UNIQUE) or percentile(leaf) is not None
MAX_PATTERN_NODES: Final = 64
GLOB_CHARS: Final = frozenset("*?[{")


class GlobError(ValueError):
    """A pattern that is not a glob (unclosed class or braces, too many nodes)."""


def split_nodes(pattern: str) -> list[str]:
    """The nodes of ``pattern``: split on dots outside ``{...}``."""
    nodes: list[str] = []
    depth = 0
    current: list[str] = []
    for char in pattern:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        if char == "." and depth == 0:
            nodes.append("".join(current))
            current = []
        else:
            current.append(char)
    nodes.append("".join(current))
    if len(nodes) > MAX_PATTERN_NODES:
        raise GlobError(f"pattern has more than {MAX_PATTERN_NODES} nodes")
    return nodes


@functools.lru_cache(maxsize=4096)
def node_regex(node: str) -> re.Pattern[str]:
    """A compiled regex that full-matches one node of a pattern."""
    return re.compile(_translate(node), re.ASCII)


def _translate(node: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(node):
        char = node[i]
        if char == "*":
            out.append("[^.]*")
        elif char == "?":
            out.append("[^.]")
        elif char == "[":
            end = node.find("]", i + 2 if node[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                raise GlobError(f"unclosed '[' in {node!r}")
            body = node[i + 1:end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise GlobError(f"empty class in {node!r}")
            escaped = "".join("\\" + c if c in "\\^[]" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end
        elif char == "{":
            end = node.find("}", i)
            if end < 0:
                raise GlobError(f"unclosed '{{' in {node!r}")
            choices = node[i + 1:end].split(",")
            if "{" in node[i + 1:end]:
                raise GlobError(f"nested braces in {node!r}")
            out.append("(?:" + "|".join(_translate(c) for c in choices) + ")")
            i = end
        elif char in "]}":
            raise GlobError(f"unexpected {char!r} in {node!r}")
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def has_glob(text: str) -> bool:
    return any(char in GLOB_CHARS for char in text)


def literal_prefix(pattern: str) -> str:
    """The text before the first glob character: every match starts with it."""
    for i, char in enumerate(pattern):
        if char in GLOB_CHARS:
            return pattern[:i]
    return pattern


def matches(nodes: list[str], path: list[str]) -> bool:
    return len(nodes) == len(path) and all(
        node_regex(n).fullmatch(p) is not None for n, p in zip(nodes, path, strict=True)
    )


class Match(NamedTuple):
    path: str  # the matched path (a metric's name, a branch, or name.<virtual leaf>)
    leaf: bool  # a series can be read for it
    branch: bool  # it has children (deeper names, or virtual leaves)
    metric: str | None  # the stored metric a leaf reads
    aggregation: str | None  # None: the metric's default; else the leaf's (leaf_aggregation)


def find(pattern: str, names: Iterable[str],
         kinds: Mapping[str, str] | None = None) -> list[Match]:
    """What ``pattern`` matches among the stored metric ``names`` (of ``kinds``: name ->
    kind, which decides a metric's virtual leaves; without, the six of every bucket).

    Branches first, then leaves, each sorted by path; a path that is both (a metric with
    deeper metrics, or with its virtual leaves) is one entry. Raises GlobError.
    """
    nodes = split_nodes(pattern)
    depth = len(nodes)
    for node in nodes:
        node_regex(node)  # raise GlobError before looking at any name
    found: dict[str, Match] = {}
    for name in names:
        path = name.split(".")
        if len(path) >= depth and matches(nodes, path[:depth]):
            key = ".".join(path[:depth])
            old = found.get(key)
            is_leaf = len(path) == depth
            found[key] = Match(
                key,
                is_leaf or (old is not None and old.leaf),
                True,  # deeper names, or (a metric) its virtual leaves
                name if is_leaf else (old.metric if old else None),
                None,
            )
        elif len(path) == depth - 1 and matches(nodes[:-1], path):
            last = node_regex(nodes[-1])
            kind = kinds.get(name) if kinds is not None else None
            # A literal last node reaches any leaf the kind has (app.*.ms.p995), a glob
            # the listed ones.
            literal = () if has_glob(nodes[-1]) else (nodes[-1],)
            for leaf in (*leaves(kind), *literal):
                aggregation = leaf_aggregation(leaf, kind)
                key = f"{name}.{leaf}"
                # a stored metric of that name wins
                if aggregation is not None and last.fullmatch(leaf) and key not in found:
                    found[key] = Match(key, True, False, name, aggregation)
    return sorted(found.values(), key=lambda m: (not m.branch, m.path))
