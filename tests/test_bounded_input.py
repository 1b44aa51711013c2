"""Bounded cost of unauthenticated input (issue 9): idle names leave the --max-metrics
count, API-key lookups are capped and their answers cached, and a flood of junk names
and unknown keys over UDP does not stop good lines.

First the aggregator's eviction on its own (a hand-turned clock), then a real
collector in this process, then the real daemon (``glowing-fiesta collector``) on
SQLite and MariaDB under a flood.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from collector.aggregator import IDLE_SWEEP_SLICE, Aggregator
from collector.config import CollectorConfig
from collector.daemon import MAX_KEY_LOOKUPS, MAX_KEY_LOOKUPS_WAITING, Collector
from collector.stats import CollectorStats
from protocol.lines import Reason
from protocol.names import COUNTER, VALUE
from store import Store, open_store
from tests.daemon import DaemonProcess, run_cli
from tests.http_support import new_key, scrape, value
from tests.linegen import datagrams


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_aggregator(clock: Clock, **changes: object) -> Aggregator:
    config = replace(CollectorConfig(), **changes)  # type: ignore[arg-type]
    return Aggregator(config, CollectorStats(), clock=clock)


def sweep(agg: Aggregator) -> None:
    """One whole sweep (evict_idle does a slice per call)."""
    agg._next_sweep = 0.0  # a sweep may start now
    while agg.evict_idle():
        pass


# -- the aggregator ---------------------------------------------------------------


def test_idle_names_leave_the_max_metrics_count() -> None:
    clock = Clock()
    agg = make_aggregator(clock, max_metrics=3, metric_idle_ttl=60)
    now = int(clock.now)
    agg.feed(b"junk.1:1|c\njunk.2:1|c\nlive:1|c", now)
    agg.feed(b"new.name:1|c", now)
    assert agg.stats.drops[Reason.TOO_MANY_METRICS] == 1
    agg.take()
    for _ in range(3):  # "live" goes on; the junk names do not
        clock.now += 30
        agg.feed(b"live:1|c\nlive:1|c", now)  # twice: the fast path (cached head) too
        agg.take()
        sweep(agg)
    assert set(agg.kinds) == {"live"}
    assert agg.evicted == 2
    agg.feed(b"new.name:1|c\nnew.other:2|ms", now)  # room again
    assert agg.stats.drops[Reason.TOO_MANY_METRICS] == 1
    assert agg.kinds == {"live": COUNTER, "new.name": COUNTER, "new.other": VALUE}


def test_a_forgotten_name_leaves_the_fast_path_cache_and_is_learnt_again() -> None:
    clock = Clock()
    agg = make_aggregator(clock, metric_idle_ttl=10)
    now = int(clock.now)
    for _ in range(3):  # first sight learns the head, then the tail: cached from here
        agg.feed(b"was.counter:1|c", now)
    assert b"was.counter" in agg._known
    agg.take()
    clock.now += 11
    sweep(agg)
    assert "was.counter" not in agg.kinds and b"was.counter" not in agg._known
    # Seen again with the other kind: a new name as far as this process knows (the
    # store's kind check at flush decides; see the collector test below).
    agg.feed(b"was.counter:5|ms\nwas.counter:7|ms", now)
    assert agg.kinds["was.counter"] == VALUE
    assert agg.stats.drops[Reason.KIND_CONFLICT] == 0
    assert agg.buckets[now]["was.counter"][:5] == [2.0, 12.0, 5.0, 7.0, VALUE]  # 5: sketch


def test_a_name_with_a_bucket_not_yet_taken_is_not_forgotten() -> None:
    clock = Clock()
    agg = make_aggregator(clock, metric_idle_ttl=10)
    now = int(clock.now)
    agg.feed(b"busy:1|c\nbusy:1|c\nbusy:1|c", now)
    agg.take()
    clock.now += 20
    agg.feed(b"busy:1|c", now)  # the C pass: no stamp until the next take
    sweep(agg)
    assert "busy" in agg.kinds and agg.evicted == 0
    assert agg.buckets[now]["busy"][0] == 1.0


def test_names_never_in_a_bucket_are_forgotten_a_ttl_after_first_noticed() -> None:
    clock = Clock()
    agg = make_aggregator(clock, metric_idle_ttl=10)
    agg.learn_kinds({"from.the.store": VALUE})  # a kind the store fixed
    sweep(agg)
    clock.now += 5
    sweep(agg)
    assert "from.the.store" in agg.kinds
    clock.now += 6
    sweep(agg)
    assert "from.the.store" not in agg.kinds


def test_the_sweep_is_sliced_and_bounded() -> None:
    clock = Clock()
    agg = make_aggregator(clock, metric_idle_ttl=4, max_metrics=10**6)
    names = 2 * IDLE_SWEEP_SLICE + 5
    now = int(clock.now)
    agg.feed(b"\n".join(b"n.%d:1|c" % i for i in range(names)), now)
    agg.take()
    clock.now += 5
    calls = 1
    assert agg.evict_idle()  # a slice, more to come
    while agg.evict_idle():
        calls += 1
    assert calls + 1 == 3 and agg.kinds == {} and agg.evicted == names
    assert not agg.evict_idle()  # the next sweep waits ttl / 4
    assert agg._last_active == {}


def test_ttl_zero_never_forgets() -> None:
    clock = Clock()
    agg = make_aggregator(clock, metric_idle_ttl=0)
    agg.feed(b"kept:1|c", int(clock.now))
    agg.take()
    clock.now += 10**6
    assert not agg.evict_idle()
    assert "kept" in agg.kinds


# -- a real collector in this process -------------------------------------------------


TEST_CONFIG = CollectorConfig(host="127.0.0.1", udp_port=0, tcp_port=None,
                              flush_interval=0.05, retention_interval=0)


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_a_forgotten_name_sent_with_the_other_kind_meets_the_stores_check(
    store: Store, tmp_path: Path
) -> None:
    config = replace(TEST_CONFIG, state_dir=tmp_path, metric_idle_ttl=1)
    daemon = Collector(config, store)
    await daemon.startup()
    assert daemon.udp_address is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"flip:3|c", daemon.udp_address)
        await until(lambda: daemon.stats.rows_flushed == 1)
        await until(lambda: daemon.aggregator.evicted == 1)
        sock.sendto(b"flip:5|ms", daemon.udp_address)  # learnt again, as a value...
        # ...which the store refuses at flush: counted, and the store's kind learnt.
        await until(lambda: daemon.stats.drops[Reason.KIND_CONFLICT] == 1)
        sock.sendto(b"flip:4|c", daemon.udp_address)
        await until(lambda: daemon.stats.rows_flushed >= 2)
    await daemon.shutdown()
    info = await store.get_metric("flip")
    assert info is not None and info.kind == COUNTER
    now = int(time.time())
    rows = await store.read_buckets(info.id, now - 3600, now + 3600, 7200)
    assert [(row.cnt, row.sum) for row in rows] == [(2, 7)]


async def test_key_lookups_are_capped_and_unknown_keys_cached(
    store: Store, tmp_path: Path
) -> None:
    """2,000 distinct unknown keys at once: at most MAX_KEY_LOOKUPS run together, at
    most MAX_KEY_LOOKUPS_WAITING wait, the rest are dropped as overload; sent again,
    the ones looked up are answered from the cache (no second lookup)."""
    good = await new_key(store)
    config = replace(TEST_CONFIG, state_dir=tmp_path, key_cache_ttl=600)
    daemon = Collector(config, store)
    await daemon.startup()
    assert daemon.udp_address is not None
    most_running = 0
    real_find = store.find_key

    async def find_key(key_hash: str) -> object:
        nonlocal most_running
        most_running = max(most_running, daemon.keys.lookups_running)
        await asyncio.sleep(0.001)  # a database round trip
        return await real_find(key_hash)

    store.find_key = find_key  # type: ignore[method-assign]  # observes, does not fake
    tokens = ["gf_" + secrets.token_hex(16) for _ in range(2000)]
    lines = [f"{t}.junk:1|c".encode() for t in tokens]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in datagrams(lines, 8000):
                sock.sendto(packet, daemon.udp_address)
            await until(lambda: daemon.stats.lines == 2000)
            assert daemon.key_lookups_waiting <= MAX_KEY_LOOKUPS_WAITING
            await until(lambda: daemon.key_lookups_waiting == 0)
            shed = daemon.stats.key_lookups_shed
            assert shed == 2000 - daemon.keys.misses > 0
            assert daemon.stats.drops[Reason.OVERLOAD] == shed
            assert daemon.stats.drops[Reason.BAD_KEY] == daemon.keys.misses
            assert 1 <= most_running <= MAX_KEY_LOOKUPS
            looked_up = daemon.keys.misses
            # The same lines again: the answered ones from the cache (no key is looked
            # up twice), some of the shed ones looked up now.
            for packet in datagrams(lines, 8000):
                sock.sendto(packet, daemon.udp_address)
            await until(lambda: daemon.stats.lines == 4000)
            await until(lambda: daemon.key_lookups_waiting == 0)
            sock.sendto(f"{good}.good:1|c".encode(), daemon.udp_address)  # room: stored
            await until(lambda: daemon.stats.samples == 1)
            assert daemon.keys.misses <= 2001
            assert daemon.keys.misses - looked_up <= shed + 1
    finally:
        store.find_key = real_find  # type: ignore[method-assign]
        await daemon.shutdown()
    assert daemon.stats.samples == 1
    assert await store.get_metric("good") is not None
    assert await store.get_metric("junk") is None


# -- the real daemon under a flood, SQLite and MariaDB ---------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def poll_stored(database_url: str, name: str, count: float = 1,
                      timeout: float = 30) -> None:
    """Wait until the store holds at least ``count`` samples of ``name``."""
    started = time.monotonic()
    store = open_store(database_url)
    try:
        while True:
            info = await store.get_metric(name)
            if info is not None:
                now = int(time.time())
                rows = await store.read_buckets(info.id, now - 3600, now + 3600, 7200)
                if sum(row.cnt for row in rows) >= count:
                    return
            assert time.monotonic() - started < timeout, f"{count} of {name} never stored"
            await asyncio.sleep(0.05)
    finally:
        await store.close()


async def test_flood_of_junk_names_and_unknown_keys(
    database_url: str, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    status, out, err = await run_cli("keys", "create", "flood-test", "--database-url",
                                     database_url, "--log-level", "warning")
    assert status == 0, err
    token = re.search(r"gf_[0-9A-Za-z]{32}", out)
    assert token is not None
    good = token.group()
    daemon = await DaemonProcess.start(
        "collector", "--database-url", database_url, "--state-dir", str(tmp_path),
        "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--admin-port", "0",
        "--flush-interval", "0.2", "--max-metrics", "5000", "--metric-idle-ttl", "3",
        "--log-level", "info",
    )
    daemons.append(daemon)
    admin_line = daemon.log[await daemon.wait_for_log(r"admin endpoints .* on ")]
    admin = "http://{}:{}".format(*re.findall(r" on ([\d.]+):(\d+)", admin_line)[0])
    rss_before = rss_kib(daemon.process.pid)

    junk_names = [b"junk.%d:1|c" % i for i in range(200_000)]
    junk_keys = [b"gf_%s.junk.keyed:1|c" % secrets.token_hex(16).encode()
                 for _ in range(50_000)]
    flood = [line for pair in zip(junk_names[:50_000], junk_keys, strict=True)
             for line in pair] + junk_names[50_000:]
    packets = datagrams(flood, 8000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"app.known:1|c", daemon.udp)  # a live metric, before the flood
        await poll_stored(database_url, "app.known")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for i, packet in enumerate(packets):
            sock.sendto(packet, daemon.udp)
            if i % 64 == 63:
                await asyncio.sleep(0.001)  # as a busy client would; the daemon keeps up
        flood_done = time.monotonic()
        # A line with a valid key never seen before (so it needs a lookup, behind the
        # unknown keys) is stored within seconds. Resent every 0.2 s like a live
        # client's: while the lookups are saturated, it is shed (overload) like any.
        keyed = asyncio.create_task(poll_stored(database_url, "app.known", 2, 60))
        while not keyed.done():
            sock.sendto(f"{good}.app.known:1|c".encode(), daemon.udp)
            await asyncio.wait([keyed], timeout=0.2)
        await keyed
        keyed_seconds = time.monotonic() - flood_done
        # Every junk name that took a --max-metrics slot is forgotten once idle for
        # the ttl (3 s)...
        while value(await scrape(admin), "gf_collector_metric_names_evicted_total") < 5000:
            assert time.monotonic() - flood_done < 60, "junk names never forgotten"
            await asyncio.sleep(0.2)
        evicted_seconds = time.monotonic() - flood_done
        # ...and a brand-new name, sent once, is accepted.
        sock.sendto(b"app.new:1|c", daemon.udp)
        await poll_stored(database_url, "app.new")
    figures = await scrape(admin)
    rss_after = rss_kib(daemon.process.pid)
    print(f"flood: {len(flood)} lines in {len(packets)} datagrams; valid-key line stored "
          f"{keyed_seconds:.2f} s after the flood, junk forgotten after "
          f"{evicted_seconds:.2f} s; RSS {rss_before // 1024} MiB before, "
          f"{rss_after // 1024} MiB after; key lookups "
          f"{value(figures, 'gf_collector_key_cache_misses_total'):.0f}, shed "
          f"{value(figures, 'gf_collector_key_lookups_shed_total'):.0f}")
    assert value(figures, "gf_collector_metric_names") <= 5000
    assert value(figures, "gf_collector_key_lookups_waiting") == 0
    assert value(figures, "gf_collector_samples_awaiting_key") == 0
    lines = value(figures, "gf_collector_lines_total")
    samples = value(figures, "gf_collector_samples_total")
    dropped = sum(v for (name, _labels), v in figures.items()
                  if name == "gf_collector_lines_dropped_total")
    assert lines == samples + dropped  # every line stored or dropped with a reason
    assert value(figures, "gf_collector_lines_dropped_total", reason="too_many_metrics") > 0
    # Bounded memory: kinds, caches and held samples have caps (not the flood's size).
    assert rss_after < rss_before + 200 * 1024, (rss_before, rss_after)
    assert await daemon.stop() == 0, daemon.transcript()
