"""End to end: the real collector on ephemeral ports, real UDP and TCP sockets, a real
store (SQLite and MariaDB). 100,000 mixed lines in; exact totals and drop counts out."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter
from dataclasses import replace

import pytest

from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.lines import Reason
from store import Store, open_store
from tests.linegen import Load, datagrams, make_load, stored_totals

TEST_CONFIG = CollectorConfig(
    host="127.0.0.1", udp_port=0, tcp_port=0, flush_interval=0.2, max_line_length=1024
)


async def stored_sum(store: Store, name: str) -> float:
    info = await store.get_metric(name)
    assert info is not None, name
    now = int(time.time())
    rows = await store.read_buckets(info.id, now - 3600, now + 3600, 3600)
    return sum(row.sum for row in rows)


async def send_udp(address: tuple[str, int], packets: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i, packet in enumerate(packets):
            sock.sendto(packet, address)
            if i % 16 == 15:  # the daemon shares this event loop: let it read
                await asyncio.sleep(0)
    finally:
        sock.close()


async def send_tcp(address: tuple[str, int], data: bytes, rng: random.Random) -> None:
    _reader, writer = await asyncio.open_connection(*address)
    position = 0
    while position < len(data):  # random chunk boundaries, mid-line included
        step = rng.randrange(1, 9000)
        writer.write(data[position : position + step])
        position += step
        await writer.drain()
        await asyncio.sleep(0)
    writer.close()
    await writer.wait_closed()


async def run_load(collector: Collector, load: Load, rng: random.Random) -> None:
    assert collector.udp_address is not None and collector.tcp_address is not None
    head = load.lines[:100]  # kinds fixed first, over UDP, before anything else
    rest = load.lines[100:]
    split = len(rest) * 6 // 10
    udp_lines, tcp_lines = rest[:split], rest[split:]
    await send_udp(collector.udp_address, datagrams(head))
    await asyncio.sleep(0.05)
    streams = [tcp_lines[i::4] for i in range(4)]
    await asyncio.gather(
        send_udp(collector.udp_address, datagrams(udp_lines)),
        *(send_tcp(collector.tcp_address, b"\n".join(s) + b"\n", rng) for s in streams),
    )


async def test_100k_mixed_lines_stored_exactly(database_url: str, udp_reader: str) -> None:
    base = int(time.time()) - 120
    load = make_load(100_000, base)
    # Over-long lines on both transports: dropped as too_long, neighbours intact.
    long_line = b"x.long:" + b"1" * 2000 + b"|c"
    load.lines.insert(500, long_line)
    load.lines.append(long_line)
    load.drops[Reason.TOO_LONG] += 2

    store = open_store(database_url)
    await store.migrate()
    collector = Collector(TEST_CONFIG, store)
    await collector.startup()
    try:
        await run_load(collector, load, random.Random(3))
        kernel_drops = collector.kernel_drops()  # read while the socket is open
    finally:
        await collector.shutdown()
    try:
        assert kernel_drops == 0, "the kernel dropped datagrams: the load was too fast"
        assert collector.stats.drops == load.drops
        assert collector.stats.lines == len(load.lines)
        names = {name for name, _ts in load.totals}
        got = await stored_totals(store, names, base, base + 60)
        assert got == load.totals  # counters and values exact, per metric-second
        for name, expected in load.now_sums.items():
            assert await stored_sum(store, name) == expected
        assert not collector.writer.pending
    finally:
        await store.close()


async def test_shutdown_drains_what_the_socket_holds(sqlite_url: str, udp_reader: str) -> None:
    """Datagrams already in the kernel buffer when shutdown starts are stored."""
    store = open_store(sqlite_url)
    await store.migrate()
    collector = Collector(replace(TEST_CONFIG, flush_interval=60), store)
    await collector.startup()
    assert collector.udp_address is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(2000):  # no await in between: all of it waits in the kernel
            sock.sendto(b"drain.test:1|c\n" * 50, collector.udp_address)
    finally:
        sock.close()
    await collector.shutdown()
    try:
        assert await stored_sum(store, "drain.test") == 100_000
    finally:
        await store.close()


async def test_bad_input_never_stops_the_listeners(sqlite_url: str, udp_reader: str) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    collector = Collector(TEST_CONFIG, store)
    await collector.startup()
    assert collector.udp_address is not None and collector.tcp_address is not None
    rng = random.Random(11)
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1400))) for _ in range(300)]
    try:
        await send_udp(collector.udp_address, [*garbage, b"alive:1|c"])
        # Garbage over TCP breaks framing (lines over the cap): that peer is closed,
        # the listener goes on.
        with contextlib.suppress(ConnectionError):
            await send_tcp(collector.tcp_address, b"".join(garbage), rng)
        await send_tcp(collector.tcp_address, b"alive:2|c\n", rng)
    finally:
        await collector.shutdown()
    try:
        assert await stored_sum(store, "alive") == 3
        assert collector.stats.dropped > 0
        assert set(collector.stats.drops) <= set(Reason)
    finally:
        await store.close()


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.125])
async def test_sampled_counters_are_scaled(sqlite_url: str, rate: float) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    collector = Collector(TEST_CONFIG, store)
    await collector.startup()
    assert collector.udp_address is not None
    try:
        await send_udp(collector.udp_address, [f"sampled:3|c|@{rate}".encode()] * 10)
    finally:
        await collector.shutdown()
    try:
        info = await store.get_metric("sampled")
        assert info is not None
        now = int(time.time())
        rows = await store.read_buckets(info.id, now - 600, now + 600, 3600)
        assert sum(r.cnt for r in rows) == 10 / rate
        assert sum(r.sum for r in rows) == 30 / rate
        assert Counter(collector.stats.drops) == Counter()
    finally:
        await store.close()
