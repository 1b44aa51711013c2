"""Graphite's plaintext (carbon) protocol: bytes in, samples and per-line errors out.

    line = name whitespace value whitespace timestamp

as carbon-cache reads it (``line.strip().split()``: any run of spaces and tabs between
the three fields). ``timestamp`` is epoch seconds, an integer or a decimal (truncated to
its second); ``-1`` (carbon's "now") and ``N`` (rrdtool's, which collectd's ``exec``
scripts use) stand for the arrival time. ``name`` may carry a key prefix (``gf_...``)
exactly as a StatsD line does, and Graphite 1.1 tags (``name;tag=value``), which are
accepted and ignored like DogStatsD tags.

A line is a *value* sample unless its name matches the counter pattern (a regular
expression searched in the name, as carbon's storage-schemas patterns are): then it is a
*counter* increment of ``value``. What carbon drops silently (NaN, a line that is not
three fields) is dropped here too, and counted by reason like a bad StatsD line. Pure
code: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import math
import re
from typing import Final, Literal

from protocol.lines import (
    DEFAULT_MAX_LINE_LENGTH,
    ERROR_SAMPLE_LENGTH,
    FUTURE_TOLERANCE,
    NUMBER,
    LineError,
    Parsed,
    Reason,
    Sample,
)
from protocol.names import COUNTER, VALUE, Kind, is_valid_name_bytes
from protocol.tokens import TOKEN_LENGTH, contains_token

_TOKEN = re.compile(rb"gf_[0-9A-Za-z]{32}")
_TIMESTAMP = re.compile(rb"[0-9]{1,12}(?:\.[0-9]*)?")
_NOW: Final = (b"-1", b"N")
_HEAD_CACHE_LIMIT: Final = 200_000
_TAIL_CACHE_LIMIT: Final = 10_000

# head (the name field as sent) -> (token, name, kind, tagged)
_Head = tuple[str | None, str, Kind, bool]


class CarbonParser:
    """Parses carbon datagrams and runs of complete TCP lines. Holds limits, the
    counter pattern and a cache of the names it has validated."""

    def __init__(
        self,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_age: int = 7 * 86400,
        counter_pattern: str | None = None,
    ) -> None:
        """``counter_pattern``: names it is found in are counters (``re.search``);
        raises ``re.error`` if it does not compile."""
        self.max_line_length = max_line_length
        self.max_age = max_age
        self.counter_pattern = None if counter_pattern is None else re.compile(counter_pattern)
        self._heads: dict[bytes, _Head] = {}
        # b"value timestamp" -> (value, timestamp), valid for the second ``_tails_now``
        self._tails: dict[bytes, tuple[float, int | None]] = {}
        self._tails_now = 0

    def parse(self, data: bytes, now: int) -> Parsed:
        samples: list[Sample] = []
        errors: list[LineError] = []
        tagged = 0
        heads = self._heads
        max_len = self.max_line_length
        oldest = now - self.max_age
        newest = now + FUTURE_TOLERANCE
        tails = self._tails
        if self._tails_now != now:  # the window moved: re-check the cached timestamps
            tails.clear()
            self._tails_now = now
        for line in data.split(b"\n"):
            # The common shape first: "name value timestamp", single spaces, a name and
            # a "value timestamp" seen before (both repeat: names by the thousand,
            # "1 1790000000" for a whole second).
            head, _space, rest = line.partition(b" ")
            entry = heads.get(head)
            if entry is not None:
                tail = tails.get(rest)
                if tail is not None and len(line) <= max_len:
                    if entry[3]:
                        tagged += 1
                    samples.append(Sample(entry[1], entry[2], tail[0], 1.0, tail[1], entry[0]))
                    continue
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > max_len:
                errors.append(_error(Reason.TOO_LONG, line, f"longer than {max_len} bytes"))
                continue
            fields = line.split()  # runs of ASCII whitespace: spaces, tabs
            if len(fields) != 3:
                if fields:
                    errors.append(_error(Reason.PARSE_ERROR, line,
                                         "expected: name value timestamp"))
                continue
            head, raw_value, raw_ts = fields
            entry = heads.get(head)
            if entry is None:
                split = self._split_head(head)
                if isinstance(split, Reason):  # BAD_KEY
                    errors.append(_error(Reason.BAD_KEY, line, "an API key in the name"))
                    continue
                if split is None:
                    errors.append(_error(Reason.BAD_NAME, line, "invalid metric name"))
                    continue
                entry = split
            token, name, kind, has_tags = entry

            if raw_value.isdigit():
                value = float(raw_value)
            elif NUMBER.fullmatch(raw_value) is None:
                detail = ("NaN is not stored" if raw_value.lower() in (b"nan", b"-nan")
                          else "value is not a number")
                errors.append(_error(Reason.BAD_VALUE, line, detail))
                continue
            else:
                value = float(raw_value)
                if not math.isfinite(value):
                    errors.append(_error(Reason.BAD_VALUE, line, "value is not finite"))
                    continue

            timestamp: int | None = None
            if raw_ts not in _NOW:
                if _TIMESTAMP.fullmatch(raw_ts) is None:
                    errors.append(_error(Reason.BAD_TIMESTAMP, line,
                                         "timestamp is not epoch seconds, -1 or N"))
                    continue
                timestamp = int(raw_ts.partition(b".")[0])
                if not oldest <= timestamp <= newest:
                    errors.append(_error(Reason.BAD_TIMESTAMP, line,
                                         "timestamp outside retention"))
                    continue
            if has_tags:
                tagged += 1
            samples.append(Sample(name, kind, value, 1.0, timestamp, token))
            if rest == raw_value + b" " + raw_ts:  # the common shape: remember the tail
                if len(tails) >= _TAIL_CACHE_LIMIT:
                    tails.clear()
                tails[rest] = (value, timestamp)
        return Parsed(samples, errors, tagged)

    def _split_head(self, head: bytes) -> _Head | Literal[Reason.BAD_KEY] | None:
        """``[token "."] name [";" tags]`` validated once, then cached."""
        name, semicolon, _tags = head.partition(b";")
        token: str | None = None
        if (
            name[:3] == b"gf_"
            and len(name) > TOKEN_LENGTH + 1
            and name[TOKEN_LENGTH] == 46  # "."
            and _TOKEN.fullmatch(name, 0, TOKEN_LENGTH) is not None
        ):
            token = name[:TOKEN_LENGTH].decode("ascii")
            name = name[TOKEN_LENGTH + 1 :]
        if not is_valid_name_bytes(name):
            return None
        if contains_token(name):  # a key must never become part of a name
            return Reason.BAD_KEY
        text = name.decode("ascii")
        pattern = self.counter_pattern
        kind: Kind = COUNTER if pattern is not None and pattern.search(text) else VALUE
        entry = (token, text, kind, bool(semicolon))
        if len(self._heads) >= _HEAD_CACHE_LIMIT:
            self._heads.clear()  # bounded memory under a flood of distinct names
        self._heads[head] = entry
        return entry


def _error(reason: Reason, line: bytes, detail: str) -> LineError:
    return LineError(reason, line[:ERROR_SAMPLE_LENGTH], detail)
