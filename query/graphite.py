"""The Graphite read API for Grafana's built-in Graphite data source.

``/render`` (GET or form POST), ``/metrics/find``, ``/metrics/expand``, ``/functions``
and ``/version``, behind the same API keys (``read`` scope; ``X-API-Key`` or HTTP Basic
auth with the token as password). The pure parts live in ``protocol.graphite``; here:
parameters, metric names from the store, reads through ``Store.read_buckets`` (the same
path, rollup choice and bucket arithmetic as ``GET /api/metrics/{name}``), limits.

A render: parse each target, ``plan`` the reads it needs (an unknown function or bad
argument is a 400 before anything is read), resolve each path expression to metrics
(more than ``graphite_max_series`` is a 422), read, evaluate, then consolidate each
series to ``maxDataPoints``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, cast

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from protocol.buckets import Aggregation, BucketRow, bucket_range, series
from protocol.graphite import glob
from protocol.graphite.attime import parse_time
from protocol.graphite.expr import ParseError, parse
from protocol.graphite.functions import Context, TargetError, functions_document, plan
from protocol.graphite.functions import evaluate_series as evaluate
from protocol.graphite.series import MAX_POINTS_PER_SERIES, Series, max_data_points, read_step
from protocol.names import MAX_NAME_LENGTH
from protocol.points import FieldError
from query.errors import ApiError, json_response
from query.read import default_aggregation
from query.state import CONFIG, STORE, WALL_CLOCK
from store.base import MetricInfo, StoreError

GRAPHITE_VERSION: Final = "1.1.10"  # the graphite-web whose API this follows
MAX_TARGETS: Final = 50  # per request
MAX_LISTED_NAMES: Final = 100_000  # metric names one path expression may scan
MAX_RENDER_POINTS: Final = 5_000_000  # series x points read by one request
RENDER_TIME_BUDGET: Final = 10.0  # seconds of store reads one request may take
LIST_PAGE: Final = 1000
FORMATS: Final = ("json", "csv")

# A read aggregation and how its points are consolidated for display.
_CONSOLIDATION: Final[Mapping[str, str]] = {
    "sum": "sum", "count": "sum", "avg": "average", "min": "min", "max": "max",
    "rate": "average",
}


def bad_request(message: str, field: str = "target") -> ApiError:
    return ApiError(400, message, [FieldError(None, field, message)], code="invalid")


def over_budget(message: str, field: str = "target") -> ApiError:
    return ApiError(422, message, [FieldError(None, field, message)])


async def _params(request: web.Request) -> MultiDictProxy[str]:
    """Query string and (for POST) form body together, as graphite-web reads them."""
    merged: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST":
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                merged.add(key, value)
    return MultiDictProxy(merged)


def _time(params: Mapping[str, str], name: str, default: str, now: int) -> int:
    text = params.get(name) or default
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", name) from None


# -- names ----------------------------------------------------------------------------


async def _list_names(request: web.Request, prefix: str) -> list[MetricInfo]:
    store = request.app[STORE]
    out: list[MetricInfo] = []
    after: str | None = None
    while True:
        page = await store.list_metrics(prefix, LIST_PAGE, after)
        out.extend(page)
        if len(out) > MAX_LISTED_NAMES:
            raise over_budget(f"more than {MAX_LISTED_NAMES} metrics start with {prefix!r}: "
                              "use a longer literal prefix", "query")
        if len(page) < LIST_PAGE:
            return out
        after = page[-1].name


def _listing_prefix(pattern: str) -> str:
    """What every metric a pattern can reach starts with (its parent, for virtual leaves)."""
    nodes = glob.split_nodes(pattern)
    return glob.literal_prefix(".".join(nodes[:-1])) if len(nodes) > 1 else ""


async def _matches(request: web.Request, pattern: str) -> tuple[list[glob.Match],
                                                                dict[str, MetricInfo]]:
    """What ``pattern`` reaches, and the stored metrics behind its leaves."""
    store = request.app[STORE]
    if not glob.has_glob(pattern) and len(pattern) <= MAX_NAME_LENGTH:
        # A plain path: one or two lookups, no listing.
        info = await store.get_metric(pattern)
        if info is not None:
            return [glob.Match(pattern, True, True, pattern, None)], {pattern: info}
        parent, _, leaf = pattern.rpartition(".")
        if parent and leaf in glob.VIRTUAL_LEAVES:
            info = await store.get_metric(parent)
            if info is not None:
                return ([glob.Match(pattern, True, False, parent, glob.VIRTUAL_LEAVES[leaf])],
                        {parent: info})
    infos = await _list_names(request, _listing_prefix(pattern))
    by_name = {info.name: info for info in infos}
    return glob.find(pattern, by_name), by_name


# -- /render --------------------------------------------------------------------------


async def render(request: web.Request) -> web.Response:
    params = await _params(request)
    config = request.app[CONFIG]
    now = int(request.app[WALL_CLOCK]())
    output = params.get("format", "json")
    if output not in FORMATS:
        raise bad_request(f"format {output!r} is not served; use one of "
                          f"{', '.join(FORMATS)}", "format")
    start = _time(params, "from", "-1d", now)
    until = _time(params, "until", "now", now)
    if start > until:
        start, until = until, start  # graphite-web swaps a reversed range
    end = until + 1  # until is inclusive: the bucket holding it is drawn
    points_text = params.get("maxDataPoints")
    wanted: int | None = None
    if points_text:
        try:
            wanted = int(float(points_text))
        except ValueError:
            wanted = 0
        if not 1 <= wanted <= 1_000_000:
            raise bad_request("maxDataPoints must be an integer from 1 to 1000000",
                              "maxDataPoints")
    no_nulls = params.get("noNullPoints", "").lower() in ("1", "true")
    targets = params.getall("target", [])
    if len(targets) > MAX_TARGETS:
        raise bad_request(f"at most {MAX_TARGETS} targets per request")
    # Raw seconds are kept for retention_raw only: an older range reads minutes.
    min_step = 60 if start < now - config.retention_raw else 1
    step = read_step(start, end, wanted, min_step)
    trees = []
    reads: dict[tuple[str, int, int], None] = {}
    for target in targets:
        try:
            tree = parse(target)
            for read in plan(tree, start, end, step):
                reads.setdefault(read, None)
        except (ParseError, TargetError) as exc:
            raise bad_request(f"target {target!r}: {exc}") from None
        trees.append((target, tree))
    try:
        async with asyncio.timeout(RENDER_TIME_BUDGET):
            fetched = await _fetch(request, list(reads), step)
    except TimeoutError:
        raise over_budget(f"the reads took longer than the {RENDER_TIME_BUDGET:g} s budget: "
                          "narrow the range or the wildcards") from None
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc

    def lookup(pattern: str, low: int, high: int) -> list[Series]:
        return [s.renamed(s.name) for s in fetched[(pattern, low, high)]]

    results: list[Series] = []
    for target, tree in trees:
        try:
            results.extend(evaluate(tree, Context(start, end, step, lookup)))
        except TargetError as exc:
            raise bad_request(f"target {target!r}: {exc}") from None
    if wanted:
        results = [max_data_points(s, wanted) for s in results]
    if output == "csv":
        return _csv(results)
    return json_response([
        {
            "target": s.name,
            "tags": s.tags,
            "datapoints": [[v, ts] for v, ts in zip(s.values, s.timestamps(), strict=True)
                           if not (no_nulls and v is None)],
        }
        for s in results
    ])


async def _fetch(
    request: web.Request, reads: list[tuple[str, int, int]], step: int
) -> dict[tuple[str, int, int], list[Series]]:
    limit = request.app[CONFIG].graphite_max_series
    store = request.app[STORE]
    resolved: dict[str, tuple[list[glob.Match], dict[str, MetricInfo]]] = {}
    for pattern, _low, _high in reads:
        if pattern not in resolved:
            try:
                matches, infos = await _matches(request, pattern)
            except glob.GlobError as exc:
                raise bad_request(f"path {pattern!r}: {exc}") from None
            leaves = [m for m in matches if m.leaf]
            if len(leaves) > limit:
                raise over_budget(
                    f"{pattern!r} matches {len(leaves)} series; at most {limit} "
                    "(--graphite-max-series): narrow the wildcards")
            resolved[pattern] = (leaves, infos)
    total = sum(len(resolved[p][0]) * len(bucket_range(low, high, step))
                for p, low, high in reads)
    if total > MAX_RENDER_POINTS:
        raise over_budget(f"the request would read {total} points; at most "
                          f"{MAX_RENDER_POINTS}: use a shorter range or maxDataPoints")
    if any(len(bucket_range(low, high, step)) > MAX_POINTS_PER_SERIES * 4
           for _p, low, high in reads):
        raise over_budget("the range is too long for one request")
    wanted = {(resolved[p][1][m.metric].id, low, high)
              for p, low, high in reads for m in resolved[p][0] if m.metric is not None}
    keys = sorted(wanted)
    rows = await asyncio.gather(*(store.read_buckets(mid, low, high, step)
                                  for mid, low, high in keys))
    by_read = dict(zip(keys, rows, strict=True))
    out: dict[tuple[str, int, int], list[Series]] = {}
    for pattern, low, high in reads:
        leaves, infos = resolved[pattern]
        out[(pattern, low, high)] = [
            _series(m, infos[m.metric], pattern, by_read[(infos[m.metric].id, low, high)],
                    low, high, step)
            for m in leaves if m.metric is not None
        ]
    return out


def _series(match: glob.Match, info: MetricInfo, pattern: str, rows: list[BucketRow],
            start: int, end: int, step: int) -> Series:
    aggregation = cast(Aggregation, match.aggregation or default_aggregation(info.kind))
    points = series(rows, start, end, step, aggregation)
    by_ts = {row.ts: row for row in rows}
    counts = [by_ts[ts].cnt if ts in by_ts else 0.0 for ts, _ in points]
    sums = [by_ts[ts].sum if ts in by_ts else 0.0 for ts, _ in points]
    first = points[0][0] if points else start - start % step
    return Series(
        match.path, first, step, [v for _ts, v in points], pattern,
        _CONSOLIDATION[aggregation], {"name": match.path},
        (counts, sums) if aggregation == "avg" else None,
    )


def _csv(results: list[Series]) -> web.Response:
    lines = []
    for s in results:
        for value, ts in zip(s.values, s.timestamps(), strict=True):
            stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{s.name},{stamp},{'' if value is None else repr(value)}\r\n")
    return web.Response(text="".join(lines), content_type="text/csv")


# -- /metrics/find and /metrics/expand ------------------------------------------------


async def find(request: web.Request) -> web.Response:
    params = await _params(request)
    query = params.get("query")
    if not query:
        raise bad_request("query: required (a path with * ? [a-z] {a,b} globs)", "query")
    output = params.get("format", "treejson")
    if output not in ("treejson", "completer", "json"):
        raise bad_request(f"format {output!r} is not served; use treejson or completer",
                          "format")
    matches = await _find(request, query)
    if output == "completer":
        return json_response({"metrics": [
            {"path": m.path + ("." if not m.leaf else ""), "name": m.path.rpartition(".")[2],
             "is_leaf": "1" if m.leaf else "0"}
            for m in matches
        ]})
    nodes = []
    if params.get("wildcards") in ("1", "true") and matches:
        parent = query.rpartition(".")[0]
        nodes.append({"text": "*", "id": f"{parent}.*" if parent else "*", "leaf": 0,
                      "expandable": 1, "allowChildren": 1, "context": {}})
    nodes.extend(
        {"text": m.path.rpartition(".")[2], "id": m.path, "leaf": int(m.leaf),
         "expandable": int(m.branch), "allowChildren": int(m.branch), "context": {}}
        for m in matches
    )
    return json_response(nodes)


async def _find(request: web.Request, pattern: str) -> list[glob.Match]:
    if len(pattern) > 4 * MAX_NAME_LENGTH:
        raise bad_request("query: too long", "query")
    try:
        glob.split_nodes(pattern)
        infos = await _list_names(request, _listing_prefix(pattern))
        return glob.find(pattern, (info.name for info in infos))
    except glob.GlobError as exc:
        raise bad_request(f"query: {exc}", "query") from None
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc


async def expand(request: web.Request) -> web.Response:
    params = await _params(request)
    queries = params.getall("query", [])
    if not queries:
        raise bad_request("query: required", "query")
    leaves_only = params.get("leavesOnly") in ("1", "true")
    grouped: dict[str, list[str]] = {}
    for query in queries[:MAX_TARGETS]:
        matches = await _find(request, query)
        grouped[query] = sorted({m.path for m in matches if m.leaf or not leaves_only})
    if params.get("groupByExpr") in ("1", "true"):
        return json_response({"results": grouped})
    return json_response({"results": sorted({p for paths in grouped.values() for p in paths})})


# -- /functions and /version ----------------------------------------------------------

_FUNCTIONS_BODY: Final = functions_document()


async def functions(request: web.Request) -> web.Response:
    return json_response(_FUNCTIONS_BODY)


async def version(request: web.Request) -> web.Response:
    return web.Response(text=GRAPHITE_VERSION, content_type="text/plain")

