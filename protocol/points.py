"""The HTTP point schema (DESIGN §4): decoded JSON in, validated points or field errors out.

Three request shapes share one point model:

    POST /api/metrics/counter  {"metric", "value"?=1, "timestamp"?}
    POST /api/metrics/value    {"metric", "value", "timestamp"?}
    POST /api/metrics/batch    {"points": [{"metric", "type", "value", "timestamp"?}, ...]}

Validation is all or nothing: a request yields its points, or ``InvalidPoints`` with
one ``FieldError`` per problem (``index`` is the point's position in a batch, None
otherwise). Unknown fields are errors, so a misspelt ``"timestmap"`` is not silently
ignored. A timestamp is epoch seconds (number or numeric string) or ISO 8601 and must
lie in ``[now - max_age, now + FUTURE_TOLERANCE]``, the window of the line protocol; it
is truncated to its second, the bucket it lands in. A batch point that would make the
sum of its (name, second) bucket within the batch overflow is an error of that point
(``protocol.buckets.merge``: every number that reaches the store is finite). Pure code:
no I/O, no clock.

Value points also make one quantile sketch per (name, minute) (``to_sketches``), the
``SketchRow`` the store merges into its minute and hour (docs/sketches.md), so that
values sent over HTTP have percentiles like those sent to the collector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from protocol.buckets import SUMMARY_INTERVAL, merge
from protocol.lines import FUTURE_TOLERANCE
from protocol.names import COUNTER, VALUE, Kind, name_error
from protocol.sketch import Sketch
from protocol.units import parse_timestamp

MAX_BATCH_POINTS: Final = 1000
MAX_REPORTED_ERRORS: Final = 100  # details beyond this are summarized, not listed
MAX_KNOWN_NAMES: Final = 100_000  # BatchReader's cache of validated names; cleared past it

_SINGLE_FIELDS: Final = frozenset({"metric", "value", "timestamp"})
_BATCH_FIELDS: Final = frozenset({"metric", "type", "value", "timestamp"})

# (name, kind, ts, cnt, sum, mn, mx): the shape of store.base.PointRow, which this
# package cannot import (protocol imports nothing of ours).
Row = tuple[str, Kind, int, float, float, float, float]
# (name, kind, ts_minute, data): the shape of store.base.SketchRow.
SketchRow = tuple[str, Kind, int, bytes]
# The kinds a point may have: gauges and sets come over the line protocol only.
POINT_KINDS: Final = (COUNTER, VALUE)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with a request: ``index`` of the point in a batch (None outside a
    batch or for the body as a whole), the ``field`` at fault, and why."""

    index: int | None
    field: str
    message: str


