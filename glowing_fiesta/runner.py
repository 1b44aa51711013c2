"""Process wiring: open the store, start the collector and/or the HTTP service, wait
for SIGTERM/SIGINT, shut down in order (HTTP first, then the collector's final flush).

Every write goes through one durable writer per process (``store.durable``): ``run``
makes one and hands it to both the collector and the HTTP service, and closes it once
both have stopped; ``collector`` and ``serve`` each let their one service make its own.
HTTP ingest acknowledges a batch the database cannot take once it is in a local spool,
so a process with HTTP opens its spool at start-up, in the state directory (role
``collector`` for ``run``, ``http`` for ``serve``); it takes back a spool a killed
process left behind. The spool closes after the writer (an empty spool file is
deleted)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop
from aiohttp import web

from alerts.evaluator import Evaluator
from collector.admin import AdminConfig, start_admin
from collector.daemon import Collector, new_writer
from collector.metrics import SelfMetrics
from collector.stats import CollectorStats
from glowing_fiesta.config import Config, is_loopback
from glowing_fiesta.notify import Notifier
from query.app import make_app
from query.dashboard import FIRST_RUN, FirstRunLogin, first_run_code
from store import StoreError, StoreUnavailable, open_store
from store.durable import DurableWriter, new_writer_id
from store.spool import Spool

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
    notifier: Notifier | None = None,
    admin: AdminConfig | None = None,
    reuse_port: bool = False,
    worker: int | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status.

    ``notifier`` reports to systemd: READY=1 once the sockets are bound and the store
    has answered, STOPPING=1 on the way out, watchdog pings from a task on this loop.
    ``admin`` (collector only): the admin listener and --self-metrics.
    ``reuse_port``/``worker``: one of the --workers processes (glowing_fiesta.workers).
    """
    notifier = notifier or Notifier()
    admin = admin or config.admin
    notifier.status("starting: opening the database")
    store = open_store(config.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    daemon: Collector | None = None
    http_runner: web.AppRunner | None = None
    admin_runner: web.AppRunner | None = None
    self_metrics: asyncio.Task[None] | None = None
    spool: Spool | None = None
    writer: DurableWriter | None = None  # shared by collector and HTTP (``run``)
    # The alert evaluator runs beside the HTTP service (one per database by lease).
    evaluator = (Evaluator(store, config.alerts, config.alerts.base_url or "")
                 if http and config.alerts.enabled else None)
    alerts_stop = asyncio.Event()
    alerts_task: asyncio.Task[None] | None = None
    watchdog = asyncio.create_task(notifier.run_watchdog())
    try:
        migrated = True
        try:
            applied = await store.migrate()
        except StoreError as exc:
            if not (collector and isinstance(exc, StoreUnavailable)):
                log.error("cannot open the database %s: %s", store.url_for_logs, exc)
                return 1
            # The collector starts anyway: it spools and migrates once the database answers.
            log.warning("database %s unreachable (%s): starting anyway; the collector "
                        "spools and retries the migration", store.url_for_logs, exc)
            applied, migrated = [], False
        if applied:
            log.info("applied migrations %s to %s", applied, store.url_for_logs)
        try:
            if http:  # acknowledged HTTP points must survive an outage: SpoolError is OSError
                spool = await Spool.open(
                    config.http.state_dir, "collector" if collector else "http",
                    max_bytes=config.collector.spool_max_bytes)
                if spool.batches:
                    log.info("spool %s holds %d batch(es) (%d rows) from an earlier run; "
                             "they are written first",
                             spool.path, spool.batches, spool.rows)
            if collector:
                stats = None
                if http:
                    stats = CollectorStats()
                    writer = new_writer(store, config.collector, new_writer_id("collector"),
                                        stats, store_ready=migrated, spool=spool)
                    writer.start()
                daemon = Collector(config.collector, store, migrated=migrated,
                                   reuse_port=reuse_port, writer=writer, stats=stats)
                await daemon.startup()
                admin_runner = await start_admin(admin, daemon)
                if admin.self_metrics:
                    self_metrics = asyncio.create_task(
                        SelfMetrics(daemon).run(config.collector.flush_interval))
            if http:
                code = (await _first_run_code(config, store, migrated)
                        if collector and worker is None else None)
                http_runner = await start_http(
                    config, store, reuse_port=reuse_port, spool=spool, writer=writer,
                    first_run=code, extra_metrics=evaluator.metrics if evaluator else None)
                if evaluator is not None:
                    if not evaluator.base_url:
                        evaluator.base_url = _base_url(config, http_runner)
                    alerts_task = asyncio.create_task(evaluator.run(alerts_stop))
                if code is not None:
                    _print_login_link(config, http_runner, code)
        except OSError as exc:  # a port in use, an address we cannot bind, no spool
            log.error("cannot start: %s", exc)
            return 1
        # What start-up made (modules, classes, the app) lives as long as the process: left
        # in the collector's generations, each full collection walked its ~80,000 objects
        # again. Python's GC took 5-8% of the daemon's CPU on the realistic mix over UDP,
        # 1-3% frozen (gf_collector_gc_seconds_total; docs/performance.md).
        gc.freeze()
        if worker is None:
            log.info("ready")
        else:  # the parent says "ready" once every worker is
            log.info("worker %d ready", worker)
        where = _listening(daemon, http_runner, admin_runner)
        # A collector whose database is down is ready all the same: it takes lines and
        # spools them (waiting for the database would lose them).
        notifier.ready(f"ready: {where}" if migrated
                       else f"ready, database unreachable (spooling): {where}")
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("stopping")
        notifier.stopping("stopping: draining sockets, final flush")
        return 0
    finally:
        # The handlers stay until the end: a second SIGTERM or Ctrl-C during the
        # shutdown must not kill the process before its final flush (the default
        # action would), it only sets ``stop`` again.
        if alerts_task is not None:  # gives the lease up: another process takes over
            alerts_stop.set()
            await asyncio.gather(alerts_task, return_exceptions=True)
        if http_runner is not None:
            await http_runner.cleanup()  # before the store closes: it may be writing
        if self_metrics is not None:
            self_metrics.cancel()
        if daemon is not None:
            await daemon.shutdown()
        if admin_runner is not None:
            await admin_runner.cleanup()
        if writer is not None:  # after HTTP and the final cut: both hand it batches
            await writer.close(config.collector.shutdown_flush_timeout)
        if spool is not None:  # after the writer: it may spool
            await spool.close()
        await store.close()
        watchdog.cancel()  # pinging until here: the final flush may take a while
        await asyncio.gather(watchdog, *filter(None, [self_metrics]), return_exceptions=True)
        notifier.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _listening(
    daemon: Collector | None, http_runner: web.AppRunner | None,
    admin_runner: web.AppRunner | None,
) -> str:
    """Where we listen, for systemd's STATUS= line (``systemctl status``)."""
    where: list[tuple[str, Any]] = []
    if daemon is not None:
        where += [("UDP", daemon.udp_address), ("TCP", daemon.tcp_address)]
    for label, runner in (("HTTP", http_runner), ("admin", admin_runner)):
        if runner is not None:
            where += [(label, address) for address in runner.addresses]
    return ", ".join(f"{label} {a[0]}:{a[1]}" for label, a in where if a is not None)


async def start_http(
    config: Config, store: Any, *, reuse_port: bool = False, spool: Spool | None = None,
    writer: DurableWriter | None = None, first_run: str | None = None,
    extra_metrics: Callable[[], dict[str, tuple[str, float]]] | None = None,
) -> web.AppRunner:
    """The HTTP service, listening. ``spool``/``writer``/``extra_metrics``: see ``make_app``.
    ``first_run``: the dashboard's one-time login code (``query.dashboard``)."""
    http = config.http
    app = make_app(http, store, spool=spool, writer=writer, extra_metrics=extra_metrics)
    if first_run is not None:
        app[FIRST_RUN] = FirstRunLogin(first_run)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = None
    if http.tls_cert is not None and http.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(http.tls_cert, http.tls_key)
    site = web.TCPSite(runner, http.host, http.port, ssl_context=ssl_context, backlog=1024,
                       reuse_port=reuse_port or None)
    await site.start()
    for address in runner.addresses:
        log.info("listening on HTTP%s %s:%d", "S" if ssl_context else "", *address[:2])
    return runner


async def _first_run_code(config: Config, store: Any, migrated: bool) -> str | None:
    """The dashboard's first-run login: only on loopback (never open a way in without a
    key elsewhere), and only while no key named ``dashboard`` exists."""
    if not migrated or not is_loopback(config.http.host):
        return None
    try:
        return await first_run_code(store)
    except StoreError as exc:
        log.warning("dashboard first-run login skipped: %s", exc)
        return None


def _base_url(config: Config, runner: web.AppRunner) -> str:
    """The dashboard's address for notification links (``--alert-base-url`` overrides)."""
    host, port = runner.addresses[0][:2]
    scheme = "https" if config.http.tls_cert is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _print_login_link(config: Config, runner: web.AppRunner, code: str) -> None:
    """To the terminal, not the log: the code is a credential (one use, this process)."""
    host, port = runner.addresses[0][:2]
    scheme = "https" if config.http.tls_cert is not None else "http"
    where = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"\nDashboard: open {scheme}://{where}:{port}/login#code={code}\n"
        "  (a one-time login link: its first use creates the read key 'dashboard')\n\n")
    sys.stderr.flush()
