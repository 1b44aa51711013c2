"""TCP edge cases with real sockets against a real collector (SQLite store): a peer that
sends a line over --max-line-length breaks framing and is closed (counted), the lines
it sent before are kept, other connections are untouched; the end of a stream is
handled like data (a last unterminated line counts; nothing escapes the callback)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.daemon import Collector
from collector.listeners import TcpProtocol
from collector.stats import CollectorStats, LogLimiter
from protocol.lines import Reason
from store import Store

MAX = 128
BASE = CollectorConfig(host="127.0.0.1", udp_port=None, tcp_port=0, flush_interval=0.05,
                       retention_interval=0, max_line_length=MAX)


@pytest.fixture
async def collector(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Collector]:
    daemon = Collector(replace(BASE, state_dir=tmp_path), sqlite_store)
    await daemon.startup()
    try:
        yield daemon
    finally:
        await daemon.shutdown()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def connect(daemon: Collector) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert daemon.tcp_address is not None
    return await asyncio.open_connection(*daemon.tcp_address)


async def stored_count(store: Store, name: str) -> float:
    info = await store.get_metric(name)
    if info is None:
        return 0
    now = int(time.time())
    return sum(r.cnt for r in await store.read_buckets(info.id, now - 3600, now + 3600, 7200))


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


async def test_an_over_long_line_within_a_chunk_closes_the_connection(
    collector: Collector, sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reader, writer = await connect(collector)
    other_reader, other = await connect(collector)
    writer.write(b"kept:1|c\nkept:1|c\n" + b"x" * (MAX + 1) + b"\n")
    await writer.drain()
    assert await closed_by_peer(reader)
    # Another connection is not affected, before or after.
    other.write(b"other:1|c\n")
    await other.drain()
    await until(lambda: collector.stats.samples == 3)
    assert not other_reader.at_eof()
    assert collector.stats.tcp_closed_too_long == 1
    assert collector.stats.drops[Reason.TOO_LONG] == 1
    writer.close()
    other.close()
    await collector.shutdown()
    assert await stored_count(sqlite_store, "kept") == 2
    assert await stored_count(sqlite_store, "other") == 1
    assert sum("over --max-line-length" in r.getMessage() for r in caplog.records) == 1


async def test_an_unterminated_over_long_line_across_chunks_closes_the_connection(
    collector: Collector, sqlite_store: Store
) -> None:
    reader, writer = await connect(collector)
    writer.write(b"before:1|c\n" + b"y" * 60)
    await writer.drain()
    await until(lambda: collector.stats.samples == 1)
    writer.write(b"y" * 60)  # 120 bytes held: under the cap, still open
    await writer.drain()
    await asyncio.sleep(0.05)
    assert collector.stats.tcp_closed_too_long == 0
    writer.write(b"y" * 60)  # 180: over it, no newline in sight
    await writer.drain()
    assert await closed_by_peer(reader)
    assert collector.stats.tcp_closed_too_long == 1
    assert collector.stats.drops[Reason.TOO_LONG] == 1
    assert collector.stats.lines == 2
    writer.close()


async def test_a_line_exactly_at_the_cap_with_crlf_keeps_the_connection(
    collector: Collector,
) -> None:
    reader, writer = await connect(collector)
    line = b"n:1|c"
    exact = b"a" * (MAX - len(line)) + line  # MAX bytes, then "\r\n"
    writer.write(exact + b"\r")
    await writer.drain()
    await asyncio.sleep(0.05)  # the "\r" alone past the cap is not over it
    writer.write(b"\nafter:1|c\n")
    await writer.drain()
    await until(lambda: collector.stats.samples == 2)
    assert collector.stats.tcp_closed_too_long == 0
    assert not reader.at_eof()
    writer.close()


@pytest.mark.parametrize("tail", [
    b"last:1|c",  # a good last line without "\n": stored
    b"\xff\xfe\x00garbage",  # bytes that are no line at all
    b"gf_" + b"A" * 32 + b".k:1|c",  # an unknown key, looked up after the EOF
    b"z" * (MAX + 50),  # over the cap, at the very end: closed for it, nothing kept
    b"big:" + b"9" * 100 + b"|c",
])
async def test_the_end_of_a_stream_is_handled_like_data(
    collector: Collector, sqlite_store: Store, tail: bytes
) -> None:
    reader, writer = await connect(collector)
    writer.write(b"first:1|c\n" + tail)
    await writer.drain()
    writer.write_eof()  # half-close: eof_received
    assert await closed_by_peer(reader)
    await until(lambda: collector.open_tcp_connections == 0)
    writer.close()
    await collector.shutdown()
    stats = collector.stats
    assert stats.samples + stats.dropped == stats.lines == 2, (stats.samples, stats.drops)
    assert await stored_count(sqlite_store, "first") == 1
    assert await stored_count(sqlite_store, "last") == (1 if tail == b"last:1|c" else 0)


class FailingAggregator(Aggregator):
    """A bug at the end of a stream (hand-written: what the callback must survive)."""

    def feed(self, data: bytes, now: int) -> None:
        raise RuntimeError("a bug")


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_bug_at_eof_does_not_escape_the_callback(caplog: pytest.LogCaptureFixture) -> None:
    stats = CollectorStats()
    connections: set[TcpProtocol] = set()
    protocol = TcpProtocol(FailingAggregator(BASE, stats), stats, BASE, connections,
                           LogLimiter(logging.getLogger("test")))
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"partial:1|c")  # no newline: held
    with caplog.at_level(logging.ERROR):
        assert protocol.eof_received() is False  # the transport closes the connection
    assert "end of a TCP stream" in caplog.text
    protocol.data_received(b"a:1|c\n")  # the same bug in data_received: logged too
    assert caplog.text.count("RuntimeError: a bug") == 2
