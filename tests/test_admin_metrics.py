"""The collector's admin listener: /metrics figures move with real traffic, /healthz
follows the store; --self-metrics stores the collector's own figures."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.admin import AdminConfig, make_admin_app, start_admin
from collector.config import CollectorConfig
from collector.daemon import Collector
from collector.metrics import SelfMetrics
from store import Store, StoreUnavailable, open_store
from tests.http_support import scrape, value


@pytest.fixture
async def daemon(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Collector]:
    store = open_store(sqlite_url)
    await store.migrate()
    config = CollectorConfig(udp_port=0, tcp_port=0, flush_interval=0.05, state_dir=tmp_path)
    collector = Collector(config, store)
    await collector.startup()
    try:
        yield collector
    finally:
        await collector.shutdown()
        await store.close()


@pytest.fixture
async def admin_url(daemon: Collector) -> AsyncIterator[str]:
    runner = await start_admin(AdminConfig(port=0), daemon)
    assert runner is not None
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait for datagrams to be processed: poll a condition, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def send_udp(daemon: Collector, *datagrams: bytes) -> None:
    assert daemon.udp_address is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, daemon.udp_address)


async def test_metrics_move_with_good_and_bad_lines(daemon: Collector, admin_url: str) -> None:
    before = await scrape(admin_url)
    assert value(before, "gf_collector_lines_total") == 0
    assert value(before, "gf_collector_lines_dropped_total", reason="parse_error") == 0
    assert value(before, "gf_collector_flush_duration_seconds_count") == 0

    send_udp(
        daemon,
        b"app.requests:1|c\napp.latency:12.5|ms\napp.requests:2|c|@0.5",  # 3 good
        b"not a metric\napp.bad:1|q\napp.requests:x|c",  # parse error, unknown type, value
        b"app.latency:1|c",  # a counter sample for a value metric
        b"..bad:1|c\napp.requests:1|c",  # bad name, then a good line
    )

    async def all_read() -> bool:
        return value(await scrape(admin_url), "gf_collector_datagrams_total") == 4

    await until(all_read)
    figures = await scrape(admin_url)
    assert value(figures, "gf_collector_lines_total") == 9
    assert value(figures, "gf_collector_samples_total") == 4
    dropped = {reason: value(figures, "gf_collector_lines_dropped_total", reason=reason)
               for reason in ("parse_error", "unknown_type", "bad_value", "kind_conflict",
                              "bad_name", "too_long")}
    assert dropped == {"parse_error": 1, "unknown_type": 1, "bad_value": 1,
                       "kind_conflict": 1, "bad_name": 1, "too_long": 0}
    assert value(figures, "gf_collector_metric_names") == 2
    assert value(figures, "gf_collector_udp_kernel_drops_total") == 0  # Linux /proc

    async def all_flushed() -> bool:
        figures = await scrape(admin_url)
        return (value(figures, "gf_collector_pending_buckets") == 0
                and value(figures, "gf_collector_pending_rows") == 0
                and value(figures, "gf_collector_rows_flushed_total") >= 2)

    await until(all_flushed)
    flushed = await scrape(admin_url)
    flushes = value(flushed, "gf_collector_flushes_total")
    assert flushes >= 1
    assert value(flushed, "gf_collector_flush_failures_total") == 0
    assert value(flushed, "gf_collector_flush_duration_seconds_count") == flushes
    assert value(flushed, "gf_collector_flush_duration_seconds_bucket", le="+Inf") == flushes
    assert value(flushed, "gf_collector_flush_duration_seconds_sum") > 0
    assert value(flushed, "process_open_fds") > 0


async def test_tcp_connections_are_counted(daemon: Collector, admin_url: str) -> None:
    assert daemon.tcp_address is not None
    _reader, writer = await asyncio.open_connection(*daemon.tcp_address)
    try:
        writer.write(b"tcp.lines:1|c\ntcp.lines:1|c\n" + b"x" * 5000 + b":1|c\n")
        await writer.drain()

        async def read() -> bool:
            return value(await scrape(admin_url), "gf_collector_lines_total") == 3

        await until(read)
        figures = await scrape(admin_url)
        # The over-long line broke framing: that connection was closed.
        assert value(figures, "gf_collector_tcp_connections_open") == 0
        assert value(figures, "gf_collector_tcp_connections_total") == 1
        assert value(figures, "gf_collector_tcp_closed_too_long_total") == 1
        assert value(figures, "gf_collector_lines_dropped_total", reason="too_long") == 1
        assert value(figures, "gf_collector_samples_total") == 2
    finally:
        writer.close()
        await writer.wait_closed()


async def test_gc_seconds_count_the_collections_while_the_daemon_runs(
    daemon: Collector, admin_url: str
) -> None:
    before = value(await scrape(admin_url), "gf_collector_gc_seconds_total")
    for _ in range(20):  # full collections of this process's heap: measurable time
        gc.collect()
    after = value(await scrape(admin_url), "gf_collector_gc_seconds_total")
    assert after > before
    assert daemon.gc_clock in gc.callbacks
    await daemon.shutdown()  # (the fixture's shutdown then does nothing)
    assert daemon.gc_clock not in gc.callbacks  # one process, many daemons: none left
    stopped = daemon.gc_clock.seconds
    gc.collect()
    assert daemon.gc_clock.seconds == stopped


async def test_healthz_answers_when_the_store_does(admin_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/healthz") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "ok"
    assert body["pending_batches"] == 0


class DownStore:
    """A store whose database cannot be reached (the transport seam, hand-written)."""

    url_for_logs = "down://"

    async def ping(self) -> None:
        raise StoreUnavailable("connection refused")

    async def write_batch(self, batch: Any) -> Any:
        raise StoreUnavailable("connection refused")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call {name}")


async def test_healthz_is_503_when_the_store_is_down(tmp_path: Path) -> None:
    store: Store = DownStore()
    collector = Collector(CollectorConfig(state_dir=tmp_path), store)
    async with TestClient(TestServer(make_admin_app(collector))) as client:
        response = await client.get("/healthz")
        assert response.status == 503
        body = await response.json()
    assert body["status"] == "unavailable"
    assert "connection refused" in body["error"]


async def test_admin_listener_is_off_without_a_port(daemon: Collector) -> None:
    assert await start_admin(AdminConfig(), daemon) is None


async def test_self_metrics_are_stored_like_any_metric(daemon: Collector) -> None:
    send_udp(daemon, b"app.x:1|c\nbroken\napp.x:1|c")

    async def read() -> bool:
        return daemon.stats.lines == 3

    await until(read)
    recorder = SelfMetrics(daemon)
    assert recorder.record() > 0
    assert daemon.stats.samples == 2  # our own samples are not counted as received
    store = daemon.store

    async def stored() -> bool:
        return await store.get_metric("glowing_fiesta.collector.lines") is not None

    await until(stored)
    lines = await store.get_metric("glowing_fiesta.collector.lines")
    dropped = await store.get_metric("glowing_fiesta.collector.dropped.parse_error")
    pending = await store.get_metric("glowing_fiesta.collector.pending_buckets")
    assert lines is not None and lines.kind == "counter"
    assert dropped is not None and pending is not None and pending.kind == "value"
    now = int(time.time())
    [bucket] = await store.read_buckets(lines.id, now - 60, now + 60, 3600)
    assert bucket[2] == 3  # the increase since start: 3 lines

    # The next tick records only what changed since: nothing for the line counters.
    names = [name for name, _kind, _value in recorder.snapshot()]
    assert "glowing_fiesta.collector.lines" not in names
    assert "glowing_fiesta.collector.pending_buckets" in names
