"""API keys and per-key rate limits for the ``/api/`` routes.

A route's required scope is looked up by route name in ``app[SCOPES]`` (``write`` for
ingest, ``read`` for queries); routes without an entry (``/healthz``, ``/metrics``,
``/api/openapi.json``, unknown paths) need no key. For the others, in this order:

    no X-API-Key header (nor HTTP Basic      401 unauthorized
    auth with the key as password)
    not a token, unknown, or revoked key     401 unauthorized
    key cannot be checked (store down)       503 unavailable
    key over its rate limit                  429 rate_limited (+ Retry-After)
    key lacks the route's scope              403 forbidden

Every answer that passed authentication, success or error, carries the key's
``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from protocol.tokens import is_token
from protocol.units import RateLimit, parse_rate_limit
from query.errors import ApiError
from query.state import CONFIG, KEYS, LIMITER, SCOPES, STATS
from store.base import ApiKey, StoreError

log = logging.getLogger(__name__)

API_KEY_HEADER: Final = "X-API-Key"


def basic_auth_token(request: web.Request) -> str | None:
    """The password of HTTP Basic auth (any user name): how Grafana's data source form
    sends a key. None without a well-formed ``Authorization: Basic`` header."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or len(credentials) > 1024:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


async def authenticate(request: web.Request) -> ApiKey:
    """The request's key, if it exists and is not revoked."""
    token = (request.headers.get(API_KEY_HEADER) or basic_auth_token(request)
             or session_token(request))
    if not token:
        raise ApiError(401, f"missing {API_KEY_HEADER} header")
    return await look_up_key(request.app, token)


async def look_up_key(app: web.Application, token: str) -> ApiKey:
    """The key of ``token``: 401 unless it is a key that exists and is not revoked, 503
    when the store cannot tell."""
    if not is_token(token):  # not even the shape of a key: no lookup
        raise ApiError(401, "invalid API key")
    try:
        key = await app[KEYS].get(token)
    except StoreError as exc:
        raise ApiError(503, "cannot check the API key: the store is unavailable") from exc
    if key is None:
        raise ApiError(401, "invalid API key")
    if key.revoked_at is not None:
        raise ApiError(401, "API key revoked")
    return key


async def admit(app: web.Application, key: ApiKey, scope: str) -> dict[str, str]:
    """Spend one request of ``key``'s rate limit, then check its ``scope``: 429 or 403,
    else the rate-limit headers for the answer. Rate limited before the scope check: a
    key spends its budget on refused calls too."""
    limit = key_rate_limit(key.rate_limit, app[CONFIG].default_rate_limit)
    decision = await app[LIMITER].acquire(key.key_hash, limit)
    headers = decision.headers()
    if not decision.allowed:
        app[STATS].rate_limited += 1
        raise ApiError(
            429, f"rate limit of {limit} exceeded for this key; retry in "
            f"{headers['Retry-After']} s", headers=headers,
        )
    if scope not in key.scopes:
        raise ApiError(403, f"API key lacks the {scope!r} scope", headers=headers)
    return headers


# The dashboard's login (query.dashboard) keeps its read key in this cookie (HttpOnly,
# SameSite=Strict). It counts as the key of GET read routes only, so it can never make
# a request that changes anything: CSRF needs a cross-site request to carry it, which
# SameSite=Strict already stops, and without CORS no other site can read the answers.
SESSION_COOKIE: Final = "gf_session"


def session_token(request: web.Request) -> str | None:
    """The session cookie's key, for a GET (or HEAD) of a read route; else None."""
    if request.method not in ("GET", "HEAD"):
        return None
    if request.app[SCOPES].get(request.match_info.route.name or "") != "read":
        return None
    return request.cookies.get(SESSION_COOKIE)


@functools.lru_cache(maxsize=1024)
def key_rate_limit(text: str | None, default: str) -> RateLimit:
    """A key's own limit (``"100/s"``) or the server default; cached per text."""
    if text is not None:
        try:
            return parse_rate_limit(text)
        except ValueError:
            log.warning("invalid stored rate limit %r; using the default %s", text, default)
    return parse_rate_limit(default)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    scope = app[SCOPES].get(request.match_info.route.name or "")
    if scope is None:
        return await handler(request)
    headers = await admit(app, await authenticate(request), scope)
    try:
        response = await handler(request)
    except (ApiError, web.HTTPException) as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


async def authorize_token(request: web.Request, token: object, scope: str) -> dict[str, str]:
    """For routes whose key comes in the body (StatHat's ``ezkey``/``ukey``), not the
    header: the checks of ``guard_middleware`` in its order (401, 503, 429, 403) on
    ``token``. Returns the rate-limit headers for the answer; raises ApiError."""
    if not isinstance(token, str):
        raise ApiError(401, "invalid API key")
    return await admit(request.app, await look_up_key(request.app, token), scope)
