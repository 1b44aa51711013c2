"""Every resource bound: what passes it is dropped and counted, and logged at most once
per 10 s however hard it is hit; what stays inside is stored exactly.

The real collector on ephemeral ports, real sockets, a real SQLite store.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.lines import Reason
from store import Store

BASE = CollectorConfig(host="127.0.0.1", udp_port=0, tcp_port=0, flush_interval=0.05,
                       retention_interval=0, max_line_length=128)


async def start(store: Store, tmp_path: Path, **changes: object) -> Collector:
    collector = Collector(replace(BASE, state_dir=tmp_path, **changes), store)  # type: ignore[arg-type]
    await collector.startup()
    return collector


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def count_of(store: Store, name: str) -> float:
    info = await store.get_metric(name)
    if info is None:
        return 0.0
    return sum(row.cnt for row in await store.read_buckets(info.id, 0, 2**40, 2**40))


def log_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def send_udp(collector: Collector, *datagrams: bytes) -> None:
    assert collector.udp_address is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, collector.udp_address)


async def test_max_line_length(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    collector = await start(sqlite_store, tmp_path)
    long_line = b"long:" + b"1" * 200 + b"|c"
    send_udp(collector, *[long_line + b"\nok.udp:1|c"] * 5)
    assert collector.tcp_address is not None
    reader, writer = await asyncio.open_connection(*collector.tcp_address)
    writer.write(b"ok.tcp:1|c\n" * 5 + b"x" * 1000 + b"\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # a TCP peer that breaks
    await until(lambda: collector.stats.drops[Reason.TOO_LONG] == 6)  # framing: closed
    writer.close()
    await collector.shutdown()
    assert await count_of(sqlite_store, "ok.udp") == 5
    assert await count_of(sqlite_store, "ok.tcp") == 5
    assert len(log_lines(caplog, "too_long")) == 1


async def test_max_tcp_connections(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    collector = await start(sqlite_store, tmp_path, max_tcp_connections=3)
    assert collector.tcp_address is not None
    kept = []
    for _ in range(3):
        kept.append(await asyncio.open_connection(*collector.tcp_address))
    await until(lambda: collector.open_tcp_connections == 3)
    refused = [await asyncio.open_connection(*collector.tcp_address) for _ in range(4)]
    for reader, _writer in refused:  # closed at once, before reading anything
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert collector.stats.tcp_refused == 4
    for _reader, writer in kept:  # the ones inside the bound work
        writer.write(b"ok.kept:1|c\n")
        await writer.drain()
    await until(lambda: collector.stats.samples == 3)
    for _reader, writer in kept + refused:
        writer.close()
    await collector.shutdown()
    assert await count_of(sqlite_store, "ok.kept") == 3
    assert len(log_lines(caplog, "refusing TCP connections")) == 1


async def test_tcp_idle_timeout(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    collector = await start(sqlite_store, tmp_path, tcp_idle_timeout=0.3)
    assert collector.tcp_address is not None
    idle = [await asyncio.open_connection(*collector.tcp_address) for _ in range(3)]
    busy_reader, busy = await asyncio.open_connection(*collector.tcp_address)
    idle[0][1].write(b"half.a.line:1")  # a slowloris: half a line, then nothing
    for _ in range(10):  # the busy one keeps talking and stays
        busy.write(b"ok.busy:1|c\n")
        await asyncio.sleep(0.1)
    for reader, _writer in idle:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert collector.stats.tcp_idle_closed == 3
    assert not busy_reader.at_eof()
    busy.close()
    for _reader, writer in idle:
        writer.close()
    await collector.shutdown()
    assert await count_of(sqlite_store, "ok.busy") == 10
    assert await count_of(sqlite_store, "half.a.line") == 0
    assert len(log_lines(caplog, "idle for")) == 1


async def test_max_distinct_metrics(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    collector = await start(sqlite_store, tmp_path, max_metrics=5)
    send_udp(collector, b"\n".join(f"m{i}:1|c".encode() for i in range(8)))
    send_udp(collector, b"\n".join(f"m{i}:1|c".encode() for i in range(8)))
    await until(lambda: collector.stats.lines == 16)
    await collector.shutdown()
    assert collector.stats.drops[Reason.TOO_MANY_METRICS] == 6
    assert [await count_of(sqlite_store, f"m{i}") for i in range(8)] == [2] * 5 + [0] * 3
    assert len(log_lines(caplog, "too_many_metrics")) == 1


async def test_max_pending_buckets(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Buckets in the aggregator are capped; so are the rows the flusher holds when the
    spool cannot take them (tests/test_spool.py: the full-spool case)."""
    caplog.set_level(logging.WARNING)
    collector = await start(sqlite_store, tmp_path, max_pending_buckets=10, flush_interval=60)
    send_udp(collector, b"\n".join(f"p{i}:1|c".encode() for i in range(15)))
    send_udp(collector, b"\n".join(f"p{i}:1|c".encode() for i in range(15)))
    await until(lambda: collector.stats.lines == 30)
    await collector.shutdown()
    # Same second: the first 10 names take the 10 buckets; later samples of those
    # names merge into them, new ones are dropped as overload.
    if collector.stats.drops[Reason.OVERLOAD] == 10:
        assert [await count_of(sqlite_store, f"p{i}") for i in range(15)] == [2] * 10 + [0] * 5
    assert sum([await count_of(sqlite_store, f"p{i}") for i in range(15)]) == (
        30 - collector.stats.drops[Reason.OVERLOAD])
    assert collector.stats.drops[Reason.OVERLOAD] >= 10
    assert len(log_lines(caplog, "overload")) == 1
