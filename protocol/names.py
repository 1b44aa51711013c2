"""Metric names and metric kinds (DESIGN §2)."""

from __future__ import annotations

import re
from typing import Final, Literal

from protocol.tokens import contains_token

# counter: c. value: v, ms, h, d (with a quantile sketch). gauge: g (the last value as
# well). set: s (a distinct count). docs/sketches.md says what each keeps.
Kind = Literal["counter", "value", "gauge", "set"]
COUNTER: Final = "counter"
VALUE: Final = "value"
GAUGE: Final = "gauge"
SET: Final = "set"
KINDS: Final = (COUNTER, VALUE, GAUGE, SET)

MAX_NAME_LENGTH: Final = 255

# Dot-separated segments of [A-Za-z0-9_-]: this excludes a leading or trailing "."
# and "..", which Graphite-style tools would read as empty path components.
_NAME_BYTES = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_NAME_STR = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*", re.ASCII)


def is_valid_name_bytes(name: bytes) -> bool:
    """True if ``name`` is a valid metric name (the wire form)."""
    return len(name) <= MAX_NAME_LENGTH and _NAME_BYTES.fullmatch(name) is not None


def name_error(name: object) -> str | None:
    """Why ``name`` is not a valid metric name, or None if it is (the HTTP form)."""
    if not isinstance(name, str):
        return "must be a string"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    if _NAME_STR.fullmatch(name) is None:
        return (
            "may contain only A-Z a-z 0-9 _ - and '.', with no leading, trailing "
            "or doubled '.'"
        )
    if contains_token(name):
        return "must not contain an API key (gf_ + 32 base62 characters)"
    return None
