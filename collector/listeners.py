"""Thin asyncio protocol classes: move bytes to the aggregator, count, never raise."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import mmap
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from collector.config import CollectorConfig
from collector.stats import DROP_LOG_INTERVAL, CollectorStats, LogLimiter
from collector.stats import log as drops_log
from protocol.framing import LineBuffer
from protocol.lines import Reason

log = logging.getLogger(__name__)

recv_datagrams: Callable[[Any, Any, int], tuple[bytes, int, int]] | None
try:
    from collector import _fastfeed
except ImportError:  # not built: asyncio's DatagramProtocol, same results
    recv_datagrams = None
else:  # not on Linux either
    recv_datagrams = getattr(_fastfeed, "recv_datagrams", None)

# A whole datagram always fits a slot (UDP carries at most 65,507 bytes). The slots are
# an anonymous mapping, so they cost memory only where datagrams land (a bytearray
# would be zero-filled: 4 MiB resident per listener).
UDP_SLOT_BYTES: Final = 65_536
UDP_SLOTS: Final = 64  # datagrams per recvmmsg call, and per feed call
# Bytes read per readable event before the loop runs its other callbacks (timers, TCP,
# HTTP): ~190 packed datagrams, a few milliseconds of parsing.
UDP_READ_BUDGET: Final = 256 * 1024

# Not exported by Python's socket module; the Linux value.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class LineSink(Protocol):
    """Where a listener hands the bytes it received: the Aggregator (StatsD lines), or
    collector.carbon.CarbonFeed (Graphite's plaintext lines)."""

    def feed(self, data: bytes, now: int) -> None: ...


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, aggregator: LineSink, stats: CollectorStats) -> None:
        self.aggregator = aggregator
        self.stats = stats
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.datagrams += 1
        try:
            self.aggregator.feed(data, int(time.time()))
        except Exception:  # a bug must cost one datagram, not the daemon
            log.exception("unexpected error handling a datagram; dropped")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class UdpReader:
    """Reads a bound UDP socket with recvmmsg: one system call, one bytes object and one
    feed call per up to UDP_SLOTS datagrams (joined: collector/_fastfeed.c). Per
    datagram, UdpProtocol costs a callback, a bytes object, an address tuple and a feed
    call, ~3 us: most of the daemon's cost of a one-line datagram."""

    def __init__(self, sock: socket.socket, sink: LineSink, stats: CollectorStats) -> None:
        assert recv_datagrams is not None
        self.sock = sock
        self.sink = sink
        self.stats = stats
        self._buffer = mmap.mmap(-1, UDP_SLOT_BYTES * UDP_SLOTS)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        recv = recv_datagrams
        assert recv is not None
        received = 0
        while received < UDP_READ_BUDGET:
            try:
                data, count, truncated = recv(self.sock, self._buffer, UDP_SLOT_BYTES)
            except OSError as exc:  # e.g. ECONNREFUSED after an ICMP error: nothing lost
                log.debug("UDP socket error: %s", exc)
                return
            if not count:
                return
            self.stats.datagrams += count
            if truncated:  # cannot happen with UDP_SLOT_BYTES slots; counted if it does
                self.stats.drop(Reason.TOO_LONG, truncated, b"<datagram over 64 KiB>")
            received += len(data)
            try:
                self.sink.feed(data, int(time.time()))
            except Exception:  # a bug must cost one read's datagrams, not the daemon
                log.exception("unexpected error handling %d datagrams; dropped", count)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()
        self._buffer.close()


async def listen_udp(sock: socket.socket, sink: LineSink,
                     stats: CollectorStats) -> UdpReader | asyncio.BaseTransport:
    """Start reading ``sock`` (bound by bind_udp) into ``sink``: with recvmmsg where the C
    accelerator is built, else with asyncio's DatagramProtocol. The answer's close()
    stops reading and closes the socket."""
    if recv_datagrams is not None:
        reader = UdpReader(sock, sink, stats)
        reader.start()
        return reader
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: UdpProtocol(sink, stats), sock=sock
    )
    return transport


