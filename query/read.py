"""Query handlers: ``GET /api/metrics`` (list), ``GET /api/metrics/{name}`` (series) and
``GET /api/metrics/{name}/histogram`` (counts under bounds, for SLOs).

Parameters are validated before the store is asked anything; unknown parameters are
422 rather than ignored, so a typo (``agg=max``) cannot silently give the default.

Percentiles (values), ``unique`` (sets) and ``last`` (gauges) are read from the
per-minute summaries (``Store.read_sketches``), merged per bucket by the store. A
bucket whose points have no summary, or a summary holding fewer samples than its
points (data written before sketches existed), is a 422 naming it: never a number made
up from part of the samples.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from typing import Final, cast

from aiohttp import web

from protocol.buckets import (
    AGGREGATIONS,
    FILLS,
    MAX_QUERY_BUCKETS,
    UNIQUE,
    Aggregation,
    BucketRow,
    Fill,
    aggregation_error,
    align,
    bucket_count,
    bucket_range,
    covers,
    default_fill,
    is_summary_aggregation,
    series,
    summary_interval_error,
    summary_value,
)
from protocol.names import COUNTER, MAX_NAME_LENGTH, SET, VALUE, Kind, name_error
from protocol.sketch import Sketch, SketchError
from protocol.summary import merge as merge_summaries
from protocol.units import format_timestamp, parse_interval, parse_timestamp
from query.errors import ApiError, invalid, json_response
from query.state import STORE, WALL_CLOCK
from store.base import MetricInfo, Store, StoreError

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
DEFAULT_RANGE: Final = 3600  # seconds: the last hour
DEFAULT_INTERVAL: Final = "minute"
LAST_FORMATTABLE: Final = 253402300799  # 9999-12-31T23:59:59Z

_PREFIX = re.compile(r"[A-Za-z0-9_.-]*", re.ASCII)
_LIST_PARAMS: Final = frozenset({"prefix", "limit", "cursor"})
_SERIES_PARAMS: Final = frozenset({"from", "to", "interval", "aggregation", "fill"})
_HISTOGRAM_PARAMS: Final = frozenset({"from", "to", "buckets"})
MAX_HISTOGRAM_BOUNDS: Final = 50
# Past this many summaries a read decodes them in a worker thread: ~0.5 ms each for a
# busy minute in Python, so a week of minutes would otherwise hold the loop for seconds.
THREAD_AFTER: Final = 64


def default_aggregation(kind: Kind) -> str:
    """Counters add up (``sum`` per bucket); values and gauges are averaged (``avg``,
    which every bucket answers, at any interval); a set counts its distinct members
    (``unique``)."""
    if kind == COUNTER:
        return "sum"
    return UNIQUE if kind == SET else "avg"


def known_aggregation(aggregation: str) -> bool:
    return aggregation in AGGREGATIONS or is_summary_aggregation(aggregation)


async def list_metrics(request: web.Request) -> web.Response:
    query = request.query
    _only(query, _LIST_PARAMS)
    prefix = query.get("prefix", "")
    if len(prefix) > MAX_NAME_LENGTH or _PREFIX.fullmatch(prefix) is None:
        raise invalid("prefix", "may contain only A-Z a-z 0-9 _ - . (at most 255)")
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = decode_cursor(query["cursor"]) if "cursor" in query else None
    try:
        rows = await request.app[STORE].list_metrics(prefix, limit + 1, after)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    page = rows[:limit]
    return json_response({
        "metrics": [_metric(info) for info in page],
        "next_cursor": encode_cursor(page[-1].name) if len(rows) > limit else None,
    })


def _name_and_range(request: web.Request, params: frozenset[str]) -> tuple[str, int, int]:
    """The metric name and the [from, to) of a read, checked (``params``: the query
    parameters the route takes)."""
    name = request.match_info["name"]
    problem = name_error(name)
    if problem is not None:
        raise invalid("name", problem)
    query = request.query
    _only(query, params)
    now = request.app[WALL_CLOCK]()
    end = min(math.ceil(_time(query, "to")) if "to" in query else math.floor(now) + 1,
              LAST_FORMATTABLE)
    start = math.floor(_time(query, "from")) if "from" in query else end - DEFAULT_RANGE
    if start >= end:
        raise invalid("from", "must be before 'to'")
    return name, start, end


async def get_series(request: web.Request) -> web.Response:
    name, start, end = _name_and_range(request, _SERIES_PARAMS)
    query = request.query
    interval_text = query.get("interval", DEFAULT_INTERVAL)
    try:
        interval = parse_interval(interval_text)
    except ValueError as exc:
        raise invalid("interval", str(exc)) from None
    buckets = bucket_count(start, end, interval)
    if buckets > MAX_QUERY_BUCKETS:
        raise invalid("interval", f"the range holds {buckets} buckets of {interval} s; at "
                                  f"most {MAX_QUERY_BUCKETS}: use a larger interval or a "
                                  "shorter range")
    aggregation = query.get("aggregation")
    if aggregation is not None and not known_aggregation(aggregation):
        raise invalid("aggregation", f"unknown aggregation {aggregation!r}: one of "
                                     f"{', '.join(AGGREGATIONS)}, p50, p90, p99, p999 or "
                                     "any pNN / pNN.N (values), unique (sets), last (gauges)")
    if aggregation is not None and is_summary_aggregation(aggregation):
        problem = summary_interval_error(aggregation, interval)
        if problem is not None:
            raise invalid("interval", problem)
    fill = query.get("fill")
    if fill is not None and fill not in FILLS:
        raise invalid("fill", f"must be one of {', '.join(FILLS)}")

    store = request.app[STORE]
    try:
        info = await store.get_metric(name)
        if info is None:
            raise ApiError(404, f"no metric named {name!r}")
        agg = aggregation or default_aggregation(info.kind)
        problem = aggregation_error(info.kind, agg)
        if problem is not None:
            raise invalid("aggregation", problem)
        if is_summary_aggregation(agg):
            problem = summary_interval_error(agg, interval)  # a default (unique) too
            if problem is not None:
                raise invalid("interval", problem)
            rows, sketches = await asyncio.gather(
                store.read_buckets(info.id, start, end, interval),
                store.read_sketches(info.id, info.kind, start, end, interval))
        else:
            rows = await store.read_buckets(info.id, start, end, interval)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    filled = cast(Fill, fill) if fill else default_fill(agg)
    if is_summary_aggregation(agg):
        points = await summary_series(info.name, info.kind, agg, rows, sketches, start, end,
                                      interval, filled)
    else:
        if info.kind == SET:  # a set's rate is members received per second: Σcnt / I
            rows = [row._replace(sum=row.cnt) for row in rows]
        points = series(rows, start, end, interval, cast(Aggregation, agg), filled)
        beyond = next((ts for ts, v in points if v is not None and not math.isfinite(v)), None)
        if beyond is not None:  # a coarse bucket's stored sums add up past 1.8e308
            raise invalid("interval", f"the sum of {info.name!r} in the {interval} s bucket "
                          f"at {format_timestamp(beyond)} is beyond the double range "
                          "(+-1.8e308): ask a shorter interval, or min, max or count")
    return json_response({
        "metric": info.name,
        "kind": info.kind,
        "interval": interval,
        "aggregation": agg,
        "fill": filled,
        "from": format_timestamp(align(start, interval)),
        "to": format_timestamp(end),
        "points": [{"timestamp": format_timestamp(ts), "value": value} for ts, value in points],
    })


async def summary_series(
    name: str, kind: Kind, aggregation: str, rows: Sequence[BucketRow],
    sketches: Sequence[tuple[int, bytes]], start: int, end: int, interval: int, fill: Fill,
) -> list[tuple[int, float | None]]:
    """The points of a summary aggregation: one per bucket of ``[align(start), end)``
    with a summary, empty ones filled as ``fill`` says. 422 for a bucket whose points
    the summaries do not (all) hold."""

    def values() -> dict[int, float | None]:
        out: dict[int, float | None] = {}
        for ts, data in sketches:
            try:
                out[ts], weight = summary_value(kind, aggregation, data)
            except ValueError as exc:  # never stored so (the store validates): say so
                raise ApiError(500, f"the stored summary of {name!r} at "
                                    f"{format_timestamp(ts)} cannot be read: {exc}") from exc
            weights[ts] = weight
        return out

    weights: dict[int, float | None] = {}
    by_ts = (await asyncio.to_thread(values) if len(sketches) > THREAD_AFTER
             else values())
    for row in rows:
        if row.cnt and (row.ts not in by_ts or not covers(weights[row.ts], row.cnt)):
            raise no_summary(name, aggregation, row.ts, interval)
    out: list[tuple[int, float | None]] = []
    for ts in bucket_range(start, end, interval):
        value = by_ts.get(ts)
        if value is not None:
            out.append((ts, value))
        elif fill == "zero":
            out.append((ts, 0.0))
        elif fill == "null":
            out.append((ts, None))
    return out


def no_summary(name: str, aggregation: str, ts: int, interval: int | None) -> ApiError:
    where = (f"in the {interval} s bucket at {format_timestamp(ts)}" if interval
             else f"from {format_timestamp(ts)}")
    return invalid("aggregation" if interval else "from", (
        f"{name!r} has points {where} that "
        f"no sketch holds (written before sketches existed, or by a writer with "
        f"--no-sketches), so {aggregation} cannot be answered there: ask for a later "
        "range, or avg/min/max"))


async def get_histogram(request: web.Request) -> web.Response:
    """Counts of a value metric's samples at most each bound over the whole range, read
    from the merged sketch of its minutes (within alpha: a sample within alpha of a
    bound may count on either side)."""
    name, start, end = _name_and_range(request, _HISTOGRAM_PARAMS)
    query = request.query
    if "buckets" not in query:
        raise invalid("buckets", "is required: ascending bounds, e.g. 10,50,100,500")
    bounds = parse_bounds(query["buckets"])
    # Whole minutes, the finest level sketches are kept at: from rounded down, to up.
    first = align(start, 60)
    end = min(-(-end // 60) * 60, LAST_FORMATTABLE)
    store = request.app[STORE]
    try:
        info = await store.get_metric(name)
        if info is None:
            raise ApiError(404, f"no metric named {name!r}")
        if info.kind != VALUE:
            raise invalid("name", f"{name!r} is a {info.kind}; histograms are of values "
                                  "(their sketches)")
        totals, sketches = await asyncio.gather(
            store.read_windows([info.id], first, end),
            range_sketches(store, info.id, first, end))
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc

    def counts() -> tuple[float, list[float]]:
        try:
            sketch = Sketch.from_bytes(merge_summaries(VALUE, sketches))
        except SketchError as exc:
            raise ApiError(500, f"the stored sketches of {name!r} cannot be read: "
                                f"{exc}") from exc
        return sketch.count, sketch.count_le(bounds)

    total, below = (await asyncio.to_thread(counts) if sketches
                    else (0.0, [0.0] * len(bounds)))
    window = totals.get(info.id)
    if window is not None and window.cnt and not covers(total, window.cnt):
        raise no_summary(name, "a histogram", first, None)
    return json_response({
        "metric": info.name,
        "from": format_timestamp(first),
        "to": format_timestamp(end),
        "count": _number(total),
        "buckets": [{"le": _number(bound), "count": _number(n)}
                    for bound, n in zip(bounds, below, strict=True)],
    })


async def range_sketches(store: Store, metric_id: int, start: int, end: int) -> list[bytes]:
    """The sketches of a value metric over ``[start, end)`` (start a whole minute), in
    as few pieces as the levels allow: the minutes before the first whole hour, the
    hours (sketch_1h), the minutes after the last one."""
    first_hour = -(-start // 3600) * 3600
    last_hour = end - end % 3600
    if last_hour - first_hour < 3600:
        parts = [(start, end, 60)]
    else:
        parts = [(start, first_hour, 60), (first_hour, last_hour, 3600), (last_hour, end, 60)]
    read = await asyncio.gather(*(store.read_sketches(metric_id, VALUE, low, high, step)
                                  for low, high, step in parts if low < high))
    return [data for piece in read for _ts, data in piece]


def _number(x: float) -> float | int:
    """An integral float as an int in JSON (``"le": 10``, counts of unsampled lines)."""
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


_BOUND = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?", re.ASCII)


def parse_bounds(text: str) -> list[float]:
    """``10,50,100,500``: 1..MAX_HISTOGRAM_BOUNDS finite numbers, strictly ascending."""
    parts = text.split(",")
    if not 1 <= len(parts) <= MAX_HISTOGRAM_BOUNDS:
        raise invalid("buckets", f"must hold 1 to {MAX_HISTOGRAM_BOUNDS} bounds, "
                                 f"not {len(parts)}")
    bounds: list[float] = []
    for part in parts:
        bound = float(part) if len(part) <= 40 and _BOUND.fullmatch(part) else math.nan
        if not math.isfinite(bound):
            raise invalid("buckets", f"{part[:40]!r} is not a finite number")
        if bounds and bound <= bounds[-1]:
            raise invalid("buckets", "bounds must be strictly ascending")
        bounds.append(bound)
    return bounds


def encode_cursor(name: str) -> str:
    """An opaque next-page token: today the last name of the page, base64url."""
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        name = ""
    if not cursor or name_error(name) is not None:
        raise invalid("cursor", "is not a cursor this service handed out")
    return name


def _metric(info: MetricInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "kind": info.kind,
        "created_at": format_timestamp(info.created_at),
        "first_seen": None if info.first_ts is None else format_timestamp(info.first_ts),
        "last_seen": None if info.last_ts is None else format_timestamp(info.last_ts),
    }


def _only(query: Mapping[str, str], allowed: frozenset[str]) -> None:
    for name in query:
        if name not in allowed:
            raise invalid(name, f"unknown parameter; known: {', '.join(sorted(allowed))}")


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and low <= int(text) <= high):
        raise invalid(name, f"must be an integer from {low} to {high}")
    return int(text)


def _time(query: Mapping[str, str], name: str) -> float:
    try:
        return parse_timestamp(query[name])
    except ValueError as exc:
        raise invalid(name, str(exc)) from None
