"""Rollups (points_1m, points_1h): written in the flush transaction, read when they answer
exactly, filled by migration 2, expired per level. On SQLite and on MariaDB.

Values are integers and rates powers of two, so every sum is exact in any order.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest

from protocol.buckets import BucketRow
from store import Batch, PointRow, Store
from store.rollups import LEVELS, ROLLUPS, plan_reads, rollup
from tests.mysqldirect import connect

BASE = 1_790_000_000 - 1_790_000_000 % 86400  # a UTC midnight
Rows = dict[int, list[float]]  # bucket start -> [cnt, sum, mn, mx]


def make_points(rng: random.Random, names: list[str], count: int, span: int) -> list[PointRow]:
    points: dict[tuple[str, int], PointRow] = {}
    for _ in range(count):
        name = rng.choice(names)
        ts = BASE + rng.randrange(span)
        value = float(rng.randrange(-50, 1000))
        cnt = float(rng.choice([1, 2, 4]))
        kind = "counter" if name.startswith("c.") else "value"
        points[(name, ts)] = (name, kind, ts, cnt, value * cnt, value, value + rng.randrange(5))
    return list(points.values())


def expected(points: list[PointRow], name: str, start: int, end: int, interval: int) -> Rows:
    """What a scan of the per-second rows must give: computed here, in Python."""
    start -= start % interval
    out: Rows = {}
    for point_name, _kind, ts, cnt, total, mn, mx in points:
        if point_name != name or not start <= ts < end:
            continue
        bucket = out.setdefault(ts - ts % interval, [0.0, 0.0, mn, mx])
        bucket[0] += cnt
        bucket[1] += total
        bucket[2] = min(bucket[2], mn)
        bucket[3] = max(bucket[3], mx)
    return out


def as_rows(rows: list[BucketRow]) -> Rows:
    return {row.ts: [row.cnt, row.sum, row.mn, row.mx] for row in rows}


async def write(store: Store, points: list[PointRow], batches: int, writer: str = "t") -> None:
    for seq in range(batches):  # several batches: the rollup upserts must add up
        result = await store.write_batch(Batch(writer, seq + 1, points[seq::batches]))
        assert result.applied


@contextmanager
def sql(url: str) -> Iterator[Any]:
    """A cursor on the test database, with the backend's own driver."""
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    else:
        conn = connect(url)
    with closing(conn):
        cursor = conn.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


def table_rows(url: str, table: str) -> set[tuple[int, int, float, float, float, float]]:
    with sql(url) as cursor:
        cursor.execute(f"SELECT metric_id, ts, cnt, `sum`, mn, mx FROM {table}")
        return {(int(r[0]), int(r[1]), *map(float, r[2:])) for r in cursor.fetchall()}


def test_plan_reads_uses_the_coarsest_exact_level() -> None:
    assert plan_reads(BASE, BASE + 86400, 3600) == [("points_1h", BASE, BASE + 86400)]
    assert plan_reads(BASE, BASE + 7265, 3600) == [
        ("points_1h", BASE, BASE + 7200),
        ("points_1m", BASE + 7200, BASE + 7260),
        ("points_1s", BASE + 7260, BASE + 7265),
    ]
    assert plan_reads(BASE, BASE + 600, 300) == [("points_1m", BASE, BASE + 600)]
    assert plan_reads(BASE, BASE + 600, 10) == [("points_1s", BASE, BASE + 600)]
    assert plan_reads(BASE, BASE + 30, 60) == [("points_1s", BASE, BASE + 30)]
    assert plan_reads(BASE, BASE, 60) == []
    assert [table for table, _ in LEVELS] == ["points_1h", "points_1m", "points_1s"]


def test_rollup_sums_per_step() -> None:
    rows = [(1, 0, 2.0, 3.0, 1.0, 5.0), (1, 59, 1.0, 2.0, 2.0, 2.0), (1, 60, 1.0, 1.0, 1.0, 1.0),
            (2, 30, 1.0, 7.0, 7.0, 7.0)]  # sorted, as the writers pass them
    assert rollup(rows, 60) == [(1, 0, 3.0, 5.0, 1.0, 5.0), (1, 60, 1.0, 1.0, 1.0, 1.0),
                                (2, 0, 1.0, 7.0, 7.0, 7.0)]


async def test_rollup_backed_reads_equal_raw_totals(store: Store) -> None:
    rng = random.Random(5)
    names = [f"c.{i}" for i in range(3)] + [f"v.{i}" for i in range(3)]
    span = 2 * 86400 + 5000  # two days and a bit: whole hours, minutes and seconds
    points = make_points(rng, names, 6000, span)
    await write(store, points, batches=4)
    intervals = [1, 10, 60, 300, 3600, 7200, 86400]
    ranges = [(BASE, BASE + span), (BASE + 3599, BASE + 86400 + 61), (BASE + 7, BASE + 4000),
              (BASE + 86400, BASE + 86400 + 3600)]
    for name in names:
        info = await store.get_metric(name)
        assert info is not None
        for start, end in ranges:
            # the raw read: interval 1 can only come from points_1s
            raw = as_rows(await store.read_buckets(info.id, start - start % 86400, end, 1))
            for interval in intervals:
                got = as_rows(await store.read_buckets(info.id, start, end, interval))
                assert got == expected(points, name, start, end, interval), (name, interval)
                aligned = start - start % interval
                summed: Rows = {}
                for ts, (cnt, total, mn, mx) in raw.items():
                    if aligned <= ts < end:
                        b = summed.setdefault(ts - ts % interval, [0.0, 0.0, mn, mx])
                        b[0] += cnt
                        b[1] += total
                        b[2] = min(b[2], mn)
                        b[3] = max(b[3], mx)
                assert got == summed, (name, interval, start, end)


