"""Retention: expired points go in small per-metric chunks; younger ones stay; the
collector runs passes itself while it ingests. (The 10M-row pass under ingest is in
test_faults.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from collector.config import CollectorConfig
from collector.daemon import Collector
from collector.retention import retention_pass
from store import Batch, PointRow, Store, StoreUnavailable
from tests.mysqldirect import connect

CUTOFF = 1_700_000_000


def rows(name: str, start: int, count: int) -> list[PointRow]:
    return [(name, "counter", start + i, 1.0, float(i), float(i), float(i)) for i in range(count)]


async def stored_ts(store: Store, name: str) -> list[int]:
    info = await store.get_metric(name)
    assert info is not None
    return [row.ts for row in await store.read_buckets(info.id, 0, 2**40, 1)]


async def test_a_pass_deletes_every_expired_row_and_nothing_younger(store: Store) -> None:
    # Three metrics with 50 expired rows each (plus one with none), chunks of 7.
    for seq, name in enumerate(["a", "b", "c"], start=1):
        await store.write_batch(Batch("seed", seq, rows(name, CUTOFF - 50, 80)))
    await store.write_batch(Batch("seed", 9, rows("young", CUTOFF, 10)))
    deleted = await retention_pass(store, CUTOFF, 7, pace=False)
    assert deleted == 150
    for name in ["a", "b", "c"]:
        assert await stored_ts(store, name) == list(range(CUTOFF, CUTOFF + 30))
    assert await stored_ts(store, "young") == list(range(CUTOFF, CUTOFF + 10))
    assert await retention_pass(store, CUTOFF, 7, pace=False) == 0


async def test_one_call_deletes_at_most_a_chunk_per_metric_oldest_first(store: Store) -> None:
    await store.write_batch(Batch("seed", 1, rows("a", CUTOFF - 50, 50) + rows("b", CUTOFF - 3, 3)))
    assert await store.delete_points_before(CUTOFF, 10) == 13
    assert await stored_ts(store, "a") == list(range(CUTOFF - 40, CUTOFF))
    assert await stored_ts(store, "b") == []


async def test_flush_records_go_after_their_batches_cannot_come_back(store: Store) -> None:
    """A record guards its (writer_id, seq) against a second application: once it is
    deleted, the same batch would apply again, so only old records go."""
    old = Batch("w", 1, rows("f", CUTOFF, 1))
    await store.write_batch(old)
    now = int(time.time())
    await retention_pass(store, CUTOFF, 10, flush_records_before=now - 3600, pace=False)
    assert not (await store.write_batch(old)).applied  # the record is still there
    await retention_pass(store, CUTOFF, 10, flush_records_before=now + 3600, pace=False)
    assert (await store.write_batch(old)).applied  # gone: the batch counts again


class FailingDeletes:
    """Deletes fail like an unreachable database while ``failures`` lasts."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store = store
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def delete_points_before(
        self, before: int, chunk: int, *, table: str = "points_1s"
    ) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("test: the database is down")
        return await self.store.delete_points_before(before, chunk, table=table)


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_the_collector_runs_passes_while_it_ingests(store: Store, tmp_path: Path) -> None:
    """Every --retention-interval: expired rows of 20 metrics go (in chunks of 5, paced),
    a failed pass is counted and the next one goes on; ingest meanwhile is exact."""
    retention = 3600
    expired_before = int(time.time()) - retention
    for seq in range(20):
        name = f"old.m{seq}"
        seeded = rows(name, expired_before - 30, 30) + rows(name, expired_before + 60, 10)
        await store.write_batch(Batch("seed", seq + 1, seeded))
    config = CollectorConfig(
        udp_port=None, tcp_port=None, flush_interval=0.02, retention_raw=retention,
        retention_interval=0.3, retention_chunk=5, state_dir=tmp_path,
    )
    flaky = FailingDeletes(store, failures=1)
    collector = Collector(config, flaky)  # type: ignore[arg-type]
    await collector.startup()
    stats = collector.stats
    sent = 0
    while stats.retention_passes < 1 or sent < 200:
        collector.aggregator.feed(b"live:2|c\nlive:3|c", int(time.time()))
        sent += 1
        await asyncio.sleep(0.01)
    await collector.shutdown()
    assert stats.retention_failures == 1
    assert stats.retention_rows_deleted == 20 * 30
    for seq in range(20):
        assert len(await stored_ts(store, f"old.m{seq}")) == 10
    info = await store.get_metric("live")
    assert info is not None
    [total] = await store.read_buckets(info.id, 0, 2**40, 2**40)
    assert (total.cnt, total.sum, total.mn, total.mx) == (2.0 * sent, 5.0 * sent, 2.0, 3.0)


async def test_the_collector_keeps_flush_records_past_the_retention(
    store: Store, tmp_path: Path
) -> None:
    config = CollectorConfig(udp_port=None, tcp_port=None, retention_raw=3600,
                             retention_interval=3600, state_dir=tmp_path)
    await store.write_batch(Batch("young-record", 1, rows("r", CUTOFF, 1)))
    collector = Collector(config, store)
    await collector.startup()
    await until(lambda: collector.stats.retention_passes == 1)
    await collector.shutdown()
    assert collector.stats.retention_flush_records_deleted == 0  # applied just now
    assert not (await store.write_batch(Batch("young-record", 1, rows("r", CUTOFF, 1)))).applied


def table_counts(database_url: str, name: str) -> dict[str, int]:
    """Rows of metric ``name`` in each level, read straight from the database."""
    tables = ("points_1s", "points_1m", "points_1h")
    sql = ("SELECT COUNT(*) FROM {} p JOIN metrics m ON m.id = p.metric_id "
           "WHERE m.name = ")
    if database_url.startswith("sqlite"):
        import sqlite3

        path = database_url.removeprefix("sqlite://").removeprefix("/")
        with sqlite3.connect(path) as conn:
            return {t: conn.execute(sql.format(t) + "?", (name,)).fetchone()[0] for t in tables}
    conn = connect(database_url)
    try:
        with conn.cursor() as cursor:
            out = {}
            for table in tables:
                cursor.execute(sql.format(table) + "%s", (name,))
                out[table] = cursor.fetchone()[0]
            return out
    finally:
        conn.close()


async def test_each_level_expires_after_its_own_retention(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    now = int(time.time())
    hour = now - 10 * 86400 - now % 3600  # ten days ago, on the hour
    await store.write_batch(Batch("seed", 1, rows("lvl", hour, 120)))
    assert table_counts(database_url, "lvl") == {"points_1s": 120, "points_1m": 2,
                                                 "points_1h": 1}
    config = CollectorConfig(udp_port=None, tcp_port=None, retention_raw=7 * 86400,
                             retention_1m=9 * 86400, retention_1h=30 * 86400,
                             retention_interval=3600, state_dir=tmp_path)
    collector = Collector(config, store)
    await collector.startup()
    await until(lambda: collector.stats.retention_passes == 1)
    await collector.shutdown()
    assert collector.stats.retention_rows_deleted == 122
    assert table_counts(database_url, "lvl") == {"points_1s": 0, "points_1m": 0,
                                                 "points_1h": 1}