class TcpProtocol(asyncio.Protocol):
    """One newline-delimited stream of lines."""

    def __init__(
        self,
        aggregator: LineSink,
        stats: CollectorStats,
        config: CollectorConfig,
        connections: set[TcpProtocol],
        limited_log: LogLimiter,
    ) -> None:
        self.aggregator = aggregator
        self.stats = stats
        self.config = config
        self.connections = connections
        self.buffer = LineBuffer(config.max_line_length)
        self.transport: asyncio.Transport | None = None
        self.last_active = time.monotonic()
        self.limited_log = limited_log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.connections) >= self.config.max_tcp_connections:
            self.stats.tcp_refused += 1
            log.warning("refusing TCP connection: %d open (--max-tcp-connections)",
                        len(self.connections))
            transport.close()
            return
        self.connections.add(self)
        self.stats.tcp_connections += 1

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.stats.tcp_chunks += 1
        try:
            framed = self.buffer.feed(data)
            if framed.overlong:
                self.stats.lines += framed.overlong
                self.stats.drop(Reason.TOO_LONG, framed.overlong, data[:120])
            # An over-long line that ended inside this chunk is counted by the parser.
            too_long = self.stats.drops[Reason.TOO_LONG]
            if framed.complete:
                self.aggregator.feed(framed.complete, int(time.time()))
            if framed.overlong or self.stats.drops[Reason.TOO_LONG] != too_long:
                self._close_too_long()
        except Exception:
            log.exception("unexpected error handling TCP data; dropped")

    def eof_received(self) -> bool:
        try:
            tail = self.buffer.finish()  # a last line without "\n" still counts
            if tail:
                self.aggregator.feed(tail, int(time.time()))
        except Exception:  # as in data_received: the connection closes, the daemon lives
            log.exception("unexpected error handling the end of a TCP stream; dropped")
        return False

    def _close_too_long(self) -> None:
        """A peer that breaks framing is closed (STYLE.md): the complete lines it sent
        up to here are kept (each line stands alone), nothing after is read."""
        self.stats.tcp_closed_too_long += 1
        self.limited_log.log(
            "too-long", logging.WARNING,
            "closed a TCP connection that sent a line over --max-line-length (%d bytes)",
            self.config.max_line_length,
        )
        self.buffer = LineBuffer(self.config.max_line_length)  # nothing more is framed
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def bind_udp(host: str, port: int, rcvbuf: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound UDP socket with the largest receive buffer we can get.

    UDP loss happens in the kernel when this buffer overflows while we are busy, so we
    ask for ``rcvbuf`` bytes: SO_RCVBUFFORCE (root or CAP_NET_ADMIN) passes the
    net.core.rmem_max cap, SO_RCVBUF is capped by it. The granted size is logged.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except (PermissionError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux doubles
        if granted < rcvbuf:
            log.warning(
                "UDP receive buffer is %d bytes, asked for %d: raise the cap with "
                "`sysctl -w net.core.rmem_max=%d` (or run with CAP_NET_ADMIN)",
                granted, rcvbuf, rcvbuf,
            )
        else:
            log.info("UDP receive buffer: %d bytes", granted)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bytes_waiting(sock: Any) -> int:
    """Bytes the kernel holds for ``sock`` that we have not read (FIONREAD).

    For UDP this is the size of the next datagram, so 0 means the queue is empty.
    """
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.ENOTCONN, errno.EINVAL):
            return 0
        raise
    return int(struct.unpack("i", raw)[0])


def udp_kernel_drops(sock: Any) -> int | None:
    """The kernel's drop counter for our UDP socket, from /proc/net/udp{,6}.

    Counts datagrams lost because the receive buffer was full (before we could read
    them). None where /proc is not available.
    """
    row = _proc_net_row(sock, ("/proc/net/udp", "/proc/net/udp6"))
    return None if row is None else int(row[12])


class KernelDropLog:
    """Logs the datagrams the kernel dropped for our UDP socket (receive buffer full),
    like every other drop: at most one line per DROP_LOG_INTERVAL, saying how many
    since the last line. ``check()`` is called every second or so (a /proc read)."""

    def __init__(self, sock: Any, interval: float = DROP_LOG_INTERVAL) -> None:
        self.sock = sock
        self.interval = interval
        self._seen = udp_kernel_drops(sock) or 0
        self._unlogged = 0
        self._last_logged = -interval

    def check(self) -> None:
        total = udp_kernel_drops(self.sock)
        if total is None:
            return
        self._unlogged += max(0, total - self._seen)
        self._seen = total
        now = time.monotonic()
        if self._unlogged and now - self._last_logged >= self.interval:
            self._last_logged = now
            drops_log.warning(
                "the kernel dropped %d datagram(s) for our UDP socket (%d since start): "
                "its receive buffer was full; raise --udp-rcvbuf and net.core.rmem_max",
                self._unlogged, total,
            )
            self._unlogged = 0


def accept_backlog(sock: Any) -> int:
    """Connections the kernel has completed for a listening TCP socket that we have not
    accept()ed yet (rx_queue of a LISTEN row in /proc/net/tcp{,6}); 0 if unknown.

    At shutdown their data is as "received" as any other: a client that connected and
    sent before the signal must not be reset by closing the listener under it.
    """
    row = _proc_net_row(sock, ("/proc/net/tcp", "/proc/net/tcp6"))
    if row is None or row[3] != "0A":  # 0A: LISTEN
        return 0
    return int(row[4].split(":")[1], 16)


def _proc_net_row(sock: Any, tables: tuple[str, ...]) -> list[str] | None:
    """The fields of ``sock``'s row in a /proc/net socket table (found by its inode),
    or None where /proc is not available."""
    try:
        inode = os.readlink(f"/proc/self/fd/{sock.fileno()}").removeprefix(
            "socket:[").rstrip("]")
    except OSError:
        return None
    for table in tables:
        try:
            with open(table) as handle:
                next(handle)
                for row in handle:
                    fields = row.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return fields
        except OSError:
            continue
    return None
