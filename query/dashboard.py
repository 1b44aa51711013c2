"""The built-in dashboard at ``/``: two static pages, their assets, login and logout.

The page is static HTML and JavaScript (``query/web/``, uPlot vendored under
``query/web/vendor/uplot/``); it reads the public JSON API (``GET /api/metrics``,
``GET /api/metrics/{name}``) like any client. Its key is a read key kept in an
HttpOnly, SameSite=Strict cookie (``query.auth.SESSION_COOKIE``), which the guard
accepts as the key of GET read routes only (see ``query.auth.session_token``).

    GET  /                 the dashboard (303 to /login without a session cookie,
                           unless the request comes from another site: see index)
    GET  /login            the login page
    POST /login            {"key": token} or {"code": first-run code} -> the cookie
    POST /logout           clears the cookie
    GET  /static/{name}    assets by content-hashed name: cached for a year

Every answer carries a strict Content-Security-Policy (scripts and styles from this
origin only, no inline script or style, no framing). Assets are read once, at app
creation, from the package, so no file system access happens per request.

First run: ``glowing-fiesta run`` on a loopback address, when no key named
``dashboard`` exists yet, puts a ``FirstRunLogin`` code in the app and prints
``http://127.0.0.1:8000/login#code=...``. The code sits in the URL fragment, which a
browser never sends; the login page posts it in a request body. The first POST with
it creates the read key ``dashboard`` (only its hash is stored) and sets the cookie;
the code then stops working (it also dies with the process).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import logging
import re
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from protocol.tokens import display_prefix, generate_token, hash_token, is_token
from query.auth import SESSION_COOKIE
from query.errors import ApiError, invalid, json_response
from query.state import CONFIG, KEYS, STORE
from store.base import Store, StoreError

log = logging.getLogger(__name__)

WEB: Final = Path(__file__).resolve().parent / "web"
UPLOT_VERSION: Final = "1.6.32"  # query/web/vendor/uplot/VERSION.md says where it came from
DASHBOARD_KEY_NAME: Final = "dashboard"  # the read key the first-run login creates
SESSION_MAX_AGE: Final = 30 * 86400  # seconds; revoking the key ends a session sooner
MAX_LOGIN_BODY: Final = 4096

CSP: Final = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
])
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSET_CACHE: Final = "public, max-age=31536000, immutable"  # names change with content
PAGE_CACHE: Final = "no-cache"  # revalidated (ETag) on every load: new assets show at once

_CONTENT_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z0-9_.-]+)\}\}")


class Asset(NamedTuple):
    body: bytes
    gzipped: bytes | None  # None: not worth compressing
    content_type: str
    etag: str


class Assets(NamedTuple):
    pages: dict[str, Asset]  # "index.html", "login.html"
    files: dict[str, Asset]  # hashed name ("app.1a2b3c4d.js") -> asset
    urls: dict[str, str]  # plain name ("app.js") -> "/static/app.1a2b3c4d.js"


def _asset(body: bytes, suffix: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()
    packed = gzip.compress(body, 9, mtime=0) if len(body) > 1024 else None
    return Asset(body, packed, _CONTENT_TYPES[suffix], f'"{digest[:20]}"')


@lru_cache(maxsize=1)
def load_assets() -> Assets:
    """Read query/web once: assets under content-hashed names, pages with their
    ``{{name}}`` placeholders replaced by those names. Raises OSError/KeyError if the
    package is incomplete (a broken install must not start half a dashboard)."""
    files: dict[str, Asset] = {}
    urls: dict[str, str] = {}
    for path in sorted(WEB.rglob("*")):
        if path.suffix not in (".js", ".css", ".svg"):
            continue
        asset = _asset(path.read_bytes(), path.suffix)
        hashed = f"{path.name[:-len(path.suffix)]}.{asset.etag[1:9]}{path.suffix}"
        files[hashed] = asset
        urls[path.name] = f"/static/{hashed}"
    pages = {}
    for name in ("index.html", "login.html"):
        text = (WEB / name).read_text()
        pages[name] = _asset(_PLACEHOLDER.sub(lambda m: urls[m.group(1)], text).encode(),
                             ".html")
    return Assets(pages, files, urls)


def _send(request: web.Request, asset: Asset, cache: str, status: int = 200) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag,
               "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, status=status, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    # A link followed from another site (a shared view in a chat) arrives without the
    # SameSite=Strict cookie even when there is one: serve the page, whose same-origin
    # API calls do carry it (and which goes to /login on a 401).
    cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
    if SESSION_COOKIE not in request.cookies and not cross_site:
        # The browser keeps the URL fragment (the view) across the redirect.
        return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": "/login",
                                                 "Cache-Control": "no-store"})
    return _send(request, load_assets().pages["index.html"], PAGE_CACHE)


async def login_page(request: web.Request) -> web.StreamResponse:
    return _send(request, load_assets().pages["login.html"], PAGE_CACHE)


async def static_file(request: web.Request) -> web.StreamResponse:
    asset = load_assets().files.get(request.match_info["name"])
    if asset is None:
        raise ApiError(404, "no such file")
    return _send(request, asset, ASSET_CACHE)


class FirstRunLogin:
    """A one-time login code, held in memory by the process that printed it."""

    def __init__(self, code: str) -> None:
        self._code: str | None = code

    def take(self, code: str) -> bool:
        """True once, for the right code; no await between check and use."""
        if self._code is None or not hmac.compare_digest(code.encode(), self._code.encode()):
            return False
        self._code = None
        return True


FIRST_RUN: web.AppKey[FirstRunLogin] = web.AppKey("first_run", FirstRunLogin)


async def first_run_code(store: Store) -> str | None:
    """A new one-time code if no key named ``dashboard`` exists (revoked ones do not
    count), else None. Raises StoreError when the store cannot say."""
    keys = await store.list_keys()
    if any(k.name == DASHBOARD_KEY_NAME and k.revoked_at is None for k in keys):
        return None
    return secrets.token_urlsafe(24)


def _same_origin(request: web.Request) -> None:
    """Login CSRF: a page elsewhere must not log this browser in (with its own key) or
    out. Browsers send Origin on every POST from a page; a client without one is not a
    browser on another site. The host is compared, not the scheme: behind a
    TLS-terminating proxy the browser says https and this server sees http."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "cross-origin login or logout refused")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise ApiError(403, "cross-origin login or logout refused")


