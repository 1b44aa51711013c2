"""The line protocol (DESIGN §2): bytes in, samples and per-line errors out.

    line = [token "."] name ":" value "|" type ["|@" rate] ["|#" tags] ["|T" epoch]

``|s`` (sets): the value is a member, 1..255 bytes of printable ASCII (0x20..0x7E; "|"
cannot occur, it ends the field); the sample carries it as ``member`` and value 1.0.
``|g`` with an explicit sign (``+5|g``, ``-5|g``) is a gauge delta (``delta=True``, the
signed value); without one it sets the gauge. What the aggregator does with them:
collector/aggregator.py.

The parser never raises on input: every bad line becomes a ``LineError`` with a reason,
and the other lines of the datagram are unaffected. It is the hot path of the daemon,
so it makes one pass over the datagram, caches validated names, and builds one tuple
per good line.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Final, NamedTuple

from protocol.buckets import RATE_FLOOR
from protocol.names import COUNTER, GAUGE, SET, VALUE, Kind, is_valid_name_bytes
from protocol.tokens import DISPLAY_PREFIX_LENGTH, TOKEN_LENGTH, contains_token

DEFAULT_MAX_LINE_LENGTH: Final = 4096
FUTURE_TOLERANCE: Final = 300  # seconds a |T time may lie ahead of the clock
ERROR_SAMPLE_LENGTH: Final = 120  # bytes of a bad line kept for the log


class Reason(StrEnum):
    """Why a line was dropped. The values are the self-metric label values."""

    PARSE_ERROR = "parse_error"  # not name:value|type, or an unknown |field
    BAD_NAME = "bad_name"
    BAD_VALUE = "bad_value"  # not a finite number; for |s, not a member (MAX_MEMBER_LENGTH)
    UNKNOWN_TYPE = "unknown_type"  # e.g. |q, |C, DogStatsD events
    BAD_RATE = "bad_rate"  # not in [RATE_FLOOR, 1] = [1e-6, 1]
    BAD_TIMESTAMP = "bad_timestamp"  # not an integer, or outside the accepted window
    TOO_LONG = "too_long"
    BAD_KEY = "bad_key"  # malformed, unknown or revoked token
    NO_KEY = "no_key"  # --require-key and the line carries no token
    KIND_CONFLICT = "kind_conflict"  # a counter sample for a value metric or vice versa
    TOO_MANY_METRICS = "too_many_metrics"  # a new name past --max-metrics
    OVERLOAD = "overload"  # past --max-pending-buckets
    OVERFLOW = "overflow"  # its bucket's sum or count would stop being finite


class Sample(NamedTuple):
    """One good line. ``timestamp`` is None for "now"; ``token`` is None if unkeyed.

    ``member``: a set's member (kind set, value 1.0), else None. ``delta``: a gauge line
    with an explicit sign (``+5|g``, ``-5|g``): add ``value`` to the gauge, not set it.
    """

    name: str
    kind: Kind
    value: float
    rate: float
    timestamp: int | None
    token: str | None
    member: str | None = None
    delta: bool = False


class LineError(NamedTuple):
    reason: Reason
    line: bytes  # the start of the bad line, for a log sample
    detail: str


class Parsed(NamedTuple):
    samples: list[Sample]
    errors: list[LineError]
    tags_ignored: int  # good lines that carried DogStatsD |#tags (accepted, not stored)


KIND_BY_TYPE: Final[dict[bytes, Kind]] = {
    b"c": COUNTER,
    b"v": VALUE,
    b"ms": VALUE,
    b"h": VALUE,
    b"d": VALUE,
    b"g": GAUGE,
    b"s": SET,
}
MAX_MEMBER_LENGTH: Final = 255  # bytes of a set member
NUMBER: Final = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER = NUMBER
_TOKEN = re.compile(rb"gf_[0-9A-Za-z]{32}")
_KEY_WITHOUT_DOT: Final = "a key prefix (gf_ + 32 base62) must be followed by '.' and the name"
_RATE_RANGE: Final = f"sample rate must be in [{RATE_FLOOR}, 1]"
_BAD_MEMBER: Final = f"a set member is 1..{MAX_MEMBER_LENGTH} bytes of printable ASCII"
_NAME_CACHE_LIMIT: Final = 200_000
_TIME_CACHE_LIMIT: Final = 4096


class LineParser:
    """Parses datagrams and TCP chunks. Holds only limits and a cache of good names."""

    def __init__(
        self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH, max_age: int = 7 * 86400
    ) -> None:
        self.max_line_length = max_line_length
        self.max_age = max_age  # seconds a |T time may lie in the past (raw retention)
        # head (the bytes before ":") -> (token, name). Most traffic repeats a few
        # thousand names, so validating and decoding each name once pays for itself.
        self._heads: dict[bytes, tuple[str | None, str]] = {}
        self._times: dict[bytes, int] = {}  # b"1790000000" -> 1790000000 (|T fields)

    def parse(self, data: bytes, now: int) -> Parsed:
        samples: list[Sample] = []
        errors: list[LineError] = []
        tagged = 0
        heads = self._heads
        times = self._times
        kinds = KIND_BY_TYPE
        max_len = self.max_line_length
        isfinite = math.isfinite
        for line in data.split(b"\n"):
            if not line:
                continue
            if line[-1] == 13:  # "\r" of "\r\n"
                line = line[:-1]
                if not line:
                    continue
            if len(line) > max_len:
                errors.append(_error(Reason.TOO_LONG, line, f"longer than {max_len} bytes"))
                continue
            head, colon, rest = line.partition(b":")
            if not colon:
                errors.append(_error(Reason.PARSE_ERROR, line, "expected name:value|type"))
                continue
            fields = rest.split(b"|")
            if len(fields) < 2:
                errors.append(_error(Reason.PARSE_ERROR, line, "expected name:value|type"))
                continue
            raw_value = fields[0]
            type_code = fields[1]
            kind = kinds.get(type_code)
            if kind is None:
                errors.append(
                    _error(Reason.UNKNOWN_TYPE, line, "type must be c, v, ms, h, d, g or s")
                )
                continue

            cached = heads.get(head)
            if cached is None:
                split = self._split_head(head)
                if split is Reason.BAD_NAME:
                    errors.append(_error(Reason.BAD_NAME, line, "invalid metric name"))
                    continue
                if split is Reason.BAD_KEY:
                    errors.append(_error(Reason.BAD_KEY, line, _KEY_WITHOUT_DOT))
                    continue
                assert not isinstance(split, Reason)
                cached = split
            token, name = cached

            member: str | None = None
            delta = False
            if kind is SET:
                # Printable ASCII: bounded, loggable, and the same bytes in C. A member
                # is a string: "1" and "1.0" are two members (as in Etsy statsd).
                if (
                    not raw_value
                    or len(raw_value) > MAX_MEMBER_LENGTH
                    or not raw_value.isascii()
                    or not (member := raw_value.decode("ascii")).isprintable()
                ):
                    errors.append(_error(Reason.BAD_VALUE, line, _BAD_MEMBER))
                    continue
                value = 1.0
            elif raw_value.isdigit():  # the common case: a plain integer
                value = float(raw_value)
            else:
                if _NUMBER.fullmatch(raw_value) is None:
                    errors.append(_error(Reason.BAD_VALUE, line, "value is not a number"))
                    continue
                value = float(raw_value)
                # An explicit sign on a gauge is a StatsD delta (+n|g, -n|g): "-5|g"
                # adds -5 to a gauge it knows (set to -5 if unseen, as Etsy statsd).
                delta = kind is GAUGE and raw_value[:1] in (b"+", b"-")
            if not isfinite(value):
                errors.append(_error(Reason.BAD_VALUE, line, "value is not finite"))
                continue

            rate = 1.0
            timestamp: int | None = None
            if len(fields) > 2:
                failure = None
                has_tags = False
                for field in fields[2:]:
                    marker = field[:1]
                    if marker == b"@":
                        raw_rate = field[1:]
                        if _NUMBER.fullmatch(raw_rate) is None:
                            failure = (Reason.BAD_RATE, "sample rate is not a number")
                            break
                        rate = float(raw_rate)
                        if not RATE_FLOOR <= rate <= 1.0:
                            failure = (Reason.BAD_RATE, _RATE_RANGE)
                            break
                    elif marker == b"#":
                        has_tags = True
                    elif marker == b"T":
                        raw_ts = field[1:]
                        if not raw_ts.isdigit() or len(raw_ts) > 12:
                            failure = (Reason.BAD_TIMESTAMP, "timestamp is not epoch seconds")
                            break
                        # One int object per second, shared by every bucket key of
                        # that second (28 bytes per metric-second saved).
                        timestamp = times.get(raw_ts)
                        if timestamp is None:
                            if len(times) >= _TIME_CACHE_LIMIT:
                                times.clear()
                            timestamp = times[raw_ts] = int(raw_ts)
                        if not now - self.max_age <= timestamp <= now + FUTURE_TOLERANCE:
                            failure = (Reason.BAD_TIMESTAMP, "timestamp outside retention")
                            break
                    elif field[:2] in (b"c:", b"e:"):
                        pass  # DogStatsD origin detection (container id, external data)
                    else:
                        failure = (Reason.PARSE_ERROR, "unknown |field")
                        break
                if failure is not None:
                    errors.append(_error(failure[0], line, failure[1]))
                    continue
                if has_tags:
                    tagged += 1
            samples.append(Sample(name, kind, value, rate, timestamp, token, member, delta))
        return Parsed(samples, errors, tagged)

    def _split_head(self, head: bytes) -> tuple[str | None, str] | Reason:
        """Validate ``[token "."] name`` once; cache the good ones.

        A head that starts like a token (``gf_`` + 32 base62) is a key prefix: without
        the "." after it (``gf_<32>web.hits``, a typo) it is BAD_KEY, never a name, so a
        key cannot end up in a metric name that every reader can list; so is a name
        with a token-shaped run anywhere else (``app.gf_<32>.hits``).
        """
        token: str | None = None
        name = head
        if head[:3] == b"gf_" and _TOKEN.match(head) is not None:
            if head[TOKEN_LENGTH : TOKEN_LENGTH + 1] != b".":
                return Reason.BAD_KEY
            token = head[:TOKEN_LENGTH].decode("ascii")
            name = head[TOKEN_LENGTH + 1 :]
        if not is_valid_name_bytes(name):
            return Reason.BAD_NAME
        if contains_token(name):  # a key elsewhere in the name: never stored as one
            return Reason.BAD_KEY
        result = (token, name.decode("ascii"))
        if len(self._heads) >= _NAME_CACHE_LIMIT:
            self._heads.clear()  # bounded memory under a flood of distinct names
        self._heads[head] = result
        return result


def _error(reason: Reason, line: bytes, detail: str) -> LineError:
    """The error with the start of its line for the log, every token in it cut to its
    display prefix (a line is redacted before it is cut, so no token is half-kept)."""
    sample = line[: ERROR_SAMPLE_LENGTH + TOKEN_LENGTH]
    if b"gf_" in sample:
        sample = _TOKEN.sub(_redact, sample)
    return LineError(reason, sample[:ERROR_SAMPLE_LENGTH], detail)


def _redact(match: re.Match[bytes]) -> bytes:
    return match.group()[:DISPLAY_PREFIX_LENGTH] + b"..."


def parse_packet(data: bytes, now: int) -> Parsed:
    """Parse with default limits; for tests and tools. The daemon keeps a LineParser."""
    return LineParser().parse(data, now)
