"""StatHat's ingest API (the EZ API and the classic API): decoded fields in, points out.

    EZ form      ezkey, stat, count | value, t?          GET or POST /ez
    EZ JSON      {"ezkey", "data": [{"stat", "count" | "value", "t"?}, ...]}   POST /ez
    classic      key, ukey, count, t?   /c      key, ukey, value, t?   /v

A ``count`` is a counter increment, a ``value`` a value sample (StatHat sums counts and
averages values, as we do). ``t`` is epoch seconds, held to the window of every other
ingest path. The key fields (``ezkey``, ``ukey``) are checked by the caller; here they
are only required to be there.

Stat names. StatHat allows any character but ``~`` (at most 255); ours are
``[A-Za-z0-9_.-]``. One reversible rule maps a StatHat name to ours, the way form
encoding maps text to a URL (``+`` for a space, ``%XX`` for the rest), with ``_`` for the
space and ``-`` for the percent sign:

- letters, digits and ``.`` are kept;
- a space becomes ``_``;
- any other character, ``_`` and ``-`` included, becomes ``-`` and two upper-case hex
  digits per UTF-8 byte (``_`` -> ``-5F``, ``-`` -> ``-2D``, ``:`` -> ``-3A``).

So ``messages sent total`` is ``messages_sent_total`` and ``ws0: load`` is
``ws0-3A_load``; ``metric_to_stat`` undoes it. A name that is still not one of ours
(a leading, trailing or doubled ``.``, or longer than 255 once mapped) is refused with
the reason. ``prefix~a,b`` posts the same number to ``prefix a`` and ``prefix b``, as
StatHat documents it (https://www.stathat.com/docs/api: "messages sent~total,female,
europe" -> "messages sent total", "messages sent female", "messages sent europe").

Validation is all or nothing, with ``protocol.points``' errors: ``InvalidPoints`` with
one ``FieldError`` per problem (``index``: the position in ``data``, else None). Pure
code: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from protocol.names import COUNTER, VALUE, Kind, name_error
from protocol.points import MAX_BATCH_POINTS, FieldError, InvalidPoints, Point, Window

MAX_STAT_LENGTH: Final = 255  # StatHat's limit on a stat name as sent
MAX_POINTS: Final = 10 * MAX_BATCH_POINTS  # points of one request once fanned out
FAN_OUT: Final = "~"

EZ_FIELDS: Final = frozenset({"ezkey", "stat", "count", "value", "t"})
CLASSIC_FIELDS: Final = {
    COUNTER: frozenset({"key", "ukey", "count", "t"}),
    VALUE: frozenset({"key", "ukey", "value", "t"}),
}
_JSON_FIELDS: Final = frozenset({"ezkey", "data"})
_JSON_STAT_FIELDS: Final = frozenset({"stat", "count", "value", "t"})

_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_ESCAPE = re.compile(r"(?:-[0-9A-F]{2})+|_")


def stat_to_metric(stat: str) -> str:
    """A StatHat stat name (one, after fan-out) -> our metric name; ValueError: why not."""
    if not stat:
        raise ValueError("must not be empty")
    out: list[str] = []
    for char in stat:
        if char in _KEPT:
            out.append(char)
        elif char == " ":
            out.append("_")
        else:
            out.extend(f"-{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    name = "".join(out)
    problem = name_error(name)
    if problem is None:
        return name
    if len(name) > MAX_STAT_LENGTH:
        raise ValueError(f"is {len(name)} characters once mapped to a metric name "
                         f"(spaces to _, other characters to -XX); at most {MAX_STAT_LENGTH}")
    raise ValueError("must not start or end with '.' or hold '..' (a metric name's "
                     "dots separate its path)")


def metric_to_stat(name: str) -> str:
    """The inverse of ``stat_to_metric``: our metric name -> the StatHat stat name."""

    def decode(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "_":
            return " "
        return bytes.fromhex(text.replace("-", "")).decode("utf-8", "surrogatepass")

    return _ESCAPE.sub(decode, name)


def fan_out(stat: str) -> list[str]:
    """``prefix~a,b`` -> ``["prefix a", "prefix b"]``; a name without ``~`` -> itself.
    ValueError: why the name is not acceptable."""
    if len(stat) > MAX_STAT_LENGTH:
        raise ValueError(f"must be at most {MAX_STAT_LENGTH} characters, not {len(stat)}")
    prefix, tilde, names = stat.partition(FAN_OUT)
    if not tilde:
        return [stat]
    if FAN_OUT in names:
        raise ValueError("may hold at most one '~' (prefix~name1,name2,...)")
    if not prefix:
        raise ValueError("needs a prefix before '~' (prefix~name1,name2,...)")
    parts = names.split(",")
    if not all(parts):
        raise ValueError("needs a name between each ',' after '~' (prefix~name1,name2,...)")
    return [f"{prefix} {part}" for part in parts]


def ez_form_points(fields: Mapping[str, str], window: Window) -> list[Point]:
    """``GET``/``POST /ez`` form fields -> the points of its (fanned-out) stat."""
    errors = _unknown(fields, EZ_FIELDS, None)
    points = _points(fields, None, window, None, errors, stat_field="stat")
    if errors:
        raise InvalidPoints(errors)
    return points


def classic_points(fields: Mapping[str, str], kind: Kind, window: Window) -> list[Point]:
    """``/c`` (kind counter: ``count``) or ``/v`` (kind value: ``value``) form fields."""
    errors = _unknown(fields, CLASSIC_FIELDS[kind], None)
    points = _points(fields, kind, window, None, errors, stat_field="key")
    if errors:
        raise InvalidPoints(errors)
    return points


def ez_json_token(body: object) -> object:
    """The ``ezkey`` of a JSON body (None if absent), for the key check that comes
    before the rest of the body is looked at."""
    return body.get("ezkey") if isinstance(body, dict) else None


def ez_json_points(body: object, window: Window) -> list[Point]:
    """``POST /ez`` with ``Content-Type: application/json``: 1..1000 stat objects."""
    if not isinstance(body, dict):
        raise InvalidPoints([FieldError(None, "body", "must be a JSON object")])
    errors = _unknown(body, _JSON_FIELDS, None)
    data = body.get("data")
    if not isinstance(data, list):
        errors.append(FieldError(None, "data", "is required: an array of stat objects"))
        raise InvalidPoints(errors)
    if not 1 <= len(data) <= MAX_BATCH_POINTS:
        errors.append(FieldError(None, "data", f"must hold 1 to {MAX_BATCH_POINTS} stat "
                                               f"objects, not {len(data)}"))
        raise InvalidPoints(errors)
    points: list[Point] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            errors.append(FieldError(index, "data", "must be a JSON object"))
            continue
        errors.extend(_unknown(item, _JSON_STAT_FIELDS, index))
        points.extend(_points(item, None, window, index, errors, stat_field="stat"))
    if not errors and len(points) > MAX_POINTS:
        errors.append(FieldError(None, "data", f"fans out to {len(points)} points; at "
                                               f"most {MAX_POINTS} in one request"))
    if errors:
        raise InvalidPoints(errors[:100])
    return points


# -- internals ---------------------------------------------------------------------


def _unknown(fields: Mapping[str, object], known: frozenset[str],
             index: int | None) -> list[FieldError]:
    return [FieldError(index, str(key), "unknown field") for key in fields if key not in known]


def _points(
    fields: Mapping[str, object], kind: Kind | None, window: Window, index: int | None,
    errors: list[FieldError], *, stat_field: str,
) -> list[Point]:
    """The points of one stat (``kind`` None: from whichever of count/value is given);
    problems appended to ``errors`` (and then no points)."""
    before = len(errors)
    names: list[str] = []
    stat = fields.get(stat_field)
    if stat is None or stat == "":
        errors.append(FieldError(index, stat_field, "is required: the stat name"))
    elif not isinstance(stat, str):
        errors.append(FieldError(index, stat_field, "must be a string"))
    else:
        try:
            names = [stat_to_metric(part) for part in fan_out(stat)]
        except ValueError as exc:
            errors.append(FieldError(index, stat_field, str(exc)))

    if kind is None:
        has_count, has_value = "count" in fields, "value" in fields
        if has_count and has_value:
            errors.append(FieldError(index, "count", "give count (a counter) or value "
                                                     "(a value), not both"))
        elif not has_count and not has_value:
            errors.append(FieldError(index, "count", "count or value is required"))
        kind = COUNTER if has_count else VALUE
    number_field = "count" if kind == COUNTER else "value"
    number = _number(fields.get(number_field), number_field, index, errors)

    ts = math.floor(window.now)
    raw_ts = fields.get("t")
    if raw_ts is not None:
        try:
            ts = window.check(raw_ts)
        except ValueError as exc:
            errors.append(FieldError(index, "t", str(exc)))
    if len(errors) > before or number is None:
        return []
    return [Point(name, kind, number, ts) for name in names]


def _number(raw: object, field: str, index: int | None,
            errors: list[FieldError]) -> float | None:
    if raw is None:
        errors.append(FieldError(index, field, "is required: a finite number"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        errors.append(FieldError(index, field, "must be a number"))
        return None
    if isinstance(raw, str):
        if _NUMBER.fullmatch(raw.strip()) is None:
            errors.append(FieldError(index, field, f"must be a finite number, not {raw[:40]!r}"))
            return None
        raw = raw.strip()
    try:
        value = float(raw)
    except OverflowError:  # an int beyond the float range
        value = math.inf
    if not math.isfinite(value):
        errors.append(FieldError(index, field, "must be finite"))
        return None
    return value
