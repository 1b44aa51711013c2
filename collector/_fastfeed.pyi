"""Types of the optional C accelerator (collector/_fastfeed.c)."""

from typing import Any

def feed_fast(
    data: bytes,
    pos: int,
    known: dict[bytes, tuple[str, str]],
    tails: dict[bytes, tuple[float, str]],
    table: dict[str, list[Any]],
    max_len: int,
    capacity: int,
) -> tuple[int, int, int]: ...
