"""Types of the optional C accelerator (collector/_fastfeed.c)."""

from typing import Any, Final

from protocol.names import Kind

FUTURE_TOLERANCE: Final[int]
RATE_FLOOR: Final[float]
MAX_NAME_LENGTH: Final[int]
TOKEN_LENGTH: Final[int]
MAX_MEMBER_LENGTH: Final[int]
# REASONS[r]: protocol.lines.Reason's value of C reason r ("" for r = 0): the bit r of
# feed's ``quiet``, the index r of the drop counts it returns
REASONS: Final[tuple[str, ...]]

def feed(
    data: bytes,
    pos: int,
    now: int,
    max_age: int,
    max_len: int,
    known: HeadTable,
    buckets: dict[int, dict[str, list[Any]]],
    capacity: int,
    summaries: dict[int, dict[str, Any]],
    gauges: dict[str, float],
    alpha_bp: int,
    value_sketches: bool,
    quiet: int,
) -> tuple[int, int, int, int, tuple[int, ...] | None]: ...
class HeadTable:
    """head (bytes) -> (name, kind), the C pass's name cache; each entry owns the
    bucket of its name's latest second (its fields newer than the list's) until
    forget_buckets() or release(name)."""

    def __len__(self) -> int: ...
    def __contains__(self, head: object) -> bool: ...
    def __getitem__(self, head: bytes) -> tuple[str, Kind]: ...
    def __setitem__(self, head: bytes, entry: tuple[str, Kind]) -> None: ...
    def __delitem__(self, head: bytes) -> None: ...
    def get(self, head: bytes, default: None = None) -> tuple[str, Kind] | None: ...
    def pop(self, head: bytes, default: None) -> tuple[str, Kind] | None: ...
    def clear(self) -> None: ...
    def forget_buckets(self) -> None: ...
    def release(self, name: str) -> None: ...

def parse_lines(
    data: bytes, now: int, max_age: int, max_len: int
) -> tuple[
    list[tuple[str, str, float, float, int | None, str | None, str | None, bool]], list[str], int
]: ...
def has_sketches() -> bool: ...
def recv_datagrams(fd: Any, buffer: Any, slot_size: int) -> tuple[bytes, int, int]: ...
