"""Types of the optional C accelerator (collector/_fastfeed.c)."""

from typing import Any

def feed_fast(
    data: bytes,
    pos: int,
    now: int,
    known: dict[bytes, tuple[str, str]],
    tails: dict[bytes, tuple[float, str]],
    current: dict[str, list[Any]],
    buckets: dict[tuple[str, int], list[Any]],
    max_len: int,
    max_buckets: int,
) -> tuple[int, int]: ...
