"""The Store contract, run on both backends (SQLite and a fresh MariaDB database).

Expected values are computed here from the points the tests write, never read back from
the store. Values are integers or dyadic fractions (multiples of 1/4) wherever sums are
compared with ``==``, so the order in which a database adds them cannot matter.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from protocol.buckets import AGGREGATIONS, FILLS, Aggregation, BucketRow, Fill, series
from protocol.names import Kind
from protocol.tokens import display_prefix, generate_token, hash_token
from store import (
    Batch,
    PointRow,
    Store,
    StoreError,
    StoreUnavailable,
    WriteResult,
    open_store,
)
from store.mysql import UPSERT_CHUNK
from store.schema import LATEST_VERSION, SQLITE_MIGRATIONS

DAY = 86400

# -- helpers -----------------------------------------------------------------------


def counter(name: str, ts: int, value: float, rate: float = 1.0) -> PointRow:
    """One counter line ``name:value|c|@rate`` as a bucket: adds value/rate and 1/rate."""
    return (name, "counter", ts, 1 / rate, value / rate, value, value)


def value(name: str, ts: int, *xs: float) -> PointRow:
    """Value samples ``xs`` in one second as a bucket."""
    return (name, "value", ts, float(len(xs)), float(sum(xs)), min(xs), max(xs))


def bucket(
    name: str, kind: Kind, ts: int, cnt: float, total: float, mn: float, mx: float
) -> PointRow:
    return (name, kind, ts, cnt, total, mn, mx)


def past_day(days_ago: int = 3) -> int:
    """A UTC midnight ``days_ago`` days back: the base of the test's timestamps."""
    now = int(time.time())
    return now - now % DAY - days_ago * DAY


async def metric_id(store: Store, name: str) -> int:
    info = await store.get_metric(name)
    assert info is not None, name
    return info.id


async def stored(store: Store, name: str, start: int, end: int) -> dict[int, tuple[float, ...]]:
    """ts -> (cnt, sum, mn, mx) of the per-second rows of ``name`` in [start, end)."""
    rows = await store.read_buckets(await metric_id(store, name), start, end, 1)
    return {row.ts: (row.cnt, row.sum, row.mn, row.mx) for row in rows}


def merged(points: list[PointRow]) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """(name, ts) -> (cnt, sum, mn, mx): the upsert arithmetic, done here independently."""
    out: dict[tuple[str, int], tuple[float, float, float, float]] = {}
    for name, _kind, ts, cnt, total, mn, mx in points:
        old = out.get((name, ts))
        if old is None:
            out[(name, ts)] = (cnt, total, mn, mx)
        else:
            out[(name, ts)] = (old[0] + cnt, old[1] + total, min(old[2], mn), max(old[3], mx))
    return out


# -- migrations --------------------------------------------------------------------


async def test_migrate_is_idempotent(store: Store) -> None:
    assert await store.migrate() == []
    assert await store.migrate() == []
    assert await store.schema_version() == LATEST_VERSION


async def test_concurrent_migrate_applies_each_version_once(database_url: str) -> None:
    # A fresh, unmigrated database (not the migrated `store` fixture), on both backends.
    first, second = open_store(database_url), open_store(database_url)
    try:
        assert await first.schema_version() == 0
        results = await asyncio.gather(first.migrate(), second.migrate())
        all_versions = [version for version, _ in SQLITE_MIGRATIONS]
        assert sorted(results, key=len) == [[], all_versions]
        assert await first.schema_version() == LATEST_VERSION
        assert await second.schema_version() == LATEST_VERSION
        assert await first.migrate() == []
        # Both can use the schema.
        result = await second.write_batch(Batch("w", 1, [counter("m", 1_000_000, 1)]))
        assert result.applied
        assert (await first.get_metric("m")) is not None
    finally:
        await first.close()
        await second.close()


# -- write_batch -------------------------------------------------------------------