class InvalidPoints(ValueError):
    """The request's points are not acceptable; ``errors`` says why, field by field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        where = f"points[{first.index}]." if first.index is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}{first.field}: {first.message}{more}")


class Point(NamedTuple):
    """One accepted sample: ``ts`` is the epoch second it is aggregated into."""

    name: str
    kind: Kind
    value: float
    ts: int


class Window(NamedTuple):
    """The accepted time range: ``now`` (epoch seconds) and the raw retention."""

    now: float
    max_age: int

    def check(self, value: object) -> int:
        """A timestamp field -> its epoch second; raises ValueError with the reason."""
        seconds = parse_timestamp(value)
        if seconds < self.now - self.max_age:
            raise ValueError(f"is older than the raw retention ({self.max_age} s)")
        if seconds > self.now + FUTURE_TOLERANCE:
            raise ValueError(f"is more than {FUTURE_TOLERANCE} s in the future")
        return math.floor(seconds)


def counter_point(body: object, window: Window) -> Point:
    """``POST /api/metrics/counter``: ``value`` defaults to 1 (may be negative)."""
    return _single(body, COUNTER, window)


def value_point(body: object, window: Window) -> Point:
    """``POST /api/metrics/value``: ``value`` is required."""
    return _single(body, VALUE, window)


def batch_points(body: object, window: Window) -> list[Point]:
    """``POST /api/metrics/batch``: 1..MAX_BATCH_POINTS points, each with its ``type``."""
    if not isinstance(body, dict):
        raise InvalidPoints([FieldError(None, "body", "must be a JSON object")])
    errors = [
        FieldError(None, key, "unknown field") for key in body if key != "points"
    ]
    raw = body.get("points")
    if not isinstance(raw, list):
        errors.append(FieldError(None, "points", "is required: an array of points"))
        raise InvalidPoints(errors)
    if not 1 <= len(raw) <= MAX_BATCH_POINTS:
        errors.append(FieldError(
            None, "points", f"must hold 1 to {MAX_BATCH_POINTS} points, not {len(raw)}"
        ))
        raise InvalidPoints(errors)
    points: list[Point] = []
    buckets: dict[tuple[str, Kind, int], list[float]] = {}
    for index, item in enumerate(raw):
        point = _point(item, None, window, index, errors)
        if point is not None:
            points.append(point)
            if not _aggregate(buckets, point):
                errors.append(FieldError(index, "value", _OVERFLOW))
    if errors:
        raise InvalidPoints(_capped(errors))
    return points


def kind_conflicts(
    points: Iterable[Point], known: Mapping[str, Kind], *, batch: bool
) -> list[FieldError]:
    """Points whose kind differs from ``known[name]`` or from an earlier point of the
    same name in the request (a name is a counter or a value, never both)."""
    seen = dict(known)
    errors: list[FieldError] = []
    for index, point in enumerate(points):
        kind = seen.setdefault(point.name, point.kind)
        if kind != point.kind:
            errors.append(FieldError(
                index if batch else None,
                "type" if batch else "metric",
                f"metric {point.name!r} is a {kind}; this point is a {point.kind}",
            ))
    return _capped(errors)


def to_rows(points: Iterable[Point]) -> list[Row]:
    """Aggregate points into per-second buckets, one row per (name, kind, second).

    A counter increment n and a value sample x both add (count 1, sum n|x, min, max),
    the arithmetic of an unsampled line of the line protocol.
    """
    buckets: dict[tuple[str, Kind, int], list[float]] = {}
    for point in points:
        if not _aggregate(buckets, point):
            raise InvalidPoints([FieldError(None, "value", _OVERFLOW)])
    return [
        (name, kind, ts, b[0], b[1], b[2], b[3]) for (name, kind, ts), b in buckets.items()
    ]


def to_sketches(points: Iterable[Point], alpha_bp: int) -> list[SketchRow]:
    """One quantile sketch of relative accuracy ``alpha_bp`` basis points per (value
    metric, minute) of ``points``; counters have none."""
    sketches: dict[tuple[str, int], Sketch] = {}
    for name, kind, value, ts in points:
        if kind == VALUE:
            key = (name, ts - ts % SUMMARY_INTERVAL)
            sketch = sketches.get(key)
            if sketch is None:
                sketch = sketches[key] = Sketch(alpha_bp)
            sketch.add(value)
    return [(name, VALUE, minute, sketch.to_bytes())
            for (name, minute), sketch in sketches.items()]


def _sketch_rows(values: dict[tuple[str, int], list[float]], alpha_bp: int) -> list[SketchRow]:
    out: list[SketchRow] = []
    for (name, minute), samples in values.items():
        sketch = Sketch(alpha_bp)
        add = sketch.add
        for value in samples:
            add(value)
        out.append((name, VALUE, minute, sketch.to_bytes()))
    return out


class BatchReader:
    """``POST /api/metrics/batch`` bodies straight to rows: ``to_rows(batch_points(...))``
    in one pass.

    Validating point by point into ``Point`` objects, then aggregating them, cost ~3 µs
    a point (a profile of ``serve`` under batch load put a third of its time there).
    This loop checks the common shape of a point inline, builds no per-point object and
    remembers the names it has validated (names repeat from batch to batch). At the first
    thing it does not take as is (an error, an ISO or string timestamp, anything
    unusual) it hands the whole body to ``batch_points``, which accepts it or lists
    every problem: the answer is always exactly that of ``to_rows(batch_points(...))``.
    """

    def __init__(self) -> None:
        self._names: set[str] = set()

    def rows(self, body: object, window: Window) -> list[Row]:
        return self.read(body, window, None)[0]

    def read(self, body: object, window: Window,
             alpha_bp: int | None) -> tuple[list[Row], list[SketchRow]]:
        """The rows and (``alpha_bp`` not None) the value sketches of a batch body:
        ``to_rows`` and ``to_sketches`` of ``batch_points``, in one pass."""
        raw = body.get("points") if type(body) is dict and len(body) == 1 else None
        if type(raw) is not list or not 1 <= len(raw) <= MAX_BATCH_POINTS:
            return self._reference(body, window, alpha_bp)
        names = self._names
        default_ts = math.floor(window.now)
        oldest = window.now - window.max_age
        newest = window.now + FUTURE_TOLERANCE
        isfinite = math.isfinite
        buckets: dict[tuple[str, Kind, int], list[float]] = {}
        # (name, minute) -> the samples of a value metric, for its sketch
        values: dict[tuple[str, int], list[float]] | None = None if alpha_bp is None else {}
        kind: Kind
        try:
            for item in raw:
                if type(item) is not dict:
                    break
                fields = len(item)
                ts = item.get("timestamp")
                # "metric", "type" and "value" are required (KeyError below), so the
                # count of fields rules out unknown ones.
                if ts is None:
                    if fields != 3 and not (fields == 4 and "timestamp" in item):
                        break
                    ts = default_ts
                elif fields != 4 or not oldest <= ts <= newest:  # TypeError: not a number
                    break
                elif type(ts) is float:
                    ts = int(ts)  # floor: the range check made it positive
                elif type(ts) is not int:
                    break
                name = item["metric"]
                if name not in names:  # TypeError: unhashable, so not a name
                    if name_error(name) is not None:
                        break
                    if len(names) >= MAX_KNOWN_NAMES:
                        names.clear()
                    names.add(name)
                raw_kind = item["type"]
                if raw_kind == COUNTER:
                    kind = COUNTER
                elif raw_kind == VALUE:
                    kind = VALUE
                else:
                    break
                value = item["value"]
                if type(value) is int:
                    value = float(value)  # OverflowError beyond the float range
                elif type(value) is not float or not isfinite(value):
                    break
                key = (name, kind, ts)
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = [1.0, value, value, value]
                else:  # buckets.merge of one sample, inline as in Aggregator.feed: a
                    # call per point would cost ~15% of this loop
                    total = bucket[1] + value
                    if total - total != 0.0:  # not finite: batch_points reports it
                        break
                    bucket[0] += 1.0
                    bucket[1] = total
                    if value < bucket[2]:
                        bucket[2] = value
                    elif value > bucket[3]:
                        bucket[3] = value
                if values is not None and kind == VALUE:
                    minute = ts - ts % SUMMARY_INTERVAL
                    samples = values.get((name, minute))
                    if samples is None:
                        values[(name, minute)] = [value]
                    else:
                        samples.append(value)
            else:
                rows = [(name, kind, ts, b[0], b[1], b[2], b[3])
                        for (name, kind, ts), b in buckets.items()]
                if alpha_bp is None or values is None:
                    return rows, []
                return rows, _sketch_rows(values, alpha_bp)
        except (KeyError, TypeError, OverflowError):
            pass
        return self._reference(body, window, alpha_bp)

    @staticmethod
    def _reference(body: object, window: Window,
                   alpha_bp: int | None) -> tuple[list[Row], list[SketchRow]]:
        points = batch_points(body, window)
        return to_rows(points), [] if alpha_bp is None else to_sketches(points, alpha_bp)


# -- internals ---------------------------------------------------------------------

_OVERFLOW: Final = (
    "would make the sum of its bucket (this metric's second) overflow: not finite"
)


def _aggregate(buckets: dict[tuple[str, Kind, int], list[float]], point: Point) -> bool:
    """Add a point to its (name, kind, second) bucket; False if that would overflow
    (``buckets.merge``), the bucket then left as it was."""
    name, kind, value, ts = point
    bucket = buckets.get((name, kind, ts))
    if bucket is None:
        buckets[(name, kind, ts)] = [1.0, value, value, value]
        return True
    return merge(bucket, 1.0, value, value, value)



def _single(body: object, kind: Kind, window: Window) -> Point:
    errors: list[FieldError] = []
    point = _point(body, kind, window, None, errors)
    if point is None:
        raise InvalidPoints(errors)
    return point


def _point(
    item: object, kind: Kind | None, window: Window, index: int | None,
    errors: list[FieldError],
) -> Point | None:
    """Validate one point object; append its errors and return None if it has any."""
    if not isinstance(item, dict):
        errors.append(FieldError(index, "body" if index is None else "point",
                                 "must be a JSON object"))
        return None
    before = len(errors)
    allowed = _SINGLE_FIELDS if kind is not None else _BATCH_FIELDS
    errors.extend(FieldError(index, key, "unknown field") for key in item if key not in allowed)

    name = item.get("metric")
    problem = "is required" if name is None else name_error(name)
    if problem is not None:
        errors.append(FieldError(index, "metric", problem))

    if kind is None:
        raw_kind = item.get("type")
        if raw_kind not in POINT_KINDS:
            errors.append(FieldError(index, "type", 'must be "counter" or "value"'))
        else:
            kind = COUNTER if raw_kind == COUNTER else VALUE

    value = _number(item, kind, index, errors)

    ts = math.floor(window.now)
    raw_ts = item.get("timestamp")
    if raw_ts is not None:
        try:
            ts = window.check(raw_ts)
        except ValueError as exc:
            errors.append(FieldError(index, "timestamp", str(exc)))

    if len(errors) > before or kind is None or value is None:
        return None
    assert isinstance(name, str)
    return Point(name, kind, value, ts)


def _number(
    item: dict[object, object], kind: Kind | None, index: int | None,
    errors: list[FieldError],
) -> float | None:
    if "value" not in item and kind == COUNTER:
        return 1.0  # a bare counter POST counts one event
    raw = item.get("value")
    if raw is None:
        errors.append(FieldError(index, "value", "is required: a finite number"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        errors.append(FieldError(index, "value", "must be a number"))
        return None
    try:
        value = float(raw)
    except OverflowError:  # an int beyond the float range
        value = math.inf
    if not math.isfinite(value):
        errors.append(FieldError(index, "value", "must be finite"))
        return None
    return value


def _capped(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= MAX_REPORTED_ERRORS:
        return errors
    rest = len(errors) - MAX_REPORTED_ERRORS + 1
    return [*errors[: MAX_REPORTED_ERRORS - 1],
            FieldError(None, "points", f"{rest} more errors not listed")]
