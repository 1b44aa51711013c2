"""Query handlers: ``GET /api/metrics`` (list) and ``GET /api/metrics/{name}`` (series).

Parameters are validated before the store is asked anything; unknown parameters are
422 rather than ignored, so a typo (``agg=max``) cannot silently give the default.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Final, cast

from aiohttp import web

from protocol.buckets import (
    AGGREGATIONS,
    FILLS,
    MAX_QUERY_BUCKETS,
    Aggregation,
    Fill,
    align,
    bucket_count,
    default_fill,
    series,
)
from protocol.names import COUNTER, MAX_NAME_LENGTH, Kind, name_error
from protocol.units import format_timestamp, parse_interval, parse_timestamp
from query.errors import ApiError, invalid, json_response
from query.state import STORE, WALL_CLOCK
from store.base import MetricInfo, StoreError

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
DEFAULT_RANGE: Final = 3600  # seconds: the last hour
DEFAULT_INTERVAL: Final = "minute"
LAST_FORMATTABLE: Final = 253402300799  # 9999-12-31T23:59:59Z

_PREFIX = re.compile(r"[A-Za-z0-9_.-]*", re.ASCII)
_LIST_PARAMS: Final = frozenset({"prefix", "limit", "cursor"})
_SERIES_PARAMS: Final = frozenset({"from", "to", "interval", "aggregation", "fill"})


def default_aggregation(kind: Kind) -> Aggregation:
    """Counters add up (``sum`` per bucket); values are averaged (``avg``)."""
    return "sum" if kind == COUNTER else "avg"


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


async def get_series(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    problem = name_error(name)
    if problem is not None:
        raise invalid("name", problem)
    query = request.query
    _only(query, _SERIES_PARAMS)
    now = request.app[WALL_CLOCK]()
    end = min(math.ceil(_time(query, "to")) if "to" in query else math.floor(now) + 1,
              LAST_FORMATTABLE)
    start = math.floor(_time(query, "from")) if "from" in query else end - DEFAULT_RANGE
    if start >= end:
        raise invalid("from", "must be before 'to'")
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
    if aggregation is not None and aggregation not in AGGREGATIONS:
        raise invalid("aggregation", f"must be one of {', '.join(AGGREGATIONS)}")
    fill = query.get("fill")
    if fill is not None and fill not in FILLS:
        raise invalid("fill", f"must be one of {', '.join(FILLS)}")

    store = request.app[STORE]
    try:
        info = await store.get_metric(name)
        if info is None:
            raise ApiError(404, f"no metric named {name!r}")
        rows = await store.read_buckets(info.id, start, end, interval)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    agg = cast(Aggregation, aggregation) if aggregation else default_aggregation(info.kind)
    filled = cast(Fill, fill) if fill else default_fill(agg)
    return json_response({
        "metric": info.name,
        "kind": info.kind,
        "interval": interval,
        "aggregation": agg,
        "fill": filled,
        "from": format_timestamp(align(start, interval)),
        "to": format_timestamp(end),
        "points": [
            {"timestamp": format_timestamp(ts), "value": value}
            for ts, value in series(rows, start, end, interval, agg, filled)
        ],
    })


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