async def test_write_batch_upserts_additively(store: Store) -> None:
    t = past_day()
    first = [
        bucket("lat", "value", t, 2, 10, 3, 7),
        bucket("lat", "value", t + 1, 1, -4, -4, -4),
        counter("hits", t, 5),
    ]
    second = [
        bucket("lat", "value", t, 3, 5, 1, 4),  # lower min, lower max: keeps 7
        bucket("lat", "value", t + 1, 1, 9, 9, 9),  # higher max, keeps min -4
        bucket("lat", "value", t + 2, 1, 2.5, 2.5, 2.5),  # only in the second batch
        counter("hits", t, 7),
        # The same (metric, ts) twice in one batch adds up too.
        counter("hits", t + 1, 1),
        counter("hits", t + 1, 2),
    ]
    assert await store.write_batch(Batch("w", 1, first)) == WriteResult(True, 3, {})
    assert await store.write_batch(Batch("w", 2, second)) == WriteResult(True, 6, {})

    assert await stored(store, "lat", t, t + 10) == {
        t: (5.0, 15.0, 1.0, 7.0),
        t + 1: (2.0, 5.0, -4.0, 9.0),
        t + 2: (1.0, 2.5, 2.5, 2.5),
    }
    assert await stored(store, "hits", t, t + 10) == {
        t: (2.0, 12.0, 5.0, 7.0),
        t + 1: (2.0, 3.0, 1.0, 2.0),
    }


async def test_fractional_counts_are_stored_exactly(store: Store) -> None:
    t = past_day()
    # Sampled counters: 1/rate is rarely an integer and rarely a short decimal.
    points = [
        counter("sampled", t, 1, rate=0.25),
        counter("sampled", t + 1, 3, rate=0.1),
        counter("sampled", t + 2, 1, rate=0.3),
        counter("sampled", t + 3, 2.5, rate=1 / 3),
        counter("sampled", t + 4, 1e-5, rate=0.7),
        counter("sampled", t + 5, 123456789.123, rate=0.01),
        value("timing", t, 0.1, 0.2),
        bucket("timing", "value", t + 1, 1 / 0.3, 1 / 3, 1 / 3, 1 / 3),
    ]
    await store.write_batch(Batch("w", 1, points))
    expected = merged(points)
    for name in ("sampled", "timing"):
        got = await stored(store, name, t, t + 10)
        assert got == {ts: row for (n, ts), row in expected.items() if n == name}
    assert (await stored(store, "sampled", t, t + 1))[t][0] == 4.0

    # Added to again: the database's double addition equals Python's.
    again = [counter("sampled", t + 2, 1, rate=0.3), counter("sampled", t + 4, 1e-5, rate=0.7)]
    await store.write_batch(Batch("w", 2, again))
    expected = merged(points + again)
    got = await stored(store, "sampled", t, t + 10)
    assert got == {ts: row for (n, ts), row in expected.items() if n == "sampled"}
    assert got[t + 2][0] == 1 / 0.3 + 1 / 0.3


async def test_negative_counter_increments(store: Store) -> None:
    t = past_day()
    await store.write_batch(Batch("w", 1, [counter("q", t, -5), counter("q", t + 1, -1)]))
    await store.write_batch(Batch("w", 2, [counter("q", t, 3)]))
    await store.write_batch(Batch("w", 3, [counter("q", t, -2, rate=0.5)]))
    assert await stored(store, "q", t, t + 2) == {
        t: (4.0, -6.0, -5.0, 3.0),
        t + 1: (1.0, -1.0, -1.0, -1.0),
    }


async def test_same_writer_and_seq_is_applied_once(store: Store) -> None:
    t = past_day()
    batch = Batch("collector-a", 7, [counter("once", t, 2), value("once.v", t, 3)])
    assert await store.write_batch(batch) == WriteResult(True, 2, {})
    retried = await store.write_batch(batch)
    assert retried.applied is False
    assert retried.rows == 0
    # Even a retry carrying different points (it cannot, but) changes nothing.
    other = await store.write_batch(Batch("collector-a", 7, [counter("once", t, 100)]))
    assert other.applied is False
    assert await stored(store, "once", t, t + 1) == {t: (1.0, 2.0, 2.0, 2.0)}
    assert await stored(store, "once.v", t, t + 1) == {t: (1.0, 3.0, 3.0, 3.0)}

    # Another writer with the same seq, and the same writer with the next seq, apply.
    assert (await store.write_batch(Batch("collector-b", 7, [counter("once", t, 2)]))).applied
    assert (await store.write_batch(Batch("collector-a", 8, [counter("once", t, 2)]))).applied
    assert await stored(store, "once", t, t + 1) == {t: (3.0, 6.0, 2.0, 2.0)}


