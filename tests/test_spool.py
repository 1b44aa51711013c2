"""The spool (a durable FIFO of whole batches) and the flusher's use of it.

The flusher tests run the real Collector on a real SQLite store behind ``Outage``, a
hand-written switch at the store seam that fails writes (and migrations) while the
"database" is down, the way a lost MySQL server does: StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.lines import Reason
from store import Batch, PointRow, Store, StoreUnavailable, WriteResult, open_store
from store.durable import DurableWriter
from store.spool import (
    CHUNK_POINTS,
    Spool,
    SpoolError,
    SpoolFull,
)


def points(n: int, *, name: str = "m", ts: int = 1_700_000_000) -> list[PointRow]:
    """Rows whose floats need every bit to come back equal."""
    return [
        (f"{name}.{i % 7}", "value" if i % 2 else "counter", ts + i,
         1 / 3 + i, -1e-300 * i, math.pi * i, 2.0**53 + i)
        for i in range(n)
    ]


async def test_a_batch_comes_back_bit_for_bit(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, "test")
    batch = Batch("host:collector:1:ab", 41, points(CHUNK_POINTS * 2 + 3))
    await spool.put(batch)
    assert (spool.batches, spool.rows) == (1, len(batch.points))
    head = await spool.head()
    assert head is not None and head.batch == batch
    await spool.remove(head)
    assert (spool.batches, spool.rows, spool.bytes) == (0, 0, 0)
    assert await spool.head() is None
    await spool.close()


async def test_batches_keep_their_order_across_a_reopen(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, "test")
    batches = [Batch("w", seq, points(seq * 10, name=f"b{seq}")) for seq in range(1, 6)]
    await spool.put_many(batches[:2])
    for batch in batches[2:]:
        await spool.put(batch)
    await spool.close()

    spool = await Spool.open(tmp_path, "test")
    assert (spool.batches, spool.rows) == (5, sum(len(b.points) for b in batches))
    out = []
    while (head := await spool.head()) is not None:
        out.append(head.batch)
        await spool.remove(head)
    assert out == batches
    await spool.close()


async def test_one_process_per_file_and_a_dead_ones_file_is_taken_back(tmp_path: Path) -> None:
    first = await Spool.open(tmp_path, "collector")
    second = await Spool.open(tmp_path, "collector")
    assert first.path.name == "spool-collector.sqlite"
    assert second.path.name == "spool-collector.1.sqlite"
    assert await Spool.open_existing(tmp_path, "collector") is None  # both held
    await first.put(Batch("w", 1, points(3)))
    await first.close()  # a file with batches stays for whoever comes next
    taken = await Spool.open_existing(tmp_path, "collector")
    assert taken is not None and taken.path == first.path and taken.batches == 1
    await taken.close()
    await second.close()


async def test_nothing_is_created_until_needed_and_an_empty_file_goes_away(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    assert await Spool.open_existing(state, "collector") is None
    assert not state.exists()
    spool = await Spool.open(state, "collector")
    await spool.put(Batch("w", 1, points(2)))
    head = await spool.head()
    assert head is not None
    await spool.remove(head)
    await spool.close()
    assert sorted(p.name for p in state.iterdir()) == ["spool-collector.sqlite.lock"]


async def test_the_byte_budget_takes_a_prefix_and_refuses_the_rest(tmp_path: Path) -> None:
    probe = await Spool.open(tmp_path / "probe", "t")
    await probe.put(Batch("w", 1, points(500)))
    one = probe.bytes
    await probe.close()

    spool = await Spool.open(tmp_path, "t", max_bytes=int(one * 2.5))
    batches = [Batch("w", seq, points(500)) for seq in range(1, 5)]
    assert await spool.put_many(batches) == 2
    with pytest.raises(SpoolFull):
        await spool.put(batches[2])
    head = await spool.head()
    assert head is not None and head.batch == batches[0]
    await spool.remove(head)
    await spool.put(batches[2])  # room again
    assert spool.batches == 2
    await spool.close()


async def test_a_damaged_batch_is_discarded_and_counted_not_blocking(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path, "t")
    await spool.put_many([Batch("w", 1, points(10)), Batch("w", 2, points(20))])
    with sqlite3.connect(spool.path) as conn:
        conn.execute("UPDATE chunks SET data = x'00ff' WHERE batch_id = "
                     "(SELECT MIN(id) FROM batches)")
    head = await spool.head()
    assert head is not None and head.batch.seq == 2
    assert spool.corrupt_rows == 10 and spool.batches == 1
    await spool.close()


async def test_a_put_survives_sigkill_the_moment_it_returns(tmp_path: Path) -> None:
    """put() returns only once the batch is committed (synchronous=FULL, WAL): a process
    killed right after loses nothing."""
    child = f"""