async def test_rollup_tables_hold_the_sums_of_the_seconds(
    store: Store, database_url: str
) -> None:
    rng = random.Random(11)
    points = make_points(rng, ["c.a", "v.b"], 3000, 3 * 3600 + 77)
    await write(store, points, batches=3)
    raw = sorted(table_rows(database_url, "points_1s"))
    assert len(raw) == len(points)
    for table, step in (("points_1m", 60), ("points_1h", 3600)):
        assert table_rows(database_url, table) == set(rollup(raw, step)), table
    assert rollup(rollup(raw, 60), 3600) == rollup(raw, 3600)


async def test_a_retried_batch_is_not_rolled_up_twice(store: Store, database_url: str) -> None:
    points = make_points(random.Random(3), ["c.x"], 200, 7200)
    batch = Batch("w", 1, points)
    assert (await store.write_batch(batch)).applied
    assert not (await store.write_batch(batch)).applied
    raw = sorted(table_rows(database_url, "points_1s"))
    assert table_rows(database_url, "points_1h") == set(rollup(raw, 3600))


async def test_migration_2_fills_the_rollups_from_existing_seconds(
    store: Store, database_url: str
) -> None:
    points = make_points(random.Random(9), ["c.m", "v.n"], 4000, 5 * 3600 + 30)
    await write(store, points, batches=2)
    raw = sorted(table_rows(database_url, "points_1s"))
    await migrate_from_version_1(store, database_url)
    for table, step in (("points_1m", 60), ("points_1h", 3600)):
        assert table_rows(database_url, table) == set(rollup(raw, step)), table
    info = await store.get_metric("v.n")
    assert info is not None
    end = BASE + 5 * 3600 + 30
    got = as_rows(await store.read_buckets(info.id, BASE, end, 3600))
    assert got == expected(points, "v.n", BASE, end, 3600)


async def migrate_from_version_1(store: Store, database_url: str) -> None:
    """Back to schema version 1 with the seconds in place, as an old install would be,
    and migrated again."""
    with sql(database_url) as cursor:
        cursor.execute("DROP TABLE points_1m")
        cursor.execute("DROP TABLE points_1h")
        for table in ("alert_rules", "alert_states", "alert_transitions", "alert_outbox",
                      "alert_lease",  # migration 3's tables
                      "sketch_1m", "sketch_1h"):  # migration 4's
            cursor.execute(f"DROP TABLE {table}")
        cursor.execute("DELETE FROM schema_version WHERE version >= 2")
    assert await store.schema_version() == 1
    assert await store.migrate() == [2, 3, 4]
    assert await store.schema_version() == 4


async def test_migration_2_sums_seconds_near_the_double_range_as_a_flush_does(
    store: Store, database_url: str
) -> None:
    # SQL's SUM over these would overflow (MariaDB: error 1264 on the insert; SQLite:
    # inf stored). A flush's rollup skips the second that would overflow its minute,
    # so must the fill: each level equals ``rollup`` of the seconds, and what the
    # flush itself wrote.
    big = 1.7e308
    extreme: list[PointRow] = [
        ("c.big", "counter", BASE + ts, 1.0, total, total, total)
        for ts, total in ((1, big), (2, big), (3, -big),  # overflows in order: 2 skipped
                          (61, big), (62, -big), (63, big))]  # |values| past the range
    points = make_points(random.Random(5), ["c.m", "v.n"], 1000, 2 * 3600) + extreme
    await write(store, points, batches=1)
    raw = sorted(table_rows(database_url, "points_1s"))
    flushed = {table: table_rows(database_url, table) for table, _step in ROLLUPS}
    await migrate_from_version_1(store, database_url)
    for table, step in ROLLUPS:
        assert table_rows(database_url, table) == set(rollup(raw, step)) == flushed[table]
    info = await store.get_metric("c.big")
    assert info is not None
    assert {row for row in table_rows(database_url, "points_1m") if row[0] == info.id} == {
        (info.id, BASE, 2.0, 0.0, -big, big), (info.id, BASE + 60, 3.0, big, -big, big)}
    assert [row for row in table_rows(database_url, "points_1h") if row[0] == info.id] == [
        (info.id, BASE, 5.0, big, -big, big)]


async def test_retention_per_level(store: Store, database_url: str) -> None:
    points = make_points(random.Random(4), ["c.r"], 2000, 4 * 3600)
    await write(store, points, batches=1)
    before = BASE + 2 * 3600
    counts = {table: len(table_rows(database_url, table)) for table, _ in LEVELS}
    old_minutes = sum(1 for r in table_rows(database_url, "points_1m") if r[1] < before)
    deleted = 0
    while n := await store.delete_points_before(before, 50, table="points_1m"):
        deleted += n
    assert deleted == old_minutes > 0
    assert len(table_rows(database_url, "points_1m")) == counts["points_1m"] - old_minutes
    for table in ("points_1s", "points_1h"):  # the other levels are untouched
        assert len(table_rows(database_url, table)) == counts[table]
    assert await store.delete_points_before(before, 10**6) > 0  # default: points_1s
    assert all(r[1] >= before for r in table_rows(database_url, "points_1s"))
    assert len(table_rows(database_url, "points_1h")) == counts["points_1h"]
    with pytest.raises(ValueError):
        await store.delete_points_before(before, 10, table="metrics")