async def test_retry_from_another_store_object_is_applied_once(
    store: Store, database_url: str
) -> None:
    # A flusher restarted (new process, empty caches) retries its last batch.
    t = past_day()
    batch = Batch("w", 1, [counter("x", t, 1)])
    assert (await store.write_batch(batch)).applied
    other = open_store(database_url)
    try:
        assert not (await other.write_batch(batch)).applied
    finally:
        await other.close()
    assert await stored(store, "x", t, t + 1) == {t: (1.0, 1.0, 1.0, 1.0)}


async def test_kind_conflicts_are_dropped_and_reported(store: Store, database_url: str) -> None:
    t = past_day()
    await store.write_batch(Batch("w", 1, [counter("k", t, 1), value("v", t, 5)]))

    mixed = [
        value("k", t, 9),  # conflicts: k is a counter
        counter("k2", t, 4),  # new
        counter("k", t + 1, 2),  # the right kind, stored
        counter("v", t, 1),  # conflicts: v is a value
        value("v", t + 1, 6),  # stored
        value("k", t + 2, 1),  # conflicts again
    ]
    result = await store.write_batch(Batch("w", 2, mixed))
    assert result == WriteResult(True, 3, {"k": "counter", "v": "value"})
    assert await stored(store, "k", t, t + 10) == {
        t: (1.0, 1.0, 1.0, 1.0),
        t + 1: (1.0, 2.0, 2.0, 2.0),
    }
    assert await stored(store, "v", t, t + 10) == {
        t: (1.0, 5.0, 5.0, 5.0),
        t + 1: (1.0, 6.0, 6.0, 6.0),
    }
    assert await stored(store, "k2", t, t + 10) == {t: (1.0, 4.0, 4.0, 4.0)}
    k = await store.get_metric("k")
    assert k is not None and k.kind == "counter"

    # A store object without cached kinds (another process) sees the stored kind.
    other = open_store(database_url)
    try:
        result = await other.write_batch(Batch("w2", 1, [value("k", t, 1), counter("k", t, 1)]))
        assert result == WriteResult(True, 1, {"k": "counter"})
    finally:
        await other.close()
    assert (await stored(store, "k", t, t + 1))[t] == (2.0, 2.0, 1.0, 1.0)


async def test_first_kind_in_a_batch_fixes_a_new_metric(
    store: Store
) -> None:
    """DESIGN §2: a name's kind is fixed by its first sample, also within one batch."""
    t = past_day()
    result = await store.write_batch(
        Batch("w", 1, [counter("new", t, 1), value("new", t + 1, 5), value("new", t + 2, 6)])
    )
    assert result == WriteResult(True, 1, {"new": "counter"})
    info = await store.get_metric("new")
    assert info is not None and info.kind == "counter"
    assert await stored(store, "new", t, t + 3) == {t: (1.0, 1.0, 1.0, 1.0)}


async def test_large_batch_over_several_upsert_chunks(store: Store) -> None:
    t = past_day()
    rng = random.Random(1)
    points: list[PointRow] = []
    for i in range(200):
        name = f"big.m{i:03d}"
        for s in range(25):
            x = rng.randrange(-1000, 1000) / 4
            if i % 2:
                points.append(counter(name, t + s * 7, x))
            else:
                points.append(bucket(name, "value", t + s * 7, 3, x * 3, x - 1, x + 1))
    assert len(points) == 5000 > UPSERT_CHUNK
    rng.shuffle(points)

    result = await store.write_batch(Batch("w", 1, points))
    assert result == WriteResult(True, 5000, {})

    expected = merged(points)
    metrics = await store.list_metrics("big.", 1000, None)
    assert [m.name for m in metrics] == [f"big.m{i:03d}" for i in range(200)]
    for info in metrics:
        assert info.kind == ("counter" if int(info.name[-3:]) % 2 else "value")
        assert (info.first_ts, info.last_ts) == (t, t + 24 * 7)
        rows = await store.read_buckets(info.id, t, t + DAY, 1)
        got = {row.ts: (row.cnt, row.sum, row.mn, row.mx) for row in rows}
        assert got == {ts: row for (n, ts), row in expected.items() if n == info.name}


async def _gather_then_close(
    writers: list[Store], jobs: list[Coroutine[Any, Any, list[WriteResult]]]
) -> list[WriteResult]:
    """Run all jobs to completion (none is left running on a closed pool), close the
    writers, then raise the first failure if any."""
    try:
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        for writer in writers:
            await writer.close()
    results: list[WriteResult] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.extend(outcome)
    return results


