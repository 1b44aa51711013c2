"""Graphite times (``from``, ``until``) and offsets (``timeShift``, ``summarize``).

As graphite-web's ``render/attime.py`` reads them, in UTC:

    now, today, yesterday, tomorrow, midnight, noon   references
    1700000000                                        epoch seconds
    20261128, 14:30_20261128 (also 14:3020261128)      YYYYMMDD, HH:MM_YYYYMMDD
    -6h, +1d, now-5min, midnight+2h                   a reference and an offset

Offset units: s, sec(s), second(s); min(s), minute(s); h, hour(s); d, day(s); w, week(s);
mon, month(s) (30 days); y, year(s) (365 days). ``m`` alone is refused: graphite reads
it as neither minutes nor months (Grafana rewrites ``5m`` to ``5min`` for this reason).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

MAX_OFFSET: Final = 100 * 365 * 86400  # seconds; past this a time means nothing useful

_UNITS: Final = (  # (prefix, seconds), longest prefixes first where they overlap
    ("mon", 30 * 86400),
    ("min", 60),
    ("s", 1),
    ("h", 3600),
    ("d", 86400),
    ("w", 7 * 86400),
    ("y", 365 * 86400),
)
_UNIT_WORDS: Final = frozenset({
    "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes",
    "h", "hour", "hours", "d", "day", "days", "w", "week", "weeks",
    "mon", "month", "months", "y", "year", "years",
})
_OFFSET_PART = re.compile(r"([-+]?)(\d+)([a-z]+)")
_CLOCK_DATE = re.compile(r"(\d{1,2}):(\d{2})(\d{8})")


def parse_offset(text: str) -> int:
    """Seconds of an offset like ``-1d``, ``5min``, ``+2h``, ``1h30min``; no sign is +."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty time offset")
    sign = 1
    if compact[0] in "+-":
        sign = -1 if compact[0] == "-" else 1
        compact = compact[1:]
    total = 0
    pos = 0
    while pos < len(compact):
        match = _OFFSET_PART.match(compact, pos)
        if match is None or match.group(1):
            raise ValueError(f"invalid time offset {text!r}")
        count, unit = int(match.group(2)), match.group(3)
        total += count * _unit_seconds(unit, text)
        pos = match.end()
        if total > MAX_OFFSET:
            raise ValueError(f"time offset {text!r} is too large")
    return sign * total


def _unit_seconds(unit: str, text: str) -> int:
    if unit == "m":
        raise ValueError(f"ambiguous unit 'm' in {text!r}: use 'min' for minutes, "
                         "'mon' for months")
    if unit not in _UNIT_WORDS:
        raise ValueError(f"unknown time unit {unit!r} in {text!r}")
    for prefix, seconds in _UNITS:
        if unit.startswith(prefix):
            return seconds
    raise AssertionError(unit)  # every word in _UNIT_WORDS starts with a prefix


def parse_time(text: str, now: int) -> int:
    """Epoch seconds of a graphite ``from``/``until`` value; ValueError if it is not one."""
    compact = text.strip().lower().replace("_", "").replace(",", "").replace(" ", "")
    if not compact:
        raise ValueError("empty time")
    if compact.isdigit() and not _is_yyyymmdd(compact):
        if len(compact) > 12:
            raise ValueError(f"time {text!r} is out of range")
        return int(compact)
    if compact[0] in "+-":
        return now + parse_offset(compact)
    split = next((i for i, ch in enumerate(compact) if ch in "+-"), len(compact))
    reference, offset = compact[:split], compact[split:]
    base = _reference(reference, now, text)
    return base + (parse_offset(offset) if offset else 0)


def _is_yyyymmdd(digits: str) -> bool:
    return (len(digits) == 8 and int(digits[:4]) > 1900 and 0 < int(digits[4:6]) < 13
            and 0 < int(digits[6:]) < 32)


def _reference(word: str, now: int, text: str) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight = int(today.timestamp())
    named = {
        "now": now,
        "today": midnight,
        "midnight": midnight,
        "noon": midnight + 12 * 3600,
        "yesterday": midnight - 86400,
        "tomorrow": midnight + 86400,
    }
    if word in named:
        return named[word]
    try:
        if _is_yyyymmdd(word):
            return int(datetime.strptime(word, "%Y%m%d").replace(tzinfo=UTC).timestamp())
        clock = _CLOCK_DATE.fullmatch(word)
        if clock is not None:
            day = datetime.strptime(clock.group(3), "%Y%m%d").replace(tzinfo=UTC)
            hour, minute = int(clock.group(1)), int(clock.group(2))
            if hour > 23 or minute > 59:
                raise ValueError
            return int((day + timedelta(hours=hour, minutes=minute)).timestamp())
    except ValueError:
        pass
    raise ValueError(f"unknown time {text!r}: use now, -6h, epoch seconds, YYYYMMDD or "
                     "HH:MM_YYYYMMDD")
