"""Types of the optional C accelerator (collector/_fastfeed.c)."""

from typing import Any, Final

FUTURE_TOLERANCE: Final[int]
RATE_FLOOR: Final[float]
MAX_NAME_LENGTH: Final[int]
TOKEN_LENGTH: Final[int]
MAX_MEMBER_LENGTH: Final[int]

def feed(
    data: bytes,
    pos: int,
    now: int,
    max_age: int,
    max_len: int,
    known: dict[bytes, tuple[str, str]],
    buckets: dict[int, dict[str, list[Any]]],
    capacity: int,
    sketches: dict[int, dict[str, Any]] | None,
    alpha_bp: int,
) -> tuple[int, int, int, int]: ...
def parse_lines(
    data: bytes, now: int, max_age: int, max_len: int
) -> tuple[
    list[tuple[str, str, float, float, int | None, str | None, str | None, bool]], list[str], int
]: ...
def has_sketches() -> bool: ...
