"""The collector daemon: startup() -> serve() -> shutdown().

Shutdown order matters for "nothing received is lost": stop accepting new TCP
connections, keep reading until the kernel holds nothing more for our sockets (or
drain_timeout passes), close the sockets, then flush everything to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from collector.aggregator import KEY_BAD, KEY_OK, KEY_UNKNOWN, Aggregator
from collector.config import CollectorConfig
from collector.flusher import Flusher, new_writer_id
from collector.listeners import (
    TcpProtocol,
    UdpProtocol,
    bind_udp,
    bytes_waiting,
    udp_kernel_drops,
)
from collector.stats import CollectorStats
from store.base import ApiKey, Store, StoreError
from store.keycache import KeyCache, usable

log = logging.getLogger(__name__)

KEY_RETRY_DELAY = 1.0  # seconds between key lookups while the store is unreachable


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        store: Store,
        *,
        writer_id: str | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.reuse_port = reuse_port
        self.stats = CollectorStats()
        self.keys = KeyCache(store, config.key_cache_ttl)
        self.aggregator = Aggregator(
            config, self.stats, key_check=self._key_check, on_unknown_key=self._look_up_key
        )
        self.flusher = Flusher(
            store, self.aggregator, config, self.stats, writer_id or new_writer_id("collector")
        )
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_socket: Any = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_connections: set[TcpProtocol] = set()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # key lookups
        self._flush_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def startup(self) -> None:
        """Bind the sockets and start flushing. Raises OSError if a port is taken."""
        loop = asyncio.get_running_loop()
        config = self.config
        if config.udp_port is not None:
            sock = bind_udp(config.host, config.udp_port, config.udp_rcvbuf,
                            reuse_port=self.reuse_port)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self.aggregator, self.stats), sock=sock
            )
            self._udp_transport = transport
            self._udp_socket = transport.get_extra_info("socket")
            self.udp_address = transport.get_extra_info("sockname")[:2]
            log.info("listening on UDP %s:%d", *self.udp_address)
        if config.tcp_port is not None:
            self._tcp_server = await loop.create_server(
                lambda: TcpProtocol(self.aggregator, self.stats, config, self._tcp_connections),
                config.host,
                config.tcp_port,
                reuse_port=self.reuse_port or None,
                backlog=1024,
            )
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
            log.info("listening on TCP %s:%d", *self.tcp_address)
        self._flush_task = asyncio.create_task(self.flusher.run(self._stopping))
        self._sweeper = asyncio.create_task(self._close_idle_connections())

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (by a signal handler), then shut down."""
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop intake, drain the sockets, final flush. Idempotent."""
        if self._stopping.is_set():
            return
        log.info("collector shutting down: draining sockets")
        if self._tcp_server is not None:
            self._tcp_server.close()  # no new connections
        await self._drain()
        if self._udp_transport is not None:
            self._udp_transport.close()
        for connection in list(self._tcp_connections):
            connection.close()
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
        self._stopping.set()
        if self._flush_task is not None:
            await self._flush_task
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._final_flush()
        for task in self._tasks:  # key lookups that never answered
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        while time.monotonic() < deadline:
            if await self.flusher.flush(force=True):
                log.info("final flush done: %d rows flushed in total", self.stats.rows_flushed)
                return
            await asyncio.sleep(0.2)
        log.error(
            "shutdown: %d batch(es) (%d rows) could not be flushed",
            len(self.flusher.pending), self.flusher.pending_rows,
        )

    # -- keys ------------------------------------------------------------------

    def _key_check(self, token: str) -> int:
        found = self.keys.peek(token)
        if found is KeyCache.MISSING or not (found is None or isinstance(found, ApiKey)):
            return KEY_UNKNOWN
        return KEY_OK if usable(found, "write") else KEY_BAD

    def _look_up_key(self, token: str) -> None:
        self._spawn(self._resolve_key(token))

    async def _resolve_key(self, token: str) -> None:
        while True:
            try:
                key = await self.keys.get(token)
            except StoreError as exc:
                log.warning("key lookup failed (%s); samples held, retrying", exc)
                await asyncio.sleep(KEY_RETRY_DELAY)
                continue
            self.aggregator.release_key(token, usable(key, "write"))
            return

    # -- housekeeping ----------------------------------------------------------

    async def _close_idle_connections(self) -> None:
        timeout = self.config.tcp_idle_timeout
        while True:
            await asyncio.sleep(min(timeout, 1.0))
            cutoff = time.monotonic() - timeout
            for connection in list(self._tcp_connections):
                if connection.last_active < cutoff:
                    self.stats.tcp_idle_closed += 1
                    connection.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def kernel_drops(self) -> int | None:
        return None if self._udp_socket is None else udp_kernel_drops(self._udp_socket)
