"""The collector daemon: startup() -> serve() -> shutdown().

Shutdown order matters for "nothing received is lost": stop accepting new TCP
connections, keep reading until the kernel holds nothing more for our sockets (or
drain_timeout passes), close the sockets, then flush everything to the store, or to
the spool when the store cannot take it.

The database may be down at start-up: the collector binds its sockets anyway, spools,
and retries the schema migration in the background (``migrated=False``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from collector.aggregator import KEY_BAD, KEY_OK, KEY_UNKNOWN, Aggregator
from collector.carbon import CarbonListener
from collector.config import CollectorConfig
from collector.flusher import Flusher
from collector.listeners import (
    KernelDropLog,
    LineSink,
    TcpProtocol,
    UdpReader,
    accept_backlog,
    bind_udp,
    bytes_waiting,
    listen_udp,
    udp_kernel_drops,
)
from collector.retention import run_retention
from collector.stats import CollectorStats, GcClock, LogLimiter
from store.base import ApiKey, Store, StoreError
from store.durable import DurableWriter, new_writer_id
from store.keycache import KeyCache, usable
from store.spool import Quarantine, Spool

log = logging.getLogger(__name__)

KEY_RETRY_DELAY = 1.0  # seconds before a key lookup is retried, store unreachable
KEY_RETRY_MAX = 30.0  # ... doubling up to this
# Unauthenticated input must not buy unbounded database work: at most this many key
# lookups run at once, and at most MAX_KEY_LOOKUPS_WAITING distinct tokens wait for
# one; a line whose token would be one more is dropped (overload, counted).
MAX_KEY_LOOKUPS = 8
MAX_KEY_LOOKUPS_WAITING = 256
MIGRATE_RETRY_MAX = 30.0  # seconds between migration attempts, at most


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        store: Store,
        *,
        writer_id: str | None = None,
        reuse_port: bool = False,
        writer: DurableWriter | None = None,
        stats: CollectorStats | None = None,
        migrated: bool = True,
    ) -> None:
        """``writer``: the process's durable writer, shared with its HTTP service (its
        owner starts and closes it; ``stats`` must then be the writer's). None: the
        collector makes its own, with ``spool-collector.sqlite`` in
        ``config.state_dir`` (taken at start-up if a dead process left it, else created
        when first needed) and the quarantine there.
        ``migrated=False``: the schema migration failed at start-up; retry it."""
        self.config = config
        self.store = store
        self.reuse_port = reuse_port
        self.stats = stats if stats is not None else CollectorStats()
        self.stats.store_ready = int(migrated)
        self._owns_writer = writer is None
        if writer is None:
            writer = new_writer(store, config, writer_id or new_writer_id("collector"),
                                self.stats, store_ready=migrated)
        self.writer = writer
        self._limited_log = LogLimiter(log)
        self.keys = KeyCache(store, config.key_cache_ttl, max_concurrent=MAX_KEY_LOOKUPS)
        self._lookups_waiting: set[str] = set()  # tokens with a lookup task
        self.aggregator = Aggregator(
            config, self.stats, key_check=self._key_check, on_unknown_key=self._look_up_key
        )
        self.flusher = Flusher(self.aggregator, config, self.stats, writer)
        writer.on_conflicts = self.flusher.count_conflicts
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self._udp_listener: UdpReader | asyncio.BaseTransport | None = None
        self._udp_socket: socket.socket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_connections: set[TcpProtocol] = set()
        self._stopping = asyncio.Event()
        self._shutting_down = False
        self.gc_clock = GcClock()  # timed from startup to shutdown
        self._tasks: set[asyncio.Task[None]] = set()  # key lookups
        self._flush_task: asyncio.Task[None] | None = None
        self._housekeeping: list[asyncio.Task[None]] = []  # cancelled at shutdown
        self.carbon = (None if config.carbon_port is None
                       else CarbonListener(config, self.aggregator, self.stats))

    # -- lifecycle -------------------------------------------------------------

    async def startup(self) -> None:
        """Open the spool, bind the sockets and start flushing.

        Raises OSError if a port is taken or the spool cannot be opened (SpoolError).
        """
        loop = asyncio.get_running_loop()
        config = self.config
        writer = self.writer
        if self._owns_writer:
            writer.spool = await Spool.open_existing(
                config.state_dir, "collector", max_bytes=config.spool_max_bytes
            )
            writer.open_spool = lambda: Spool.open(
                config.state_dir, "collector", max_bytes=config.spool_max_bytes
            )
            writer.update_gauges()
            if writer.spool is not None and writer.spool.batches:
                log.info("spool %s holds %d batch(es) (%d rows) from an earlier run; "
                         "they are written first", writer.spool.path, writer.spool.batches,
                         writer.spool.rows)
            writer.start()
        # Gauges' current values first, so a delta on the first lines applies to them.
        restored = writer.store_ready.is_set() and await self._restore_gauges()
        if config.udp_port is not None:
            sock = bind_udp(config.host, config.udp_port, config.udp_rcvbuf,
                            reuse_port=self.reuse_port)
            self._udp_listener = await listen_udp(sock, self.aggregator, self.stats)
            self._udp_socket = sock
            self.udp_address = sock.getsockname()[:2]
            log.info("listening on UDP %s:%d", *self.udp_address)
        if config.tcp_port is not None:
            self._tcp_server = await loop.create_server(
                self._tcp_protocol,
                config.host,
                config.tcp_port,
                reuse_port=self.reuse_port or None,
                backlog=1024,
            )
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
            log.info("listening on TCP %s:%d", *self.tcp_address)
        if self.carbon is not None:
            carbon_feed = self.carbon.feed
            await self.carbon.start(lambda: self._tcp_protocol(carbon_feed),
                                    reuse_port=self.reuse_port)
        self._flush_task = asyncio.create_task(self.flusher.run(self._stopping))
        self._housekeeping.append(asyncio.create_task(self._close_idle_connections()))
        if config.metric_idle_ttl > 0:
            self._housekeeping.append(asyncio.create_task(self._evict_idle_names()))
        if self._udp_socket is not None:
            self._housekeeping.append(asyncio.create_task(
                self._log_kernel_drops(KernelDropLog(self._udp_socket))))
        if not self.writer.store_ready.is_set():
            self._housekeeping.append(asyncio.create_task(self._migrate_until_done()))
        if not restored:
            self._housekeeping.append(asyncio.create_task(self._restore_gauges_later()))
        if config.retention_interval > 0:
            self._housekeeping.append(asyncio.create_task(run_retention(
                self.store, config, self.stats, self.writer.store_ready, self._stopping
            )))
        self.gc_clock.start()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (by a signal handler), then shut down."""
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop intake, drain the sockets, final flush (or spool). Idempotent.

        Takes at most about drain_timeout + flush_timeout + shutdown_flush_timeout.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        log.info("collector shutting down: draining sockets")
        if self.carbon is not None:
            await self.carbon.stop_intake(self.config.drain_timeout / 2)
        if self._tcp_server is not None:
            await self._accept_pending()
            self._tcp_server.close()  # no new connections
        await self._drain()
        if self._udp_listener is not None:
            self._udp_listener.close()
        for connection in list(self._tcp_connections):
            connection.close()
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
        if self.carbon is not None:
            await self.carbon.wait_closed()
        self._stopping.set()
        for task in self._housekeeping:
            task.cancel()
        await asyncio.gather(*self._housekeeping, return_exceptions=True)
        if self._flush_task is not None:
            await self._flush_task  # returns after the write in progress
        await self._final_flush()
        for task in self._tasks:  # key lookups that never answered
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_writer and self.writer.spool is not None:
            await self.writer.spool.close()
        self.gc_clock.stop()

    async def _accept_pending(self) -> None:
        """Accept the connections already queued on the listener before closing it
        (closing would reset them, losing lines their clients sent before the signal)."""
        assert self._tcp_server is not None
        deadline = time.monotonic() + self.config.drain_timeout / 2
        listeners = list(self._tcp_server.sockets)
        while time.monotonic() < deadline:
            if not any(accept_backlog(sock) for sock in listeners):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # let connection_made run for the last accepted ones

    async def _drain(self) -> None:
        """Keep reading while the kernel still holds data for our sockets."""
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline:
            sockets = [self._udp_socket] if self._udp_socket is not None else []
            sockets += [
                c.transport.get_extra_info("socket")
                for c in self._tcp_connections
                if c.transport is not None
            ]
            if not any(bytes_waiting(sock) for sock in sockets if sock is not None):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # let the last-read data callbacks run

    async def _final_flush(self) -> None:
        # Samples still waiting for a key lookup: give the lookups a moment.
        deadline = time.monotonic() + self.config.shutdown_flush_timeout
        if self.aggregator.held and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.shutdown_flush_timeout / 2)
        await self.flusher.cut(force=True)
        if self._owns_writer:  # else its owner closes it, once every producer stopped
            await self.writer.close(max(0.5, deadline - time.monotonic()))

    async def _migrate_until_done(self) -> None:
        """The database was down at start-up: migrate as soon as it answers."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                applied = await self.store.migrate()
            except StoreError as exc:
                delay = min(MIGRATE_RETRY_MAX, delay * 2)
                log.warning("database %s still unreachable (%s); ingest is held in memory "
                            "and the spool; next try in %.0fs",
                            self.store.url_for_logs, exc, delay)
                continue
            log.info("database %s reachable: migrations %s applied; flushing",
                     self.store.url_for_logs, applied or "none needed")
            self.stats.store_ready = 1
            self.writer.mark_store_ready()
            return

    async def _restore_gauges(self) -> bool:
        """The gauges' last values from the store (Aggregator.restore_gauges); False
        if the store did not answer within --flush-timeout."""
        try:
            lasts = await asyncio.wait_for(self.store.gauge_lasts(),
                                           timeout=self.config.flush_timeout)
        except (StoreError, TimeoutError) as exc:
            log.warning("could not read the gauges' last values from %s (%s); retrying "
                        "in the background (until then a gauge delta sets an unseen "
                        "gauge)", self.store.url_for_logs, exc or "timeout")
            return False
        restored = self.aggregator.restore_gauges(lasts)
        if lasts:
            log.info("restored %d gauge value(s) of %d from the store", restored, len(lasts))
        return True

    async def _restore_gauges_later(self) -> None:
        """The store was not ready (or did not answer) at start-up: restore as soon as
        it does, with backoff."""
        delay = 1.0
        while True:
            await self.writer.store_ready.wait()
            if await self._restore_gauges():
                return
            await asyncio.sleep(delay)
            delay = min(MIGRATE_RETRY_MAX, delay * 2)

    # -- keys ------------------------------------------------------------------

    def _key_check(self, token: str) -> int:
        found = self.keys.peek(token)
        if found is KeyCache.MISSING or not (found is None or isinstance(found, ApiKey)):
            return KEY_UNKNOWN
        return KEY_OK if usable(found, "write") else KEY_BAD

    def _look_up_key(self, token: str) -> bool:
        """Start a lookup for ``token``; False if MAX_KEY_LOOKUPS_WAITING are waiting."""
        if len(self._lookups_waiting) >= MAX_KEY_LOOKUPS_WAITING:
            self.stats.key_lookups_shed += 1
            return False
        self._lookups_waiting.add(token)
        self._spawn(self._resolve_key(token))
        return True

    async def _resolve_key(self, token: str) -> None:
        """One lookup (KeyCache caps how many run at once; its answer, found or not,
        is cached for --key-cache-ttl). Retried only while the store is unreachable,
        with backoff: the token's samples stay held meanwhile."""
        delay = KEY_RETRY_DELAY
        try:
            while True:
                try:
                    key = await self.keys.get(token)
                except StoreError as exc:
                    self._limited_log.log(
                        "key-lookup", logging.WARNING,
                        "key lookup failed (%s); samples held, retrying in %.0fs", exc, delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(KEY_RETRY_MAX, delay * 2)
                    continue
                self.aggregator.release_key(token, usable(key, "write"))
                return
        finally:
            self._lookups_waiting.discard(token)

    # -- TCP bounds -------------------------------------------------------------

    def _tcp_protocol(self, sink: LineSink | None = None) -> asyncio.Protocol:
        """A protocol for a new connection; past --max-tcp-connections one that closes
        it at once (counted; logged at most every 10 s however hard the flood).
        ``sink``: where its lines go (default: the aggregator, as StatsD lines)."""
        if len(self._tcp_connections) >= self.config.max_tcp_connections:
            return _Refused(self.stats, self._limited_log, self.config.max_tcp_connections)
        return TcpProtocol(sink or self.aggregator, self.stats, self.config,
                           self._tcp_connections, self._limited_log)

    # -- housekeeping ----------------------------------------------------------

    async def _close_idle_connections(self) -> None:
        timeout = self.config.tcp_idle_timeout
        while True:
            await asyncio.sleep(min(timeout, 1.0))
            cutoff = time.monotonic() - timeout
            for connection in list(self._tcp_connections):
                if connection.last_active < cutoff:
                    self.stats.tcp_idle_closed += 1
                    self._limited_log.log(
                        "idle", logging.INFO,
                        "closed a TCP connection idle for %.0fs (--tcp-idle-timeout)", timeout,
                    )
                    connection.close()

    async def _evict_idle_names(self) -> None:
        """Names idle for --metric-idle-ttl leave the --max-metrics count, a slice of
        names per call (Aggregator.evict_idle) so the loop is never held for long."""
        while True:
            busy = self.aggregator.evict_idle()
            await asyncio.sleep(0.01 if busy else 0.25)

    async def _log_kernel_drops(self, watch: KernelDropLog) -> None:
        while True:
            await asyncio.sleep(1.0)
            watch.check()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def kernel_drops(self) -> int | None:
        return None if self._udp_socket is None else udp_kernel_drops(self._udp_socket)

    @property
    def key_lookups_waiting(self) -> int:
        return len(self._lookups_waiting)

    @property
    def open_tcp_connections(self) -> int:
        return len(self._tcp_connections)


def new_writer(
    store: Store, config: CollectorConfig, writer_id: str, stats: CollectorStats,
    *, store_ready: bool = True, spool: Spool | None = None,
) -> DurableWriter:
    """The durable writer of a process with a collector, by the collector's settings."""
    return DurableWriter(
        store.write_batch, writer_id, stats=stats, spool=spool,
        quarantine=Quarantine(config.state_dir),
        write_timeout=config.flush_timeout, spool_after=config.spool_after,
        max_pending_rows=config.max_pending_rows, store_ready=store_ready,
    )


class _Refused(asyncio.Protocol):
    """Closes a connection over --max-tcp-connections before reading anything."""

    def __init__(self, stats: CollectorStats, limited_log: LogLimiter, limit: int) -> None:
        self.stats = stats
        self.limited_log = limited_log
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stats.tcp_refused += 1
        self.limited_log.log(
            "refused", logging.WARNING,
            "refusing TCP connections: %d open (--max-tcp-connections)", self.limit,
        )
        transport.close()
