"""Durations, query intervals, rate-limit specs and timestamps: text in, numbers out."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final, NamedTuple

_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAMED_INTERVALS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION = re.compile(r"([1-9][0-9]{0,9})([smhdw])", re.ASCII)


def parse_duration(text: str) -> int:
    """``"7d"`` -> 604800. A bare integer is seconds. Raises ValueError."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 12h, 7d, 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """604800 -> ``"7d"``: the largest of d, h, m, s that divides it (the inverse of
    parse_duration for what it prints; weeks are left as days, as people write them)."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds:g}"
    for unit in ("d", "h", "m"):
        if whole % _UNIT_SECONDS[unit] == 0:
            return f"{whole // _UNIT_SECONDS[unit]}{unit}"
    return f"{whole}s"


def parse_interval(text: str) -> int:
    """A query interval: second/minute/hour/day or ``10s``, ``5m``, ``1h``, ``1d``.

    Must divide a day or be a whole number of days, so that buckets align to UTC
    midnight and to each other (a 7m bucket would straddle midnight).
    """
    seconds = _NAMED_INTERVALS.get(text)
    if seconds is None:
        match = _DURATION.fullmatch(text)
        if match is None or match.group(2) == "w":
            raise ValueError(
                "must be second, minute, hour, day or a count with s, m, h, d (e.g. 10s, 5m)"
            )
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if 86400 % seconds and seconds % 86400:
        raise ValueError("must divide a day evenly or be a whole number of days")
    return seconds


class RateLimit(NamedTuple):
    """A token bucket: ``rate`` tokens per second, holding at most ``burst``."""

    rate: float
    burst: float

    def __str__(self) -> str:
        return format_rate_limit(self)


_RATE = re.compile(r"([1-9][0-9]{0,8})/([smhd])", re.ASCII)


def parse_rate_limit(text: str) -> RateLimit:
    """``"100/s"`` -> 100 per second, burst 100; ``"6000/m"`` -> 100/s, burst 6000."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid rate limit {text!r}: use COUNT/UNIT, e.g. 100/s or 6000/m")
    count = int(match.group(1))
    return RateLimit(rate=count / _UNIT_SECONDS[match.group(2)], burst=float(count))


def format_rate_limit(limit: RateLimit) -> str:
    for unit in ("s", "m", "h", "d"):
        if math.isclose(limit.rate * _UNIT_SECONDS[unit], limit.burst):
            return f"{int(limit.burst)}/{unit}"
    return f"{limit.rate:g}/s"


def parse_timestamp(value: object) -> float:
    """An epoch number or an ISO 8601 string -> epoch seconds. Raises ValueError.

    Naive ISO times are taken as UTC: a metrics service has no local time zone.
    """
    if isinstance(value, bool):
        raise ValueError("must be epoch seconds or an ISO 8601 string")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("must be a finite time between 1970 and 9999") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise ValueError(
                    "must be epoch seconds or an ISO 8601 string like 2026-11-28T14:00:00Z"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        raise ValueError("must be epoch seconds or an ISO 8601 string")
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # year 10000
        raise ValueError("must be a finite time between 1970 and 9999")
    return seconds


def format_timestamp(epoch: int) -> str:
    """Epoch seconds -> ``2026-11-28T14:00:00Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
