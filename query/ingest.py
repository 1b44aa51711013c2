"""Ingest handlers: ``POST /api/metrics/counter``, ``/value`` and ``/batch``.

Each handler: JSON body -> validated points (``protocol.points``) -> kind check ->
group commit -> ``{"accepted": n}``. The 200 is sent only after the batch holding the
points has been committed. A request is all or nothing: any invalid point (422) or
kind conflict (409) and nothing of it is written. Value points also make a quantile
sketch per (metric, minute), committed with the points in the same batch (unless the
service runs with ``--no-sketches``), so they get percentiles.

Kind conflicts are found before committing, from a per-process cache of stored kinds
filled by ``store.get_metric`` (one lookup per name this process has not seen yet).
Should another process create the same new name with the other kind in the moment
between that check and our commit, the store drops the conflicting rows and reports
them; the request then gets 409 as well. In that race (and only then) the request's
*other* points have been committed: ``Store.write_batch`` has no all-or-nothing mode
to refuse the whole batch on a conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from operator import itemgetter
from typing import Final

import orjson
from aiohttp import web

from protocol.names import Kind
from protocol.points import (
    FieldError,
    InvalidPoints,
    Point,
    Row,
    SketchRow,
    Window,
    batch_points,
    counter_point,
    kind_conflicts,
    to_rows,
    to_sketches,
    value_point,
)
from query.commit import Quarantined
from query.errors import JSON, ApiError, json_response
from query.state import BATCH_READER, COMMITTER, CONFIG, KINDS, STATS, STORE, WALL_CLOCK
from store.base import StoreError

MAX_KNOWN_KINDS: Final = 200_000  # names whose kind is cached; cleared past it

# A request body -> its validated points (every problem listed) and -> its rows (the
# same points aggregated per name, kind and second; the hot path of batch ingest) with
# the value sketches (per name and minute, of alpha in basis points; None: none).
PointsParser = Callable[[object, Window], list[Point]]
RowsReader = Callable[[object, Window, int | None], tuple[list[Row], list[SketchRow]]]


def sketch_alpha(app: web.Application) -> int | None:
    """The alpha of the sketches ingest makes, in basis points; None with --no-sketches."""
    config = app[CONFIG]
    return round(config.sketch_alpha * 100) if config.sketches else None


def read_points(points: list[Point], alpha_bp: int | None) -> tuple[list[Row], list[SketchRow]]:
    """Validated points -> their rows and value sketches (none for ``alpha_bp`` None)."""
    return to_rows(points), [] if alpha_bp is None else to_sketches(points, alpha_bp)


async def read_json(request: web.Request) -> object:
    """The request body as JSON: 415 if not declared JSON, 413 if too large, 400 if
    malformed (including NaN, Infinity and numbers beyond the double range)."""
    if request.content_type != JSON:
        raise ApiError(415, f"Content-Type must be {JSON}, not {request.content_type}")
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body of {request.content_length} bytes is larger "
                            f"than the limit of {limit} bytes")
    body = await request.read()  # raises 413 past the limit when the length is not declared
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


async def post_counter(request: web.Request) -> web.Response:
    return await _ingest(request, _single(counter_point), None, batch=False)


async def post_value(request: web.Request) -> web.Response:
    return await _ingest(request, _single(value_point), None, batch=False)


async def post_batch(request: web.Request) -> web.Response:
    return await _ingest(request, batch_points, request.app[BATCH_READER].read, batch=True)


def _single(parse: Callable[[object, Window], Point]) -> PointsParser:
    return lambda body, window: [parse(body, window)]


async def _ingest(
    request: web.Request, parse: PointsParser, read: RowsReader | None, *, batch: bool
) -> web.Response:
    """``read`` (default: ``to_rows`` of ``parse``) takes the body to rows; ``parse``
    gives the points one by one when an error must say which point is at fault."""
    app = request.app
    body = await read_json(request)
    window = Window(app[WALL_CLOCK](), app[CONFIG].retention_raw)
    alpha_bp = sketch_alpha(app)
    try:
        rows, sketches = (read_points(parse(body, window), alpha_bp) if read is None
                          else read(body, window, alpha_bp))
    except InvalidPoints as exc:
        raise ApiError(422, f"invalid point(s): {exc}", exc.errors) from None

    def conflicts_of(known: dict[str, Kind]) -> list[FieldError]:
        # Only on the error path: the body validated, so parse() cannot raise here.
        return kind_conflicts(parse(body, window), known, batch=batch)

    return json_response({"accepted": await commit_rows(app, rows, conflicts_of, sketches)})


async def commit_rows(
    app: web.Application, rows: list[Row],
    conflicts_of: Callable[[dict[str, Kind]], list[FieldError]],
    sketches: list[SketchRow] | None = None,
) -> int:
    """Kind check, group commit, then the points accepted: the second half of every
    ingest route (``conflicts_of`` lists the points at fault, given the known kinds;
    ``sketches`` go in the same batch as ``rows``). Raises ApiError 409 (kind conflict)
    or 503 (neither committed nor spooled)."""
    await _check_kinds(app, rows, conflicts_of)
    try:
        conflicts = await app[COMMITTER].commit(rows, sketches or [])
    except Quarantined as exc:
        app[STATS].ingest_unavailable += 1
        raise ApiError(500, str(exc)) from exc
    except StoreError as exc:
        app[STATS].ingest_unavailable += 1
        raise ApiError(503, "the points could not be committed; nothing was acknowledged, "
                            "retry later") from exc
    kinds = app[KINDS]
    if conflicts:  # lost a race with another process creating the same names
        kinds.update(conflicts)
        app[STATS].ingest_conflicts += 1
        raise ApiError(409, "kind conflict: points of the other kind were not recorded",
                       conflicts_of(conflicts))
    if len(kinds) >= MAX_KNOWN_KINDS:
        kinds.clear()
    kinds.update((row[0], row[1]) for row in rows)
    accepted = int(sum(map(itemgetter(3), rows)))  # every point counts 1 in its row
    app[STATS].points_accepted += accepted
    return accepted


async def _check_kinds(
    app: web.Application, rows: list[Row],
    conflicts_of: Callable[[dict[str, Kind]], list[FieldError]],
) -> None:
    """409 if a point's kind differs from its metric's stored kind, or from another
    point of the same name in the request."""
    kinds = app[KINDS]
    # The common case in one pass: every name known, every row of its stored kind
    # (which also rules out two kinds for one name within the request).
    if all(kinds.get(name) == kind for name, kind, *_ in rows):
        return
    names = {row[0] for row in rows}
    unknown = [name for name in names if name not in kinds]
    if unknown:
        store = app[STORE]
        try:
            found = await asyncio.gather(*(store.get_metric(name) for name in unknown))
        except StoreError as exc:
            if not app[COMMITTER].writer.can_spool:
                raise ApiError(503, "cannot check metric kinds: the store is unavailable") from exc
            # Ingest goes on through an outage: the batch will be spooled, and a point of
            # the other kind than the stored one is found (logged, counted) at replay.
            found = []
        for info in found:
            if info is not None:
                kinds[info.name] = info.kind
    known: dict[str, Kind] = {name: kinds[name] for name in names if name in kinds}
    seen = dict(known)
    if all(seen.setdefault(name, kind) == kind for name, kind, *_ in rows):
        return
    errors = conflicts_of(known)
    app[STATS].ingest_conflicts += 1
    raise ApiError(409, f"kind conflict: {errors[0].message}", errors)
