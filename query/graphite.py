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

Percentile leaves (``db.query.ms.p99``), ``unique`` (sets) and ``last`` (gauges) read
the per-minute summaries (``Store.read_sketches``) at the request's step, or a minute
where the step is finer; their series carry the summaries, so drawn at fewer points
each point is the percentile of all the samples behind it
(``protocol.graphite.series.Summaries``). A step whose points no summary holds (data
from before sketches) is null, as missing data is in Graphite.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, cast

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from protocol.buckets import (
    LAST,
    SUMMARY_INTERVAL,
    Aggregation,
    BucketRow,
    align,
    bucket_range,
    covers,
    is_summary_aggregation,
    series,
    summary_value,
)
from protocol.graphite import glob
from protocol.graphite.attime import parse_time
from protocol.graphite.expr import Call, Node, ParseError, Path, parse
from protocol.graphite.expr import render as render_target
from protocol.graphite.functions import Context, TargetError, functions_document, plan
from protocol.graphite.functions import evaluate_series as evaluate
from protocol.graphite.series import (
    INCOMPLETE,
    MAX_POINTS_PER_SERIES,
    Series,
    Summaries,
    max_data_points,
    read_step,
)
from protocol.names import MAX_NAME_LENGTH, SET, Kind
from protocol.points import FieldError
from query.errors import ApiError, json_response
from query.read import default_aggregation
from query.state import CONFIG, STORE, WALL_CLOCK
from store.base import MetricRef, StoreError

GRAPHITE_VERSION: Final = "1.1.10"  # the graphite-web whose API this follows
MAX_TARGETS: Final = 50  # per request
MAX_LISTED_NAMES: Final = 100_000  # metric names one path expression may scan
MAX_RENDER_POINTS: Final = 5_000_000  # series x points read by one request
MAX_READ_POINTS: Final = 4 * MAX_POINTS_PER_SERIES  # one series, with timeShift/windows
RENDER_TIME_BUDGET: Final = 10.0  # seconds of store reads one request may take
# Summaries (percentiles, unique, last) one request may read: each is decoded (and
# merged when drawn at fewer points) in Python, ~0.1-0.6 ms for a minute's sketch.
MAX_RENDER_SUMMARIES: Final = 20_000
THREAD_AFTER: Final = 64  # summaries past which the work goes to a worker thread
LIST_PAGE: Final = 1000
FORMATS: Final = ("json", "csv")

# A read aggregation and how its points are consolidated for display (summary ones
# carry their summaries, which consolidate exactly; this is for when a function drops
# them: max for percentiles and distinct counts, the safe direction for a tail).
_CONSOLIDATION: Final[Mapping[str, str]] = {
    "sum": "sum", "count": "sum", "avg": "average", "min": "min", "max": "max",
    "rate": "average", LAST: "last",
}


def _consolidation(aggregation: str) -> str:
    return _CONSOLIDATION.get(aggregation, "max")


def _aggregation(match: glob.Match, info: MetricRef) -> str:
    return match.aggregation or default_aggregation(info.kind)


def _step_of(aggregation: str, step: int) -> int:
    """The step a leaf is read at: summaries are per minute at the finest."""
    return max(step, SUMMARY_INTERVAL) if is_summary_aggregation(aggregation) else step


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