async def _write_all(writer: Store, batches: list[Batch]) -> list[WriteResult]:
    return [await writer.write_batch(batch) for batch in batches]


async def test_concurrent_writers_give_the_totals_of_one_writer(
    store: Store, database_url: str
) -> None:
    """4 store objects (4 processes) x 20 batches, all over the same metric-seconds, each
    batch in its own shuffled order: no deadlock escapes, nothing lost or doubled."""
    t = past_day()
    names = [f"conc.{i:02d}" for i in range(20)]
    kinds: dict[str, Kind] = {name: "counter" if i % 2 else "value" for i, name in enumerate(names)}
    # The metrics exist already (creating them concurrently is the next test).
    await store.write_batch(Batch("setup", 0, [counter(n, t - 100, 1) for n in names[1::2]]))
    await store.write_batch(Batch("setup", 1, [value(n, t - 100, 1) for n in names[::2]]))

    # 1,200 rows a batch: two upsert statements per transaction, so locks taken by the
    # first are held while the second runs.
    seconds = [t + s for s in range(60)]
    writers = [open_store(database_url) for _ in range(4)]
    rng = random.Random(42)
    batches: list[list[Batch]] = []
    everything: list[PointRow] = []
    for w in range(len(writers)):
        mine = []
        for seq in range(20):
            points: list[PointRow] = []
            for name in names:
                for ts in seconds:
                    x = float(rng.randrange(-50, 50))
                    points.append(bucket(name, kinds[name], ts, 1, x, x, x))
            rng.shuffle(points)
            everything.extend(points)
            mine.append(Batch(f"writer-{w}", seq, points))
        batches.append(mine)

    results = await _gather_then_close(
        writers,
        [_write_all(writer, mine) for writer, mine in zip(writers, batches, strict=True)]
        # And each writer again, interleaved: retries of the same (writer, seq).
        + [_write_all(writer, mine[::-1]) for writer, mine in zip(writers, batches, strict=True)],
    )

    assert sum(result.applied for result in results) == 80  # each (writer, seq) exactly once
    assert all(result.conflicts == {} for result in results)
    assert sum(result.rows for result in results) == 80 * 1200

    expected = merged(everything)
    for name in names:
        got = await stored(store, name, t, t + 60)
        assert got == {ts: row for (n, ts), row in expected.items() if n == name}
        assert len(got) == 60 and all(row[0] == 80.0 for row in got.values())


async def test_concurrent_writers_create_the_same_new_metrics(
    store: Store, database_url: str
) -> None:
    """Several processes see the same new names at once (a deploy adds metrics): every
    batch is applied, each name is created once, with its kind."""
    t = past_day()
    rng = random.Random(7)
    # Several rounds of fresh names: on MySQL one round deadlocks with probability ~0.8,
    # so eight rounds all passing by chance is a ~1e-5 event.
    for round_no in range(8):
        names = [f"new{round_no}.{i:03d}" for i in range(500)]
        kinds: dict[str, Kind] = {n: "counter" if i % 3 else "value" for i, n in enumerate(names)}
        writers = [open_store(database_url) for _ in range(4)]
        jobs = []
        for w, writer in enumerate(writers):
            points = [bucket(n, kinds[n], t + w, 1, 2, 2, 2) for n in names]
            rng.shuffle(points)
            jobs.append(_write_all(writer, [Batch(f"creator-{w}", round_no, points)]))
        results = await _gather_then_close(writers, jobs)
        assert [(r.applied, r.rows, r.conflicts) for r in results] == [(True, 500, {})] * 4

        listed = await store.list_metrics(f"new{round_no}.", 1000, None)
        assert [(m.name, m.kind) for m in listed] == [(n, kinds[n]) for n in names]
        assert all((m.first_ts, m.last_ts) == (t, t + 3) for m in listed)


# -- read_buckets and series -------------------------------------------------------

# Offsets (seconds after a UTC midnight) of the points read back below, chosen to sit
# on and next to the edges of 10 s, minute, hour and day buckets.
# fmt: off
OFFSETS = [
    0, 1, 5, 9, 10, 19, 25, 59, 60, 61, 119, 125, 199, 200,
    3599, 3600, 3601, 7199, 7205, 7300,
    86399, 86400, 86401, 90000, 172799, 172800,
]
# fmt: on