async def _login_body(request: web.Request) -> dict[str, object]:
    if request.content_type != "application/json":
        raise ApiError(415, "send the login as application/json")
    body = await request.read()
    if len(body) > MAX_LOGIN_BODY:
        raise ApiError(413, f"login body over {MAX_LOGIN_BODY} bytes")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(parsed, dict) or len(parsed) != 1 or not (
            isinstance(parsed.get("key"), str) or isinstance(parsed.get("code"), str)):
        raise invalid("key", 'send {"key": "gf_..."} (a read key) or {"code": "..."}')
    return parsed


async def login(request: web.Request) -> web.Response:
    _same_origin(request)
    body = await _login_body(request)
    if isinstance(body.get("code"), str):
        token = await _redeem(request, str(body["code"]))
    else:
        token = str(body["key"])
        await _check_read_key(request, token)
    response = json_response({"logged_in": True, "key": display_prefix(token)},
                             headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE, path="/",
                        httponly=True, samesite="Strict",
                        secure=request.secure or request.app[CONFIG].allow_plain_http)
    return response


async def _check_read_key(request: web.Request, token: str) -> None:
    if not is_token(token):
        raise ApiError(401, "invalid API key")
    try:
        key = await request.app[KEYS].get(token)
    except StoreError as exc:
        raise ApiError(503, "cannot check the API key: the store is unavailable") from exc
    if key is None or key.revoked_at is not None:
        raise ApiError(401, "invalid or revoked API key")
    if "read" not in key.scopes:
        raise ApiError(403, "the dashboard needs a key with the 'read' scope")


async def _redeem(request: web.Request, code: str) -> str:
    first_run = request.app.get(FIRST_RUN)
    if first_run is None or not first_run.take(code):
        raise ApiError(401, "this login link was used already or is from an earlier run: "
                            "log in with a read key (glowing-fiesta keys create NAME "
                            "--scopes read)")
    token = generate_token()
    try:
        await request.app[STORE].create_key(DASHBOARD_KEY_NAME, hash_token(token),
                                            display_prefix(token), ("read",), None,
                                            int(time.time()))
    except StoreError as exc:
        raise ApiError(503, "cannot create the dashboard key: the store is unavailable") \
            from exc
    log.info("first-run login: created read key %r (%s)", DASHBOARD_KEY_NAME,
             display_prefix(token))
    return token


async def logout(request: web.Request) -> web.Response:
    _same_origin(request)
    response = json_response({"logged_in": False},
                             headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    response.del_cookie(SESSION_COOKIE, path="/", samesite="Strict")
    return response


# (method, path, handler, route name): no key (login is how one gets in).
ROUTES: Final = (
    ("GET", "/", index, "dashboard_index"),
    ("GET", "/login", login_page, "dashboard_login_page"),
    ("POST", "/login", login, "dashboard_login"),
    ("POST", "/logout", logout, "dashboard_logout"),
    ("GET", "/static/{name}", static_file, "dashboard_static"),
)


def add_routes(app: web.Application) -> None:
    load_assets()  # fail at start-up, not at the first page view
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