import asyncio, os, signal
from store.spool import Spool
from store import Batch
async def main():
    spool = await Spool.open({str(tmp_path)!r}, "crash")
    for seq in range(1, 51):
        await spool.put(Batch("w", seq, [("m", "counter", seq, 1.0, 1.0, 1.0, 1.0)] * 3))
    print("put", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert done.returncode == -9 and done.stdout == b"put\n", done.stderr
    spool = await Spool.open_existing(tmp_path, "crash")
    assert spool is not None and (spool.batches, spool.rows) == (50, 150)
    await spool.close()


# -- against the real stores (SQLite and MariaDB) ----------------------------------------


async def totals(store: Store, names: list[str]) -> dict[str, tuple[float, ...]]:
    out = {}
    for name in names:
        info = await store.get_metric(name)
        if info is None:
            continue
        rows = await store.read_buckets(info.id, 0, 2**40, 2**40)
        out[name] = tuple(
            x for row in rows for x in (row.cnt, row.sum, row.mn, row.mx)
        )
    return out


async def test_write_batch_is_exactly_once_per_writer_and_seq(store: Store) -> None:
    batch = Batch("writer-a", 9, [("once", "counter", 1_700_000_000, 2.0, 5.0, 1.0, 4.0)])
    assert (await store.write_batch(batch)).applied
    again = await store.write_batch(batch)
    assert again == WriteResult(False, 0, {})
    assert await totals(store, ["once"]) == {"once": (2.0, 5.0, 1.0, 4.0)}


async def test_replay_keeps_the_original_writer_and_seq(store: Store, tmp_path: Path) -> None:
    """The COMMIT of a batch reached the database but its answer was lost, and the
    batch was spooled anyway: replaying it must not apply it again."""
    applied = Batch("writer-a", 1, [("r.a", "counter", 1_700_000_000, 1.0, 3.0, 3.0, 3.0)])
    fresh = Batch("writer-a", 2, [("r.a", "counter", 1_700_000_001, 1.0, 4.0, 4.0, 4.0)])
    assert (await store.write_batch(applied)).applied
    spool = await Spool.open(tmp_path, "t")
    await spool.put_many([applied, fresh])
    writer = DurableWriter(store.write_batch, "w", spool=spool)
    writer.start()
    while spool.batches:
        await asyncio.sleep(0.01)
    await writer.close(5)
    assert writer.stats.flush_duplicates == 1  # the first: applied before, not again
    assert writer.stats.spool_replayed_batches == 2
    assert await totals(store, ["r.a"]) == {"r.a": (2.0, 7.0, 3.0, 4.0)}
    await spool.close()


async def test_the_writer_drains_a_spool_left_by_an_earlier_run_in_order(
    store: Store, tmp_path: Path
) -> None:
    spool = await Spool.open(tmp_path, "http")
    await spool.put_many([
        Batch("http-1", seq, [("d.x", "value", 1_700_000_000 + seq, 1.0, seq, seq, seq)])
        for seq in range(1, 4)
    ])
    written: list[int] = []

    async def write(batch: Batch) -> WriteResult:
        written.append(batch.seq)
        return await store.write_batch(batch)

    writer = DurableWriter(write, "http-2", spool=spool)
    writer.start()
    while spool.batches:
        await asyncio.sleep(0.01)
    await writer.close(5)
    assert written == [1, 2, 3]
    assert await totals(store, ["d.x"]) == {"d.x": (3.0, 6.0, 1.0, 3.0)}
    await spool.close()


# -- the flusher through an outage ---------------------------------------------------------


class Outage:
    """A store that fails like an unreachable database while ``down``; records the
    (writer_id, seq) of every batch it applies, in order."""

    def __init__(self, store: Store, *, down: bool = False) -> None:
        self.store = store
        self.down = down
        self.applied: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def write_batch(self, batch: Batch) -> WriteResult:
        if self.down:
            raise StoreUnavailable("test: the database is down")
        result = await self.store.write_batch(batch)
        if result.applied:
            self.applied.append((batch.writer_id, batch.seq))
        return result

    async def migrate(self) -> list[int]:
        if self.down:
            raise StoreUnavailable("test: the database is down")
        return await self.store.migrate()


CONFIG = CollectorConfig(
    udp_port=None, tcp_port=None, flush_interval=0.02, spool_after=0.2,
    retention_interval=0,
)


class Feeder:
    """Lines into the aggregator (no sockets: the flusher is what is tested here)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.expected: dict[str, list[float]] = {}
        self.n = 0

    def feed(self, count: int = 20, names: int = 10) -> None:
        lines = []
        for _ in range(count):
            self.n += 1
            name, value = f"f.m{self.n % names}", self.n % 97
            lines.append(f"{name}:{value}|ms")
            b = self.expected.setdefault(name, [0.0, 0.0, math.inf, -math.inf])
            b[0] += 1
            b[1] += value
            b[2] = min(b[2], value)
            b[3] = max(b[3], value)
        self.collector.aggregator.feed("\n".join(lines).encode(), int(time.time()))

    def totals(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(b) for name, b in self.expected.items()}


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_an_outage_spools_past_the_bound_and_drains_in_order(
    sqlite_store: Store, tmp_path: Path
) -> None:
    store = Outage(sqlite_store)
    collector = Collector(replace(CONFIG, state_dir=tmp_path), store)  # type: ignore[arg-type]
    await collector.startup()
    feeder = Feeder(collector)
    for _ in range(5):
        feeder.feed()
        await asyncio.sleep(0.03)
    await until(lambda: collector.stats.rows_flushed > 0)
    store.down = True
    outage_started = time.monotonic()
    while time.monotonic() - outage_started < 1.0:
        feeder.feed()
        await asyncio.sleep(0.01)
        # Memory holds at most what piles up before --spool-after, not the whole outage.
        assert collector.writer.pending_rows <= 300
    stats = collector.stats
    assert stats.spooled_batches > 10 and stats.spool_batches > 0
    store.down = False
    await until(lambda: stats.spool_batches == 0 and not collector.writer.pending)
    await collector.shutdown()
    assert store.applied == sorted(store.applied), "batches applied out of order"
    assert stats.spool_replayed_batches == stats.spooled_batches
    assert await totals(sqlite_store, list(feeder.expected)) == feeder.totals()
    assert not list(tmp_path.glob("*.sqlite"))  # drained: the spool file is gone


async def test_too_many_pending_rows_spool_at_once(sqlite_store: Store, tmp_path: Path) -> None:
    store = Outage(sqlite_store, down=True)
    config = replace(CONFIG, state_dir=tmp_path, spool_after=3600, max_pending_rows=100)
    collector = Collector(config, store)  # type: ignore[arg-type]
    await collector.startup()
    feeder = Feeder(collector)
    for _ in range(30):
        feeder.feed(names=50)
        await asyncio.sleep(0.01)
    await until(lambda: collector.stats.spooled_rows > 0)
    assert collector.writer.pending_rows <= 100 + 50
    await collector.shutdown()  # still failing: the rest joins the spool at once
    assert collector.stats.rows_lost == 0
    store.down = False

    # The next start drains it (a spool a dead or stopped process left behind).
    again = Collector(config, store)  # type: ignore[arg-type]
    await again.startup()
    await until(lambda: again.stats.spool_replayed_batches > 0 and again.stats.spool_batches == 0)
    await again.shutdown()
    assert await totals(sqlite_store, list(feeder.expected)) == feeder.totals()


async def test_a_full_spool_holds_back_then_overload_drops_are_counted(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Spool refused (budget exhausted): memory stops growing at --max-pending-rows,
    the aggregator fills to --max-pending-buckets, new samples are dropped and counted;
    every accepted sample is stored once the database is back."""
    store = Outage(sqlite_store, down=True)
    config = replace(CONFIG, state_dir=tmp_path, spool_after=0, spool_max_bytes=1,
                     max_pending_rows=40, max_pending_buckets=100)
    collector = Collector(config, store)  # type: ignore[arg-type]
    await collector.startup()
    feeder = Feeder(collector)
    stats = collector.stats
    for _ in range(100):
        feeder.feed(count=10, names=200)
        await asyncio.sleep(0.005)
    assert stats.spool_failures > 0 and stats.backpressure_skips > 0
    assert stats.drops[Reason.OVERLOAD] > 0
    assert collector.writer.pending_rows <= 40 + 100
    assert collector.aggregator.pending_buckets <= 100
    store.down = False
    await collector.shutdown()
    stored = await totals(sqlite_store, list(feeder.expected))
    assert sum(t[0] for t in stored.values()) == stats.samples
    assert stats.samples + stats.drops[Reason.OVERLOAD] == feeder.n


async def test_shutdown_during_an_outage_spools_and_exits(
    sqlite_store: Store, tmp_path: Path
) -> None:
    store = Outage(sqlite_store)
    config = replace(CONFIG, state_dir=tmp_path, spool_after=3600)
    collector = Collector(config, store)  # type: ignore[arg-type]
    await collector.startup()
    feeder = Feeder(collector)
    store.down = True
    for _ in range(10):
        feeder.feed()
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await collector.shutdown()  # failing: straight to the spool, no waiting
    assert time.monotonic() - started < config.shutdown_flush_timeout
    assert collector.stats.rows_lost == 0 and collector.stats.spooled_rows > 0
    assert list(tmp_path.glob("spool-collector.sqlite"))
    store.down = False
    again = Collector(config, store)  # type: ignore[arg-type]
    await again.startup()
    await until(lambda: again.stats.spool_batches == 0)
    await again.shutdown()
    assert await totals(sqlite_store, list(feeder.expected)) == feeder.totals()


async def test_start_with_the_database_down_then_migrate_when_it_answers(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = Outage(open_store(sqlite_url), down=True)
    collector = Collector(replace(CONFIG, state_dir=tmp_path), store,  # type: ignore[arg-type]
                          migrated=False)
    await collector.startup()
    assert collector.stats.store_ready == 0
    feeder = Feeder(collector)
    for _ in range(20):
        feeder.feed()
        await asyncio.sleep(0.02)
    await until(lambda: collector.stats.spooled_batches > 0)
    store.down = False  # the migration retry (1 s) finds it
    await until(lambda: collector.stats.store_ready == 1, timeout=10)
    await until(lambda: collector.stats.spool_batches == 0)
    await collector.shutdown()
    assert await totals(store.store, list(feeder.expected)) == feeder.totals()
    await store.store.close()


async def test_a_spool_file_that_cannot_be_read_is_reported_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool-collector.sqlite"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(SpoolError):
        await Spool.open_existing(tmp_path, "collector")
    assert path.exists()  # left for the operator, never deleted