async def _list_names(request: web.Request, prefix: str) -> list[MetricRef]:
    store = request.app[STORE]
    out: list[MetricRef] = []
    after: str | None = None
    while True:
        page = await store.list_metric_refs(prefix, LIST_PAGE, after)
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
                                                                dict[str, MetricRef]]:
    """What ``pattern`` reaches, and the stored metrics behind its leaves."""
    store = request.app[STORE]
    if not glob.has_glob(pattern) and len(pattern) <= MAX_NAME_LENGTH:
        # A plain path: one or two lookups, no listing.
        info = await store.get_metric(pattern)
        if info is not None:
            ref = MetricRef(info.id, info.name, info.kind)
            return [glob.Match(pattern, True, True, pattern, None)], {pattern: ref}
        parent, _, leaf = pattern.rpartition(".")
        if parent and glob.is_leaf_name(leaf):
            info = await store.get_metric(parent)
            aggregation = None if info is None else glob.leaf_aggregation(leaf, info.kind)
            if info is not None and aggregation is not None:
                ref = MetricRef(info.id, info.name, info.kind)
                return [glob.Match(pattern, True, False, parent, aggregation)], {parent: ref}
        return [], {}  # a plain path that is neither a metric nor one's virtual leaf
    infos = await _list_names(request, _listing_prefix(pattern))
    by_name = {info.name: info for info in infos}
    return glob.find(pattern, by_name, {info.name: info.kind for info in infos}), by_name


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
    for target in targets:
        try:
            tree = parse(target)
            plan(tree, start, end, step)  # every check before anything is read
        except (ParseError, TargetError) as exc:
            raise bad_request(f"target {target!r}: {exc}") from None
        trees.append((target, tree))
    resolver = _Resolver(request)
    try:
        async with asyncio.timeout(RENDER_TIME_BUDGET):
            trees = [(target, await _push_down(tree, resolver)) for target, tree in trees]
            reads: dict[tuple[str, int, int], None] = {}
            for _target, tree in trees:
                reads.update(dict.fromkeys(plan(tree, start, end, step)))
            fetched = await _fetch(request, resolver, list(reads), step)
    except TimeoutError:
        raise over_budget(f"the reads took longer than the {RENDER_TIME_BUDGET:g} s budget: "
                          "narrow the range or the wildcards") from None
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc

    def lookup(pattern: str, low: int, high: int) -> list[Series]:
        return [s.renamed(s.name) for s in fetched[(pattern, low, high)]]

    def finish() -> list[Series]:
        results: list[Series] = []
        for target, tree in trees:
            try:
                results.extend(evaluate(tree, Context(start, end, step, lookup)))
            except TargetError as exc:
                raise bad_request(f"target {target!r}: {exc}") from None
        if wanted:
            results = [max_data_points(s, wanted, until - start) for s in results]
        return results

    # Summaries merged for fewer points (or steps combined) cost ~0.1 ms each in Python:
    # many of them go to a worker thread, so the loop answers other requests meanwhile.
    summaries = sum(len(s.summaries.data) for found in fetched.values() for s in found
                    if s.summaries is not None)
    results = await asyncio.to_thread(finish) if summaries > THREAD_AFTER else finish()
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


