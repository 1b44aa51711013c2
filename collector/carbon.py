"""The Graphite plaintext (carbon) listener, TCP and UDP on one port (``--carbon-port``).

Built from the StatsD listeners' parts: the same thin protocol classes
(``collector.listeners``), the same TCP framing and line-length bound, the same
connection set (so ``--max-tcp-connections`` and ``--tcp-idle-timeout`` count carbon
connections with the others, and shutdown drains them with the others), and the same
aggregator, so carbon samples take the durable path of every other sample (flush,
retry, spool) and are keyed (``--require-key``) and counted by drop reason alike. Only
the parser differs: ``protocol.carbon``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.listeners import (
    UdpReader,
    accept_backlog,
    bind_udp,
    bytes_waiting,
    listen_udp,
)
from collector.stats import CollectorStats
from protocol.carbon import CarbonParser

log = logging.getLogger(__name__)


class CarbonFeed:
    """Carbon lines -> samples -> the aggregator (a ``listeners.LineSink``)."""

    def __init__(self, config: CollectorConfig, aggregator: Aggregator,
                 stats: CollectorStats) -> None:
        self.aggregator = aggregator
        self.stats = stats
        self.parser = CarbonParser(
            max_line_length=config.max_line_length, max_age=config.retention_raw,
            counter_pattern=config.carbon_counter_pattern,
        )

    def feed(self, data: bytes, now: int) -> None:
        parsed = self.parser.parse(data, now)
        self.stats.carbon_lines += len(parsed.samples) + len(parsed.errors)
        self.aggregator.add_parsed(parsed, now)


class CarbonListener:
    """The carbon TCP server and UDP socket of one collector."""

    def __init__(self, config: CollectorConfig, aggregator: Aggregator,
                 stats: CollectorStats) -> None:
        self.config = config
        self.stats = stats
        self.feed = CarbonFeed(config, aggregator, stats)
        self.tcp_address: tuple[str, int] | None = None
        self.udp_address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._udp_listener: UdpReader | asyncio.BaseTransport | None = None
        self._udp_socket: socket.socket | None = None

    async def start(
        self, tcp_protocol: Callable[[], asyncio.Protocol], *, reuse_port: bool = False
    ) -> None:
        """Bind TCP and UDP on ``carbon_port`` (0: an ephemeral TCP port, and UDP on the
        same number). ``tcp_protocol`` makes the protocol of a new connection (the
        daemon's, which enforces the connection cap). Raises OSError if a port is taken."""
        config = self.config
        port = config.carbon_port
        assert port is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            tcp_protocol, config.host, port, reuse_port=reuse_port or None, backlog=1024,
        )
        self.tcp_address = self._server.sockets[0].getsockname()[:2]
        try:
            sock = bind_udp(config.host, self.tcp_address[1], config.udp_rcvbuf,
                            reuse_port=reuse_port)
            self._udp_listener = await listen_udp(sock, self.feed, self.stats)
        except BaseException:
            self._server.close()
            raise
        self._udp_socket = sock
        self.udp_address = sock.getsockname()[:2]
        log.info("listening on carbon TCP %s:%d", *self.tcp_address)
        log.info("listening on carbon UDP %s:%d", *self.udp_address)

    async def stop_intake(self, within: float) -> None:
        """At shutdown: accept the connections already queued, stop listening, read
        what the UDP socket holds (for at most ``within`` seconds), close it. Open TCP
        connections are drained and closed by the daemon with the others."""
        deadline = time.monotonic() + within
        if self._server is not None:
            sockets = list(self._server.sockets)
            while time.monotonic() < deadline:
                if not any(accept_backlog(s) for s in sockets):
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)  # let connection_made run for the last accepted ones
            self._server.close()
        if self._udp_listener is not None and self._udp_socket is not None:
            while time.monotonic() < deadline:
                if not bytes_waiting(self._udp_socket):
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)  # let the last datagram callbacks run
            self._udp_listener.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
