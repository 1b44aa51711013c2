"""The aiohttp application factory."""

from __future__ import annotations

import orjson
from aiohttp import web

from query.config import HttpConfig
from store.base import Store, StoreError

STORE: web.AppKey[Store] = web.AppKey("store")
CONFIG: web.AppKey[HttpConfig] = web.AppKey("config", HttpConfig)


def make_app(config: HttpConfig, store: Store) -> web.Application:
    """The HTTP service on an already opened store (its owner closes it)."""
    app = web.Application(client_max_size=config.max_body_size)
    app[CONFIG] = config
    app[STORE] = store
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        return _json({"status": "unavailable", "error": str(exc)}, status=503)
    return _json({"status": "ok"})


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
