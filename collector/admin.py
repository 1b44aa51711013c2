"""The collector's admin HTTP listener (``--admin-port``): ``/metrics`` and ``/healthz``.

Separate from the query service so that a collector-only host (``glowing-fiesta
collector``) can be scraped and health-checked. Loopback by default: it has no
authentication.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from collector.config import AdminConfig as AdminConfig  # re-exported: its options
from collector.daemon import Collector
from collector.metrics import make_registry
from store.base import StoreError

log = logging.getLogger(__name__)

DAEMON: web.AppKey[Collector] = web.AppKey("daemon", Collector)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


def make_admin_app(daemon: Collector, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application()
    app[DAEMON] = daemon
    app[REGISTRY] = registry if registry is not None else make_registry(daemon)
    app.router.add_get("/metrics", make_aiohttp_handler(app[REGISTRY]))
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    """503 when the store does not answer; else 200, "ok" or "degraded" (refused rows in
    the quarantine, writes failing); with the flush backlog either way."""
    daemon = request.app[DAEMON]
    body = await daemon.writer.health()
    status = 200
    try:
        await daemon.store.ping()
    except StoreError as exc:
        body.update(status="unavailable", error=str(exc))
        status = 503
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def start_admin(config: AdminConfig, daemon: Collector) -> web.AppRunner | None:
    """Start the admin listener if ``config.port`` is set; the caller cleans it up."""
    if config.port is None:
        return None
    runner = web.AppRunner(make_admin_app(daemon), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    for address in runner.addresses:
        log.info("admin endpoints /metrics and /healthz on %s:%d", *address[:2])
    return runner