class _Resolver:
    """Path expressions of one request -> the leaves they match (each resolved once)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.limit = request.app[CONFIG].graphite_max_series
        self.done: dict[str, tuple[list[glob.Match], dict[str, MetricRef]]] = {}

    async def leaves(self, pattern: str) -> list[tuple[glob.Match, MetricRef]]:
        if pattern not in self.done:
            try:
                matches, infos = await _matches(self.request, pattern)
            except glob.GlobError as exc:
                raise bad_request(f"path {pattern!r}: {exc}") from None
            leaves = [m for m in matches if m.leaf and m.metric is not None]
            if len(leaves) > self.limit:
                raise over_budget(
                    f"{pattern!r} matches {len(leaves)} series; at most {self.limit} "
                    "(--graphite-max-series): narrow the wildcards")
            self.done[pattern] = (leaves, infos)
        leaves, infos = self.done[pattern]
        return [(m, infos[cast(str, m.metric)]) for m in leaves]


_ADDITIVE: Final = frozenset({"sum", "count", "rate"})


async def _push_down(node: Node, resolver: _Resolver) -> Node:
    """``node`` with each ``sumSeries`` of plain paths whose series all add up in the
    database (counters' sums, counts, rates: zero-filled, one aggregation, no metric
    twice) replaced by a path that names the merged read: the database sums 100 series
    into one row per step instead of sending 100 rows per step. The same numbers as
    summing them here (up to the order of floating-point additions)."""
    if not isinstance(node, Call):
        return node
    args = tuple([await _push_down(arg, resolver) for arg in node.args])
    call = Call(node.name, args, node.kwargs)
    if (call.name != "sumSeries" or call.kwargs or not args
            or not all(isinstance(a, Path) and "(" not in a.pattern for a in args)):
        return call
    leaves = [leaf for a in args for leaf in await resolver.leaves(cast(Path, a).pattern)]
    aggregations = {_aggregation(m, info) for m, info in leaves}
    ids = [info.id for _m, info in leaves]
    # (a set's rate is of its count, not of the sum the database would add)
    if (len(aggregations) != 1 or not aggregations <= _ADDITIVE
            or any(info.kind == SET for _m, info in leaves)
            or len(set(ids)) != len(ids) or len(ids) > resolver.limit):
        return call
    return Path(render_target(call))  # a path never holds "(": this one names the merge


async def _fetch(
    request: web.Request, resolver: _Resolver, reads: list[tuple[str, int, int]], step: int
) -> dict[tuple[str, int, int], list[Series]]:
    store = request.app[STORE]
    merged: dict[str, list[tuple[glob.Match, MetricRef]]] = {}
    for pattern, _low, _high in reads:
        if "(" in pattern:
            call = cast(Call, parse(pattern))
            merged[pattern] = [leaf for a in call.args
                               for leaf in await resolver.leaves(cast(Path, a).pattern)]
        else:
            await resolver.leaves(pattern)
    longest = max((len(bucket_range(low, high, step)) for _p, low, high in reads), default=0)
    if longest > MAX_READ_POINTS:
        raise over_budget(f"a read would hold {longest} points of {step} s; at most "
                          f"{MAX_READ_POINTS} per series: use a shorter range (or window)")
    total = sum((1 if p in merged else len(resolver.done[p][0]))
                * len(bucket_range(low, high, step)) for p, low, high in reads)
    if total > MAX_RENDER_POINTS:
        raise over_budget(f"the request would read {total} points; at most "
                          f"{MAX_RENDER_POINTS}: use a shorter range or maxDataPoints")
    # (metric id, low, high, step) bucket reads; (id, kind, low, high, step) summary reads
    single: set[tuple[int, int, int, int]] = set()
    summary_reads: set[tuple[int, Kind, int, int, int]] = set()
    leaves_of = {p: await resolver.leaves(p) for p, _low, _high in reads if p not in merged}
    for p, low, high in reads:
        if p not in merged:
            for m, info in leaves_of[p]:
                aggregation = _aggregation(m, info)
                own = _step_of(aggregation, step)
                single.add((info.id, low, high, own))
                if is_summary_aggregation(aggregation):
                    summary_reads.add((info.id, info.kind, low, high, own))
    summaries = sum(len(bucket_range(low, high, own)) for _i, _k, low, high, own in summary_reads)
    if summaries > MAX_RENDER_SUMMARIES:
        raise over_budget(f"the request would read {summaries} percentile (or unique, last) "
                          f"summaries; at most {MAX_RENDER_SUMMARIES}: use a shorter range, "
                          "fewer series or maxDataPoints")
    bucket_reads = sorted(single)
    sketch_reads = sorted(summary_reads)
    sums = [(p, low, high) for p, low, high in reads if p in merged]
    rows = await asyncio.gather(
        *(store.read_buckets(mid, low, high, own) for mid, low, high, own in bucket_reads),
        *(store.read_totals_merged([info.id for _m, info in merged[p]], low, high, step,
                                   "cnt" if _aggregation(*merged[p][0]) == "count" else "sum")
          for p, low, high in sums),
        *(store.read_sketches(mid, kind, low, high, own)
          for mid, kind, low, high, own in sketch_reads))
    by_read = dict(zip(bucket_reads, rows[:len(bucket_reads)], strict=True))
    merged_rows_of = rows[len(bucket_reads):len(bucket_reads) + len(sums)]
    by_sketch_read = {(mid, low, high, own): cast(list[tuple[int, bytes]], blobs)
                      for (mid, _k, low, high, own), blobs in zip(
                          sketch_reads, rows[len(bucket_reads) + len(sums):], strict=True)}
    out: dict[tuple[str, int, int], list[Series]] = {}
    for (pattern, low, high), totals in zip(sums, merged_rows_of, strict=True):
        match, info = merged[pattern][0]
        one = _total_series(pattern, cast(list[tuple[int, float]], totals), low, high, step,
                            _aggregation(match, info))
        one.tags["aggregatedBy"] = "sum"
        out[(pattern, low, high)] = [one]

    def build() -> None:
        for pattern, low, high in reads:
            if pattern in merged:
                continue
            built = []
            for m, info in leaves_of[pattern]:
                own = _step_of(_aggregation(m, info), step)
                key = (info.id, low, high, own)
                built.append(_series(m, info, pattern, cast(list[BucketRow], by_read[key]),
                                     low, high, own, by_sketch_read.get(key)))
            out[(pattern, low, high)] = built

    if summaries > THREAD_AFTER:
        await asyncio.to_thread(build)
    else:
        build()
    return out


def _series(match: glob.Match, info: MetricRef, pattern: str, rows: list[BucketRow],
            start: int, end: int, step: int,
            sketches: Sequence[tuple[int, bytes]] | None = None) -> Series:
    aggregation = _aggregation(match, info)
    if is_summary_aggregation(aggregation):
        return _summary_series(match, info, pattern, rows, sketches or (), start, end, step,
                               aggregation)
    if info.kind == SET:  # a set's rate is members received per second: Σcnt / step
        rows = [row._replace(sum=row.cnt) for row in rows]
    points = series(rows, start, end, step, cast(Aggregation, aggregation))
    by_ts = {row.ts: row for row in rows}
    counts = [by_ts[ts].cnt if ts in by_ts else 0.0 for ts, _ in points]
    sums = [by_ts[ts].sum if ts in by_ts else 0.0 for ts, _ in points]
    first = points[0][0] if points else start - start % step
    return Series(  # null where a step's sum is beyond the double range (+-inf)
        match.path, first, step, [v if v is None or math.isfinite(v) else None
                                  for _ts, v in points], pattern,
        _consolidation(aggregation), {"name": match.path},
        (counts, sums) if aggregation == "avg" else None,
    )


def _total_series(pattern: str, totals: list[tuple[int, float]], start: int, end: int,
                  step: int, aggregation: str) -> Series:
    """A ``sumSeries`` the database added (``_push_down``): its total per step of the
    counts or sums, zero-filled as additive series are, a rate per second; null where a
    total is beyond the double range."""
    by_ts = dict(totals)
    per = step if aggregation == "rate" else 1
    steps = bucket_range(start, end, step)
    values: list[float | None] = []
    for ts in steps:
        total = by_ts.get(ts, 0.0)
        values.append(total / per if math.isfinite(total) else None)
    return Series(pattern, steps.start, step, values, pattern, _consolidation(aggregation),
                  {"name": pattern})


def _summary_series(match: glob.Match, info: MetricRef, pattern: str, rows: list[BucketRow],
                    sketches: Sequence[tuple[int, bytes]], start: int, end: int, step: int,
                    aggregation: str) -> Series:
    """A percentile (unique, last) per step from its summary; null where the step's
    points have no summary that holds them all (data from before sketches)."""
    counts = {row.ts: row.cnt for row in rows}
    blobs = dict(sketches)
    values: list[float | None] = []
    data: list[bytes | None] = []
    for ts in bucket_range(start, end, step):
        blob = blobs.get(ts)
        cnt = counts.get(ts, 0.0)
        value: float | None = None
        entry: bytes | None = INCOMPLETE if cnt else None
        if blob is not None:
            try:
                value, weight = summary_value(info.kind, aggregation, blob)
            except ValueError as exc:  # the store validates what it keeps: never so
                raise ApiError(500, f"the stored summary of {info.name!r} at {ts} cannot "
                                    f"be read: {exc}") from exc
            if covers(weight, cnt):
                entry = blob
            else:
                value = None
        values.append(value)
        data.append(entry)
    return Series(match.path, align(start, step), step, values, pattern,
                  _consolidation(aggregation), {"name": match.path}, None,
                  Summaries(info.kind, aggregation, data))


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
        return glob.find(pattern, (info.name for info in infos),
                         {info.name: info.kind for info in infos})
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


async def tags_autocomplete(request: web.Request) -> web.Response:
    """``/tags/autoComplete/tags`` and ``/values``: metrics carry no tags here, so the
    answer is empty (Grafana's editor asks when it offers tag filters)."""
    return json_response([])


async def version(request: web.Request) -> web.Response:
    return web.Response(text=GRAPHITE_VERSION, content_type="text/plain")

