"""StatHat's ingest API, so StatHat's client libraries send to us unchanged (bar the
host name): ``/ez`` (GET, POST form, POST JSON bulk), ``/c`` and ``/v``.

The key comes in a field (``ezkey``, ``ukey``) instead of the X-API-Key header; it is
one of our API keys with the ``write`` scope, and the checks of the header are made on
it in the same order, with the same per-key rate limit (``query.auth.authorize_token``).
Bodies are held to ``--max-body-size`` like every other. The points take the path of
``/api/metrics/batch`` (``query.ingest.commit_rows``: kind check, group commit, a
quantile sketch per value metric and minute), so a 200 means committed, or spooled
while the database is down.

Answers are StatHat's shape, which its clients read: ``{"status": 200, "msg": "ok"}``
with HTTP 200. An unknown, revoked or malformed key is ``{"status": 500, "msg":
"invalid keys"}``, what StatHat answered, sent with HTTP 401 so that a client that only
looks at the HTTP status (the ``stathat`` command, the Node module's callback) sees the
failure too. Every other error has ``status`` equal to its HTTP status (400, 403, 409,
413, 415, 422, 429, 503) and a ``msg`` saying what is wrong, and keeps the headers
(``Retry-After``, ``X-RateLimit-*``) our own API sends with it. (Errors raised before a
handler runs, 404 and 405, keep our JSON error model.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from protocol.names import COUNTER, VALUE, Kind
from protocol.points import InvalidPoints, Point, Window, kind_conflicts
from protocol.stathat import classic_points, ez_form_points, ez_json_points, ez_json_token
from query.auth import authorize_token
from query.errors import JSON, ApiError, json_response
from query.ingest import commit_rows, read_json, read_points, sketch_alpha
from query.state import CONFIG, WALL_CLOCK

FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
INVALID_KEYS: Final = "invalid keys"  # StatHat's words, which its clients may match

Fields = Mapping[str, Any]


async def ez_get(request: web.Request) -> web.Response:
    return await _answer(request, lambda: _form(request, "ezkey", ez_form_points))


async def ez_post(request: web.Request) -> web.Response:
    if request.content_type == JSON:
        return await _answer(request, lambda: _json(request))
    return await _answer(request, lambda: _form(request, "ezkey", ez_form_points))


def classic(kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/c`` (counter) or ``/v`` (value), GET or POST."""

    def points(fields: Fields, window: Window) -> list[Point]:
        return classic_points(fields, kind, window)

    async def handler(request: web.Request) -> web.Response:
        return await _answer(request, lambda: _form(request, "ukey", points))

    handler.__name__ = f"classic_{kind}"
    return handler


classic_count = classic(COUNTER)
classic_value = classic(VALUE)


# -- internals ---------------------------------------------------------------------


async def _answer(
    request: web.Request, ingest: Callable[[], Awaitable[dict[str, str]]]
) -> web.Response:
    """Run ``ingest`` (-> rate-limit headers) and answer in StatHat's shape."""
    try:
        headers = await ingest()
    except ApiError as exc:
        if exc.status == 401:
            return _stathat(401, 500, exc.message, exc.headers)
        return _stathat(exc.status, exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:  # aiohttp's 413 while reading a form body
        if exc.status < 400:
            raise
        return _stathat(exc.status, exc.status, exc.text or exc.reason, {})
    return _stathat(200, 200, "ok", headers)


def _stathat(http_status: int, status: int, msg: str,
             headers: Mapping[str, str]) -> web.Response:
    return json_response({"status": status, "msg": msg}, http_status, headers)


async def _form(
    request: web.Request, key_field: str,
    parse: Callable[[Fields, Window], list[Point]],
) -> dict[str, str]:
    """Fields from the query string and, for a POST, a form body (the body wins, as
    for Go's ``FormValue``); the first of repeated fields counts."""
    fields: dict[str, Any] = {}
    if request.method == "POST":
        if request.content_type in FORM_TYPES:
            try:
                form = await request.post()
            except (ValueError, UnicodeDecodeError) as exc:  # no boundary, not UTF-8
                raise ApiError(400, f"malformed form body: {exc}") from None
            for name, value in form.items():
                fields.setdefault(name, value)
        elif request.body_exists:
            raise ApiError(415, f"Content-Type must be {FORM_TYPES[0]} (or {JSON} for "
                                f"/ez), not {request.content_type}")
    for name, value in request.query.items():
        fields.setdefault(name, value)
    token = fields.get(key_field)
    if token is None or token == "":
        raise ApiError(401, f"{INVALID_KEYS}: no {key_field} given")
    headers = await _authorize(request, token)
    await _commit(request, lambda window: parse(fields, window), index_name=None)
    return headers


async def _json(request: web.Request) -> dict[str, str]:
    body = await read_json(request)
    token = ez_json_token(body)
    if token is None:
        raise ApiError(401, f"{INVALID_KEYS}: no ezkey given")
    headers = await _authorize(request, token)
    await _commit(request, lambda window: ez_json_points(body, window), index_name="data")
    return headers


async def _authorize(request: web.Request, token: object) -> dict[str, str]:
    try:
        return await authorize_token(request, token, "write")
    except ApiError as exc:
        if exc.status == 401:
            exc.message = INVALID_KEYS
        raise


async def _commit(
    request: web.Request, parse: Callable[[Window], list[Point]], *, index_name: str | None
) -> None:
    app = request.app
    window = Window(app[WALL_CLOCK](), app[CONFIG].retention_raw)
    try:
        points = parse(window)
    except InvalidPoints as exc:
        first = exc.errors[0]
        where = f"{index_name}[{first.index}]." if first.index is not None else ""
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        raise ApiError(422, f"{where}{first.field}: {first.message}{more}",
                       exc.errors) from None
    rows, sketches = read_points(points, sketch_alpha(app))
    await commit_rows(app, rows, lambda known: kind_conflicts(points, known, batch=True),
                      sketches)