# interval -> (start, end) offsets of the query window: unaligned starts (aligned down
# by the store) and ends that fall exactly on a point (which `end` excludes).
WINDOWS = {
    1: (-2, 125),
    10: (3, 200),
    60: (61, 7300),
    3600: (3599, 90000),
    86400: (100, 172800),
}


def read_points(base: int) -> list[PointRow]:
    points: list[PointRow] = []
    for i, offset in enumerate(OFFSETS):
        # value samples of 1..3 per second, multiples of 1/4, some negative
        xs = [((i * 7 + j * 5) % 23 - 8) / 4 for j in range(1 + i % 3)]
        points.append(value("read.v", base + offset, *xs))
        # the same seconds of another metric must not leak into read.v
        points.append(value("read.other", base + offset, 1000.0))
    return points


def expected_buckets(
    points: list[PointRow], name: str, start: int, end: int, interval: int
) -> list[BucketRow]:
    low = start - start % interval
    groups: dict[int, list[PointRow]] = {}
    for point in points:
        if point[0] == name and low <= point[2] < end:
            groups.setdefault(point[2] // interval * interval, []).append(point)
    return [
        BucketRow(
            ts,
            sum(p[3] for p in group),
            sum(p[4] for p in group),
            min(p[5] for p in group),
            max(p[6] for p in group),
        )
        for ts, group in sorted(groups.items())
    ]


def expected_series(
    points: list[PointRow], start: int, end: int, interval: int, aggregation: str, fill: str
) -> list[tuple[int, float | None]]:
    """DESIGN §3 written out longhand: one point per bucket in [floor(start/I)*I, end)."""
    out: list[tuple[int, float | None]] = []
    ts = start // interval * interval
    while ts < end:
        inside = [p for p in points if p[0] == "read.v" and ts <= p[2] < min(ts + interval, end)]
        if not inside:
            if fill == "zero":
                out.append((ts, 0.0))
            elif fill == "null":
                out.append((ts, None))
        else:
            cnt = sum(p[3] for p in inside)
            total = sum(p[4] for p in inside)
            result = {
                "sum": total,
                "count": cnt,
                "avg": total / cnt,
                "min": min(p[5] for p in inside),
                "max": max(p[6] for p in inside),
                "rate": total / interval,
            }[aggregation]
            out.append((ts, result))
        ts += interval
    return out


@pytest.mark.parametrize("interval", sorted(WINDOWS))
async def test_read_buckets_and_series(store: Store, interval: int) -> None:
    base = past_day(3)
    assert base % DAY == 0  # UTC midnight
    points = read_points(base)
    await store.write_batch(Batch("w", 1, points))
    mid = await metric_id(store, "read.v")

    lo, hi = WINDOWS[interval]
    start, end = base + lo, base + hi
    rows = await store.read_buckets(mid, start, end, interval)

    assert rows == expected_buckets(points, "read.v", start, end, interval)
    assert all(row.ts % interval == 0 for row in rows)
    assert all(start // interval * interval <= row.ts < end for row in rows)
    assert base + hi not in {row.ts for row in rows}  # the point at `end` is excluded

    aggregation: Aggregation
    fill: Fill
    for aggregation in AGGREGATIONS:
        for fill in FILLS:
            got = series(rows, start, end, interval, aggregation, fill)
            assert got == expected_series(points, start, end, interval, aggregation, fill), (
                aggregation,
                fill,
            )
        # The default fill: 0 where additive, null otherwise.
        default = "zero" if aggregation in ("sum", "count", "rate") else "null"
        assert series(rows, start, end, interval, aggregation) == expected_series(
            points, start, end, interval, aggregation, default
        )


async def test_stored_values_are_read_back_exactly_over_short_and_long_ranges(
    store: Store,
) -> None:
    """Awkward doubles survive the round trip, read as one GROUP_CONCAT string (MySQL,
    a range of at most CONCAT_MAX_ROWS seconds) and row by row (a longer range)."""
    t = past_day()
    # and the few-decimal forms of the C text of MySQL's upserts (tests/test_sqltext.py)
    awkward = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -123456789.12345678,
               2.0**53 + 2, -0.0, 1e-300, 7.0, 14.391172, 0.05, -0.001, 1e-9, 2.0**52 + 0.5]
    points = [bucket("exact.v", "value", t + i, 1 + i / 7, x, x - abs(x) / 3, x)
              for i, x in enumerate(awkward)]
    assert (await store.write_batch(Batch("w", 1, points))).applied
    mid = await metric_id(store, "exact.v")
    expected = [(ts, cnt, total, mn, mx) for _n, _k, ts, cnt, total, mn, mx in points]
    short = await store.read_buckets(mid, t, t + 3600, 1)
    long = await store.read_buckets(mid, t - 2 * DAY, t + DAY, 1)  # > CONCAT_MAX_ROWS
    assert [tuple(row) for row in short] == expected
    assert [tuple(row) for row in long] == expected
    assert all(type(row.ts) is int for row in short + long)
    assert await store.read_buckets(mid, t + 100, t + 200, 1) == []


async def test_read_buckets_edges(store: Store) -> None:
    base = past_day(3)
    points = read_points(base)
    await store.write_batch(Batch("w", 1, points))
    mid = await metric_id(store, "read.v")

    # start is aligned down: [base+61, ...) at 60 s covers the point at base+60 and
    # not the one at base+59.
    rows = await store.read_buckets(mid, base + 61, base + 120, 60)
    assert [row.ts for row in rows] == [base + 60]
    assert rows[0].cnt == sum(p[3] for p in points if p[0] == "read.v" and 60 <= p[2] - base < 120)

    # end is exclusive at the second: base+120 excluded, base+119 included.
    rows = await store.read_buckets(mid, base + 60, base + 119, 60)
    assert rows == expected_buckets(points, "read.v", base + 60, base + 119, 60)
    assert rows[0].cnt < (await store.read_buckets(mid, base + 60, base + 120, 60))[0].cnt

    # Day buckets start at UTC midnight, an hour bucket at the full hour.
    rows = await store.read_buckets(mid, base + 5000, base + 3 * DAY, DAY)
    assert [row.ts for row in rows] == [base, base + DAY, base + 2 * DAY]
    rows = await store.read_buckets(mid, base + 3601, base + 3602, 3600)
    assert [row.ts for row in rows] == [base + 3600]
    # start base+3601 aligns down to base+3600, so the point at 3600 counts too:
    assert rows == expected_buckets(points, "read.v", base + 3600, base + 3602, 3600)

    # Empty windows and an unknown metric id give no rows.
    assert await store.read_buckets(mid, base - DAY, base, 60) == []
    assert await store.read_buckets(mid, base + 10, base + 10, 1) == []
    assert await store.read_buckets(mid + 1000, base, base + 3 * DAY, 60) == []


async def test_read_buckets_avg_of_sampled_values(store: Store) -> None:
    t = past_day()
    # x|ms|@0.5 twice: each adds 2 to cnt and 2x to sum, x to min/max.
    await store.write_batch(
        Batch(
            "w",
            1,
            [
                bucket("timer", "value", t, 2, 20, 10, 10),
                bucket("timer", "value", t + 1, 2, 60, 30, 30),
            ],
        )
    )
    rows = await store.read_buckets(await metric_id(store, "timer"), t, t + 10, 10)
    assert rows == [BucketRow(t, 4.0, 80.0, 10.0, 30.0)]
    assert series(rows, t, t + 10, 10, "avg") == [(t, 20.0)]
    assert series(rows, t, t + 10, 10, "rate") == [(t, 8.0)]
    assert series(rows, t, t + 10, 10, "count") == [(t, 4.0)]


# -- metrics listing ---------------------------------------------------------------


LIKE_NAMES = ["a_b.x", "aXb.x", "a_b", "a-b.y", "a_b-c", "a_bc", "ab", "Z.top", "a1b.x", "a_"]


async def _create(store: Store, names: list[str], t: int) -> None:
    await store.write_batch(Batch("w", 1, [counter(name, t, 1) for name in names]))


async def test_list_metrics_prefix_is_not_a_like_pattern(store: Store) -> None:
    await _create(store, LIKE_NAMES, past_day())

    async def names(prefix: str) -> list[str]:
        return [m.name for m in await store.list_metrics(prefix, 100, None)]

    assert await names("a_b") == ["a_b", "a_b-c", "a_b.x", "a_bc"]
    assert await names("a_b.") == ["a_b.x"]
    assert await names("a-b") == ["a-b.y"]
    assert await names("a_") == ["a_", "a_b", "a_b-c", "a_b.x", "a_bc"]
    assert await names("a") == sorted(n for n in LIKE_NAMES if n.startswith("a"))
    assert await names("aXb") == ["aXb.x"]
    assert await names("A") == []  # case-sensitive
    assert await names("a_b.x.y") == []
    # Byte order everywhere: "-" < "." < digits < upper case < "_" < lower case.
    assert await names("") == sorted(LIKE_NAMES)
    assert sorted(LIKE_NAMES)[0] == "Z.top"


async def test_get_metric(store: Store) -> None:
    before = int(time.time())
    t = past_day()
    await store.write_batch(
        Batch("w", 1, [counter("g.c", t + 5, 1), counter("g.c", t, 1), value("g.v", t + 9, 1)])
    )
    await store.write_batch(Batch("w", 2, [counter("g.c", t + 100, 1)]))
    after = int(time.time())

    c = await store.get_metric("g.c")
    assert c is not None
    assert (c.name, c.kind, c.first_ts, c.last_ts) == ("g.c", "counter", t, t + 100)
    assert before <= c.created_at <= after
    v = await store.get_metric("g.v")
    assert v is not None
    assert (v.name, v.kind, v.first_ts, v.last_ts) == ("g.v", "value", t + 9, t + 9)
    assert v.id != c.id

    assert await store.get_metric("g") is None
    assert await store.get_metric("g.c.x") is None
    assert await store.get_metric("G.C") is None  # names are case-sensitive
    assert await store.get_metric("g_c") is None  # no wildcards
    assert await store.list_metrics("g.", 10, None) == [c, v]

    # A metric whose points all expired keeps its name and kind, without first/last.
    assert await store.delete_points_before(t + 10, 100) == 3
    c = await store.get_metric("g.c")
    assert c is not None and (c.first_ts, c.last_ts) == (t + 100, t + 100)
    v = await store.get_metric("g.v")
    assert v is not None and (v.kind, v.first_ts, v.last_ts) == ("value", None, None)


async def test_list_metrics_pagination(store: Store) -> None:
    t = past_day()
    inside = [f"page.{i:02d}" for i in range(23)] + ["page.A", "page._", "page.-"]
    outside = ["page", "pagf.0", "pag.0", "pagex"]
    points = [counter(name, t + i, 1) for i, name in enumerate(inside + outside)]
    await store.write_batch(Batch("w", 1, points))

    walked: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        page = await store.list_metrics("page.", 5, after)
        pages += 1
        assert len(page) <= 5
        walked.extend(m.name for m in page)
        if len(page) < 5:
            break
        after = page[-1].name
    assert walked == sorted(inside)
    assert pages == math.ceil(len(inside) / 5) + (len(inside) % 5 == 0)

    # first/last on the listed rows
    listed = {m.name: m for m in await store.list_metrics("page.", 100, None)}
    for i, name in enumerate(inside):
        assert (listed[name].first_ts, listed[name].last_ts) == (t + i, t + i)

    # A cursor before the prefix starts at the beginning; one after it ends the listing.
    assert [m.name for m in await store.list_metrics("page.", 3, "a")] == sorted(inside)[:3]
    assert await store.list_metrics("page.", 3, "pagf") == []
    assert await store.list_metrics("page.", 3, sorted(inside)[-1]) == []
    # limit applies after the prefix filter
    assert [m.name for m in await store.list_metrics("", 2, "page.23")] == ["page.A", "page._"]


async def test_non_ascii_names_are_simply_absent(
    store: Store
) -> None:
    """A name from a URL is not validated before lookup: no match, not an error."""
    await _create(store, ["caf"], past_day())
    assert await store.get_metric("café") is None
    assert await store.list_metrics("café", 10, None) == []
    assert await store.list_metrics("caf", 10, "cafë") == []


# -- keys ----------------------------------------------------------------------


async def test_keys_create_find_list_revoke(store: Store) -> None:
    now = int(time.time())
    tokens = [generate_token() for _ in range(4)]
    a = await store.create_key(
        "deploy", hash_token(tokens[0]), display_prefix(tokens[0]), ("read", "write"), None, now
    )
    b = await store.create_key(
        "grafana", hash_token(tokens[1]), display_prefix(tokens[1]), ("read",), "100/s", now + 1
    )
    c = await store.create_key(
        "deploy", hash_token(tokens[2]), display_prefix(tokens[2]), ("write",), "5/s", now + 2
    )
    assert (a.name, a.key_hash, a.display_prefix, a.scopes, a.rate_limit, a.created_at) == (
        "deploy",
        hash_token(tokens[0]),
        tokens[0][:8],
        ("read", "write"),
        None,
        now,
    )
    assert a.revoked_at is None
    assert len({a.id, b.id, c.id}) == 3

    assert await store.find_key(hash_token(tokens[0])) == a
    assert await store.find_key(hash_token(tokens[1])) == b
    assert await store.find_key(hash_token(tokens[3])) is None  # never created
    assert await store.list_keys() == [a, b, c]

    # By name: both "deploy" keys.
    assert await store.revoke_key("deploy", now + 10) == 2
    assert await store.revoke_key("deploy", now + 20) == 0  # already revoked
    found = await store.find_key(hash_token(tokens[0]))
    assert found is not None and found.revoked_at == now + 10
    assert found._replace(revoked_at=None) == a
    found = await store.find_key(hash_token(tokens[2]))
    assert found is not None and found.revoked_at == now + 10

    # By display prefix.
    assert await store.revoke_key("nothing", now) == 0
    assert await store.revoke_key(b.display_prefix, now + 30) == 1
    found = await store.find_key(b.key_hash)
    assert found is not None and found.revoked_at == now + 30
    assert [k.revoked_at for k in await store.list_keys()] == [now + 10, now + 30, now + 10]


# -- retention -------------------------------------------------------------------


async def test_delete_points_before_in_chunks(store: Store) -> None:
    t = past_day(8)
    points = (
        [counter("ret.a", t + s, 1) for s in range(50)]
        + [value("ret.b", t + s, 2) for s in range(30)]
        + [counter("ret.c", t + 40 + s, 3) for s in range(20)]
    )
    await store.write_batch(Batch("w", 1, points))
    before = t + 40

    # One call: at most `chunk` rows per metric, oldest first.
    assert await store.delete_points_before(before, 10) == 20
    a = await stored(store, "ret.a", t - DAY, t + DAY)
    assert sorted(a) == [t + s for s in range(10, 50)]
    b = await stored(store, "ret.b", t - DAY, t + DAY)
    assert sorted(b) == [t + s for s in range(10, 30)]

    calls, total = 1, 20
    while (deleted := await store.delete_points_before(before, 10)) > 0:
        calls += 1
        total += deleted
        assert calls < 10
    assert (calls, total) == (4, 70)

    assert sorted(await stored(store, "ret.a", t - DAY, t + DAY)) == [t + s for s in range(40, 50)]
    assert await stored(store, "ret.b", t - DAY, t + DAY) == {}
    kept = await stored(store, "ret.c", t - DAY, t + DAY)
    assert kept == {t + 40 + s: (1.0, 3.0, 3.0, 3.0) for s in range(20)}  # ts == before kept
    assert await store.delete_points_before(before, 10) == 0


async def test_delete_flush_records_before(store: Store) -> None:
    t = past_day()
    batch = Batch("w", 1, [counter("fr", t, 1)])
    assert (await store.write_batch(batch)).applied
    assert (await store.write_batch(Batch("w", 2, [counter("fr", t, 1)]))).applied
    now = int(time.time())

    assert await store.delete_flush_records_before(now - 3600) == 0
    assert not (await store.write_batch(batch)).applied  # still remembered
    assert await store.delete_flush_records_before(now + 10) == 2
    assert await store.delete_flush_records_before(now + 10) == 0
    # Forgotten: the same (writer, seq) now applies again.
    assert (await store.write_batch(batch)).applied
    assert await stored(store, "fr", t, t + 1) == {t: (3.0, 3.0, 1.0, 1.0)}


# -- unavailability --------------------------------------------------------------


@pytest.mark.mysql
async def test_unreachable_mysql_is_unavailable() -> None:
    unreachable = open_store("mysql://root@127.0.0.1:1/x")  # port 1: nothing listens
    try:
        with pytest.raises(StoreUnavailable):
            await unreachable.ping()
        with pytest.raises(StoreUnavailable):
            await unreachable.write_batch(Batch("w", 1, [counter("m", 1_000_000, 1)]))
        with pytest.raises(StoreUnavailable):
            await unreachable.get_metric("m")
    finally:
        await unreachable.close()


async def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    broken = open_store(f"sqlite:///{tmp_path}")
    try:
        with pytest.raises(StoreError):  # StoreUnavailable is a StoreError
            await broken.migrate()
        with pytest.raises(StoreError):
            await broken.ping()
    finally:
        await broken.close()
