"""Process wiring: open the store, start the collector and/or the HTTP service, wait
for SIGTERM/SIGINT, shut down in order (HTTP first, then the collector's final flush)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop
from aiohttp import web

from collector.daemon import Collector
from glowing_fiesta.config import Config
from query.app import make_app
from store import StoreError, open_store

log = logging.getLogger("glowing_fiesta")


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (libuv: ~2x the datagram throughput of asyncio's loop)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def run_services(
    config: Config,
    *,
    collector: bool,
    http: bool,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    store = open_store(config.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    daemon: Collector | None = None
    http_runner: web.AppRunner | None = None
    try:
        try:
            applied = await store.migrate()
        except StoreError as exc:
            log.error("cannot open the database %s: %s", store.url_for_logs, exc)
            return 1
        if applied:
            log.info("applied migrations %s to %s", applied, store.url_for_logs)
        try:
            if collector:
                daemon = Collector(config.collector, store)
                await daemon.startup()
            if http:
                http_runner = await start_http(config, store)
        except OSError as exc:  # a port in use, an address we cannot bind
            log.error("cannot start: %s", exc)
            return 1
        log.info("ready")
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("stopping")
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if http_runner is not None:
            await http_runner.cleanup()  # before the store closes: it may be writing
        if daemon is not None:
            await daemon.shutdown()
        await store.close()


async def start_http(config: Config, store: Any) -> web.AppRunner:
    http = config.http
    runner = web.AppRunner(make_app(http, store), access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = None
    if http.tls_cert is not None and http.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(http.tls_cert, http.tls_key)
    site = web.TCPSite(runner, http.host, http.port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    for address in runner.addresses:
        log.info("listening on HTTP%s %s:%d", "S" if ssl_context else "", *address[:2])
    return runner
