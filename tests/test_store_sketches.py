"""Summaries in the store (sketch_1m, sketch_1h): merged on write by kind, in the points'
transaction, exactly once; read back per bucket; spooled, quarantined, expired and
filled by migration 4. On SQLite and on MariaDB.

Sample values are integers and weights integers or halves, so a merge of sketches is
bit-for-bit the sketch of all their samples: expected summaries are built here from the
samples, never read back from the store.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
import pytest

from collector.config import CollectorConfig
from collector.retention import retention_levels, retention_pass
from protocol import hll, summary
from protocol.names import Kind
from protocol.sketch import Sketch
from store import Batch, PointRow, Store, StoreError, StoreUnavailable, WriteResult, open_store
from store import mysql as mysql_backend
from store import sqlite as sqlite_backend
from store.base import SketchRow
from store.durable import DurableWriter
from store.mysql import MySQLStore
from store.rollups import sketch_plan
from store.spool import FORMAT_VERSION, Quarantine, Spool, decode_sketches, encode_sketches
from tests import mysqldirect
from tests.mysqldirect import fetch_all

DAY = 86400
ALPHA = 0.01


def midnight(days_ago: int = 3) -> int:
    now = int(time.time())
    return now - now % DAY - days_ago * DAY


BASE = midnight()


# -- helpers -----------------------------------------------------------------------------


def sketch(samples: Iterable[float | tuple[float, float]]) -> bytes:
    """The sketch of ``samples`` (a value, or (value, weight)), as the collector sends."""
    built = Sketch()
    for sample in samples:
        if isinstance(sample, tuple):
            built.add(*sample)
        else:
            built.add(sample)
    return built.to_bytes()


def value_row(name: str, ts: int, samples: Sequence[float]) -> tuple[PointRow, SketchRow]:
    """One metric-second of value samples: its point and its minute's sketch delta."""
    point: PointRow = (name, "value", ts, float(len(samples)), float(sum(samples)),
                       min(samples), max(samples))
    return point, (name, "value", ts - ts % 60, sketch(samples))


def gauge(name: str, ts: int, last: float) -> SketchRow:
    return (name, "gauge", ts - ts % 60, summary.encode_last(last))


def members(name: str, ts: int, who: Iterable[str]) -> SketchRow:
    counted = hll.DistinctCount()
    for member in who:
        counted.add(member)
    return (name, "set", ts - ts % 60, counted.to_bytes())


async def mid(store: Store, name: str) -> int:
    info = await store.get_metric(name)
    assert info is not None, name
    return info.id


def lower_quantile(samples: list[float], q: float) -> float:
    """What Sketch.quantile estimates: the sample of rank floor(q * (n - 1))."""
    ordered = sorted(samples)
    return ordered[math.floor(q * (len(ordered) - 1))]


def table(url: str, name: str) -> dict[tuple[int, int], bytes]:
    return {(int(m), int(t)): bytes(d)
            for m, t, d in fetch_all(url, f"SELECT metric_id, ts, data FROM {name}")}


def execute(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return
    server = mysqldirect.connect(url)
    try:
        with server.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        server.close()


# -- merging on write ------------------------------------------------------------------


async def test_two_writers_of_one_minute_make_the_sketch_of_all_samples(
    store: Store, database_url: str
) -> None:
    rng = random.Random(1)
    samples = [float(round(rng.lognormvariate(3, 1.2))) + 1 for _ in range(3000)]
    minute = BASE + 7 * 60
    # Two writers (on MariaDB two stores: two pools), each flushing deltas every second.
    other = open_store(database_url)
    try:
        seq = {"a": 0, "b": 0}
        for n in range(30):
            writer, target = ("a", store) if n % 2 else ("b", other)
            part = samples[n * 100 : (n + 1) * 100]
            point, row = value_row("t.lat", minute + n, part)
            seq[writer] += 1
            result = await target.write_batch(Batch(writer, seq[writer], [point], [row]))
            assert result.applied and result.rows == 1 and result.sketches == 1
    finally:
        await other.close()
    [(ts, data)] = await store.read_sketches(await mid(store, "t.lat"), "value", minute,
                                              minute + 60, 60)
    assert ts == minute
    assert data == sketch(samples)  # merging added bins: exactly one sketch of all samples
    merged = Sketch.from_bytes(data)
    assert merged.count == len(samples)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = lower_quantile(samples, q)
        estimate = merged.quantile(q)
        assert estimate is not None and abs(estimate - exact) <= ALPHA * exact, q


async def test_the_hour_is_the_merge_of_its_minutes(store: Store, database_url: str) -> None:
    rng = random.Random(2)
    hour = BASE + 5 * 3600
    everything: list[float] = []
    seq = 0
    for minute in range(0, 60, 7):
        for second in (0, 31):
            part = [float(rng.randrange(1, 5000)) for _ in range(20)]
            everything += part
            point, row = value_row("h.lat", hour + minute * 60 + second, part)
            seq += 1
            await store.write_batch(Batch("w", seq, [point], [row]))
    metric = await mid(store, "h.lat")
    minutes = {ts: data for (m, ts), data in table(database_url, "sketch_1m").items()
               if m == metric}
    hours = {ts: data for (m, ts), data in table(database_url, "sketch_1h").items()
             if m == metric}
    assert sorted(minutes) == [hour + m * 60 for m in range(0, 60, 7)]
    assert hours == {hour: summary.merge("value", [minutes[ts] for ts in sorted(minutes)])}
    assert hours[hour] == sketch(everything)
    assert await store.read_sketches(metric, "value", hour, hour + 3600, 3600) == [
        (hour, sketch(everything))]


async def test_a_batch_merges_its_own_rows_of_one_minute_and_hour(store: Store) -> None:
    """An HTTP group commit holds several requests' rows of one metric-minute, and a
    spooled batch several minutes of one hour: each key is merged once."""
    t = BASE + 3600
    rows: list[SketchRow] = [
            ("b.x", "value", t, sketch([1.0, 2.0])), ("b.x", "value", t, sketch([3.0])),
            ("b.x", "value", t + 60, sketch([4.0])), ("b.x", "value", t + 7200, sketch([5.0]))]
    result = await store.write_batch(Batch("w", 1, [], rows))
    assert result == (True, 0, {}, 4)
    metric = await mid(store, "b.x")  # created by its sketches alone
    assert await store.read_sketches(metric, "value", t, t + 3 * 3600, 60) == [
        (t, sketch([1.0, 2.0, 3.0])), (t + 60, sketch([4.0])), (t + 7200, sketch([5.0]))]
    assert await store.read_sketches(metric, "value", t, t + 3 * 3600, 3600) == [
        (t, sketch([1.0, 2.0, 3.0, 4.0])), (t + 7200, sketch([5.0]))]


async def test_a_replayed_batch_adds_no_weight(store: Store) -> None:
    point, row = value_row("once.lat", BASE + 10, [5.0, 6.0, 7.0])
    batch = Batch("w", 1, [point], [row])
    assert (await store.write_batch(batch)).applied
    again = await store.write_batch(batch)
    assert again == (False, 0, {}, 0)
    metric = await mid(store, "once.lat")
    for interval in (60, 3600):
        [(_ts, data)] = await store.read_sketches(metric, "value", BASE, BASE + 3600, interval)
        assert data == sketch([5.0, 6.0, 7.0])


async def test_a_gauge_keeps_the_last_value_written(store: Store) -> None:
    t = BASE + 2 * 3600
    await store.write_batch(Batch("w", 1, [], [gauge("g.temp", t, 1.0)]))
    await store.write_batch(Batch("w", 2, [], [gauge("g.temp", t, 5.0), gauge("g.temp", t, 3.0)]))
    metric = await mid(store, "g.temp")
    assert await store.read_sketches(metric, "gauge", t, t + 60, 60) == [
        (t, summary.encode_last(3.0))]
    # By arrival, not by timestamp: a late minute written last is the hour's last.
    await store.write_batch(Batch("w", 3, [], [gauge("g.temp", t + 120, 7.0)]))
    await store.write_batch(Batch("w", 4, [], [gauge("g.temp", t + 60, 9.0)]))
    assert await store.read_sketches(metric, "gauge", t, t + 3600, 3600) == [
        (t, summary.encode_last(9.0))]
    # Across minutes read from sketch_1m: the newest minute's.
    assert await store.read_sketches(metric, "gauge", t, t + 180, 180) == [
        (t, summary.encode_last(7.0))]
    assert (await store.gauge_lasts())["g.temp"] == 7.0


async def test_sets_are_the_union_of_their_writers(store: Store, database_url: str) -> None:
    t = BASE + 600
    other = open_store(database_url)
    try:
        await store.write_batch(Batch("a", 1, [], [members("s.users", t, map(str, range(100)))]))
        await other.write_batch(Batch("b", 1, [], [
            members("s.users", t, map(str, range(50, 150))),
            members("s.users", t + 60, (f"u{i}" for i in range(5000))),
        ]))
        await store.write_batch(Batch("a", 2, [], [
            members("s.users", t + 60, (f"u{i}" for i in range(2500, 7500)))]))
    finally:
        await other.close()
    metric = await mid(store, "s.users")
    [(_, first), (_, second)] = await store.read_sketches(metric, "set", t, t + 120, 60)
    assert round(hll.estimate(first)) == 150  # small sets are exact
    assert abs(hll.estimate(second) - 7500) <= 0.02 * 7500
    [(_, hour)] = await store.read_sketches(metric, "set", BASE, BASE + 3600, 3600)
    assert abs(hll.estimate(hour) - 7650) <= 0.02 * 7650


async def test_kind_conflicts_drop_the_sketch_with_its_points(store: Store) -> None:
    t = BASE + 60
    await store.write_batch(Batch("w", 1, [("k.c", "counter", t, 1.0, 1.0, 1.0, 1.0)]))
    point, row = value_row("k.c", t, [2.0])
    result = await store.write_batch(Batch("w", 2, [point], [row, gauge("k.new", t, 4.0)]))
    assert result == (True, 0, {"k.c": "counter"}, 1)
    assert await store.read_sketches(await mid(store, "k.c"), "value", t, t + 60, 60) == []
    assert (await store.get_metric("k.new")) is not None


@pytest.mark.parametrize("row", [
    ("bad.c", "counter", BASE, b"\x01\x64\x00\x00\x00\x00"),  # counters have no summary
    ("bad.v", "value", BASE, b"not a sketch"),
    ("bad.g", "gauge", BASE, b"\x00" * 7),
    ("bad.s", "set", BASE, b"not an hll"),
    ("bad.v", "value", BASE, summary.encode_last(1.0)),  # a gauge's bytes as a sketch
])
async def test_a_sketch_that_is_not_of_its_kind_refuses_the_batch(
    store: Store, row: SketchRow
) -> None:
    point, good = value_row("fine", BASE, [1.0])
    with pytest.raises(StoreError):
        await store.write_batch(Batch("w", 1, [point], [good, row]))
    assert await store.get_metric(row[0]) is None  # nothing created, nothing written
    info = await store.get_metric("fine")
    assert info is None or await store.read_sketches(info.id, "value", BASE, BASE + 60, 60) == []
    assert (await store.write_batch(Batch("w", 1, [point], [good]))).applied  # not recorded


async def test_a_stored_summary_that_cannot_be_read_refuses_merges_into_it(
    store: Store, database_url: str
) -> None:
    point, row = value_row("rot.lat", BASE, [1.0])
    later = value_row("rot.lat", BASE + 60, [2.0])[1]
    await store.write_batch(Batch("w", 1, [point], [row, later]))
    metric = await mid(store, "rot.lat")
    execute(database_url, "UPDATE sketch_1m SET data = x'0102' "
                          f"WHERE metric_id = {metric} AND ts = {BASE}")
    with pytest.raises(StoreError, match=r"rot\.lat"):
        await store.write_batch(Batch("w", 2, [point], [row]))
    with pytest.raises(StoreError):  # a bucket of two minutes: merged, so read
        await store.read_sketches(metric, "value", BASE, BASE + 120, 120)


# -- reading ---------------------------------------------------------------------------


async def test_read_sketches_per_minute_hour_and_day(store: Store) -> None:
    rng = random.Random(5)
    written: dict[int, list[float]] = {}  # minute -> samples
    batches = []
    for minute in [0, 1, 2, 59, 60, 61, 62, 300, 1440, 1441, 1500]:  # in minutes from BASE
        ts = BASE + minute * 60 + rng.randrange(60)
        samples = [float(rng.randrange(-100, 1000)) for _ in range(rng.randrange(1, 30))]
        written.setdefault(ts - ts % 60, []).extend(samples)
        batches.append(value_row("r.lat", ts, samples))
    await store.write_batch(Batch("w", 1, [p for p, _ in batches], [s for _, s in batches]))
    metric = await mid(store, "r.lat")

    def expect(start: int, end: int, interval: int) -> list[tuple[int, bytes]]:
        start -= start % interval
        buckets: dict[int, list[float]] = {}
        for ts in sorted(written):
            if start <= ts < end:
                buckets.setdefault(ts - ts % interval, []).extend(written[ts])
        return [(ts, sketch(samples)) for ts, samples in sorted(buckets.items())]

    end = BASE + 2 * DAY
    for start, stop, interval in [
        (BASE, end, 60), (BASE, end, 3600), (BASE, end, DAY), (BASE, end, 120),
        (BASE + 90, end, 60),  # start aligned down
        (BASE, BASE + 3600 + 150, 3600),  # whole hours from sketch_1h, the tail from minutes
        (BASE + 3600, BASE + 3 * 3600, 3600), (BASE + 1800, BASE + DAY + 7200, 3600),
        (BASE, BASE + 61 * 60, 1800),
    ]:
        got = await store.read_sketches(metric, "value", start, stop, interval)
        assert got == expect(start, stop, interval), (start - BASE, stop - BASE, interval)
    assert await store.read_sketches(metric, "value", BASE + 10 * DAY, BASE + 11 * DAY, 60) == []
    for interval in (10, 1, 0, -60, 90):
        with pytest.raises(ValueError):
            await store.read_sketches(metric, "value", BASE, end, interval)


async def test_read_sketches_merged_merges_metrics_per_bucket(store: Store) -> None:
    rows = [value_row(f"m.{n}", BASE + 60 * minute + n, [float(n * 10 + minute)])
            for n in range(3) for minute in range(3)]
    await store.write_batch(Batch("w", 1, [p for p, _ in rows], [s for _, s in rows]))
    ids = [await mid(store, f"m.{n}") for n in range(3)]
    got = await store.read_sketches_merged(ids, "value", BASE, BASE + 180, 60)
    assert got == [(BASE + 60 * minute, sketch([float(n * 10 + minute) for n in range(3)]))
                   for minute in range(3)]
    assert await store.read_sketches_merged(ids[:2], "value", BASE, BASE + 3600, 3600) == [
        (BASE, sketch([float(n * 10 + m) for n in range(2) for m in range(3)]))]
    assert await store.read_sketches_merged([], "value", BASE, BASE + 60, 60) == []


def test_the_read_plan() -> None:
    assert sketch_plan(BASE, BASE + DAY, 3600) == [("sketch_1h", BASE, BASE + DAY)]
    assert sketch_plan(BASE + 5, BASE + 7290, 3600) == [
        ("sketch_1h", BASE, BASE + 7200), ("sketch_1m", BASE + 7200, BASE + 7290)]
    assert sketch_plan(BASE, BASE + 600, 300) == [("sketch_1m", BASE, BASE + 600)]
    assert sketch_plan(BASE, BASE, 60) == []
    with pytest.raises(ValueError):
        sketch_plan(BASE, BASE + 60, 30)


async def test_gauge_lasts_are_each_gauges_newest_minute(store: Store) -> None:
    t = BASE + 3600
    point, row = value_row("not.a.gauge", t, [1.0])
    await store.write_batch(Batch("w", 1, [point], [
        row, gauge("g.a", t, 1.5), gauge("g.a", t + 60, -2.5), gauge("g.b", t - 3600, 0.0)]))
    await store.write_batch(Batch("w", 2, [], [gauge("g.a", t + 30, 8.0)]))  # an older minute
    assert await store.gauge_lasts() == {"g.a": -2.5, "g.b": 0.0}


# -- many writers on MariaDB -------------------------------------------------------------


async def test_concurrent_mariadb_writers_of_the_same_keys_never_deadlock(
    mysql_url: str,
) -> None:
    """Two stores (two pools of four connections), 80 flushes at once, each a random
    half of the same 150 metric-minutes and of 60 gauge-minutes, their ids interleaved:
    the placeholder upsert locks every merged key in one order before any gauge's key
    is written, so they wait for each other and never deadlock (no retry even), every
    delta counts once, and each gauge holds a value written to it."""
    stores = [MySQLStore.from_url(mysql_url, pool_size=4) for _ in range(2)]
    await stores[0].migrate()
    rng = random.Random(7)
    names = [f"c.{n}" for n in range(50)]
    gauges = [f"c.{n}.g" for n in range(20)]
    minutes = [BASE + 60 * m for m in (0, 1, 59)]
    keys = [(name, ts) for name in names for ts in minutes]
    gauge_keys = [(name, ts) for name in gauges for ts in minutes]
    # Create the metrics first (ids of both kinds interleaved): the race under test is
    # the sketches'.
    await stores[0].write_batch(Batch("seed", 1, [
        (n, "gauge" if n in gauges else "value", BASE, 1.0, 1.0, 1.0, 1.0)
        for n in sorted(names + gauges)]))
    expected: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    written: dict[tuple[str, int], set[float]] = {key: set() for key in gauge_keys}
    batches: list[tuple[int, Batch]] = []
    for n in range(80):
        rows: list[SketchRow] = []
        for name, ts in rng.sample(keys, len(keys) // 2):
            samples = [float(rng.randrange(1, 10_000)) for _ in range(rng.randrange(1, 40))]
            expected[(name, ts)] += samples
            rows.append((name, "value", ts, sketch(samples)))
        for name, ts in rng.sample(gauge_keys, len(gauge_keys) // 2):
            written[(name, ts)].add(float(n))
            rows.append(gauge(name, ts, float(n)))
        points: list[PointRow] = [(name, "value", ts + 1, 1.0, 2.0, 2.0, 2.0)
                                  for name, _kind, ts, _data in rows[:20]]
        batches.append((n % 2, Batch(f"writer-{n % 2}", n, points, rows)))
    try:
        results = await asyncio.gather(*(stores[which].write_batch(batch)
                                         for which, batch in batches))
        assert all(result.applied for result in results)
        assert [s.lock_retries for s in stores] == [0, 0]
        for name in names[:5]:
            metric = await mid(stores[1], name)
            got = dict(await stores[1].read_sketches(metric, "value", BASE, BASE + 3600, 60))
            assert got == {ts: sketch(expected[(name, ts)]) for ts in minutes}, name
            [(_, hour)] = await stores[1].read_sketches(metric, "value", BASE, BASE + 3600,
                                                        3600)
            assert hour == sketch([x for ts in minutes for x in expected[(name, ts)]])
        for name in gauges[:5]:
            metric = await mid(stores[1], name)
            lasts = dict(await stores[1].read_sketches(metric, "gauge", BASE, BASE + 3600, 60))
            assert set(lasts) == {ts for ts in minutes if written[(name, ts)]}
            for ts, data in lasts.items():
                assert summary.decode_last(data) in written[(name, ts)], (name, ts)
    finally:
        for opened in stores:
            await opened.close()


# -- the spool, the quarantine, the durable writer --------------------------------------


def some_sketches() -> list[SketchRow]:
    return [value_row("sp.lat", BASE + 5, [1.0, 2.0, 30.0])[1], gauge("sp.g", BASE, 2.0),
            members("sp.s", BASE, ["a", "b"]), ("sp.empty", "value", BASE + 60, b"")]


def test_sketch_chunks_round_trip() -> None:
    rows = some_sketches() * 3
    for per_chunk in (1, 2, 500):
        assert decode_sketches(encode_sketches(rows, per_chunk)) == rows
    assert encode_sketches([]) == []
    raw = zlib.decompress(encode_sketches(rows)[0])
    for broken in (raw[:-1], raw + b"x", raw[:3]):
        with pytest.raises(ValueError):
            decode_sketches([zlib.compress(broken)])


async def test_a_spooled_batch_keeps_its_sketches(tmp_path: Path) -> None:
    point, _ = value_row("sp.lat", BASE + 5, [1.0, 2.0, 30.0])
    batch = Batch("w", 3, [point], tuple(some_sketches()))
    spool = await Spool.open(tmp_path, "t")
    await spool.put_many([batch, Batch("w", 4, [point])])
    assert (spool.batches, spool.rows) == (2, 6)
    await spool.close()
    spool = await Spool.open(tmp_path, "t")
    head = await spool.head()
    assert head is not None and head.batch == batch
    await spool.remove(head)
    head = await spool.head()
    assert head is not None and head.batch == Batch("w", 4, [point])
    await spool.remove(head)
    assert (spool.batches, spool.rows) == (0, 0)
    await spool.close()


async def test_a_format_1_spool_is_read_and_then_takes_sketches(tmp_path: Path) -> None:
    """A spool left by the version before sketches: its batches come back without
    sketches, and the file takes batches with them from then on."""
    path = tmp_path / "spool-t.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, writer_id TEXT NOT NULL, "
        "seq INTEGER NOT NULL, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, "
        "spooled_at REAL NOT NULL);"
        "CREATE TABLE chunks (batch_id INTEGER NOT NULL, n INTEGER NOT NULL, "
        "data BLOB NOT NULL, PRIMARY KEY (batch_id, n));"
        "PRAGMA user_version = 1;")
    point: PointRow = ("old", "counter", BASE, 1.0, 2.0, 2.0, 2.0)
    data = zlib.compress(orjson.dumps([point]))
    conn.execute("INSERT INTO batches VALUES (1, 'old-writer', 7, 1, ?, 0)", (len(data),))
    conn.execute("INSERT INTO chunks VALUES (1, 0, ?)", (data,))
    conn.commit()
    conn.close()
    spool = await Spool.open(tmp_path, "t")
    assert (spool.batches, spool.rows) == (1, 1)
    head = await spool.head()
    assert head is not None and head.batch == Batch("old-writer", 7, [point])
    new = Batch("w", 1, [], tuple(some_sketches()))
    await spool.put(new)
    await spool.remove(head)
    head = await spool.head()
    assert head is not None and head.batch == new
    await spool.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION == 2
    conn.close()


async def test_the_writer_spools_sketches_and_replays_them_once(
    store: Store, tmp_path: Path
) -> None:
    down = True

    async def write(batch: Batch) -> WriteResult:
        if down:
            raise StoreUnavailable("down")
        return await store.write_batch(batch)

    spool = await Spool.open(tmp_path, "t")
    writer = DurableWriter(write, "w", spool=spool, spool_after=0.0)
    writer.start()
    point, row = value_row("rp.lat", BASE + 1, [3.0, 4.0])
    writer.submit([point], [row, gauge("rp.g", BASE, 6.0)])
    assert writer.pending_rows == 3
    deadline = time.monotonic() + 20
    while spool.batches == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert writer.stats.spooled_rows == 3
    down = False
    writer.submit([], [gauge("rp.g", BASE, 7.0)])  # after the spooled one: it wins
    while spool.batches or writer.pending:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await writer.close(5)
    await spool.close()
    assert writer.stats.sketches_flushed == 3 and writer.stats.rows_flushed == 1
    [(_, data)] = await store.read_sketches(await mid(store, "rp.lat"), "value", BASE,
                                            BASE + 60, 60)
    assert data == sketch([3.0, 4.0])
    assert (await store.gauge_lasts())["rp.g"] == 7.0


async def test_commit_waits_for_points_and_sketches(store: Store) -> None:
    writer = DurableWriter(store.write_batch, "w")
    writer.start()
    point, row = value_row("cm.lat", BASE + 1, [3.0])
    outcome = await writer.commit([point], [row])
    await writer.close(5)
    assert outcome.result == (True, 1, {}, 1) and not outcome.spooled
    assert outcome.refused == outcome.refused_sketches == frozenset()


REFUSED_LAST = 666.0  # a gauge value the database is made to refuse (a trigger)


def refuse_gauge(url: str) -> None:
    """A real permanent error on a valid summary: sketch_1m refuses one gauge value."""
    marker = struct.pack("<d", REFUSED_LAST).hex()
    if url.startswith("sqlite"):
        execute(url, "CREATE TRIGGER refuse BEFORE INSERT ON sketch_1m "
                     f"WHEN NEW.data = x'{marker}' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    else:
        execute(url, "CREATE TRIGGER refuse BEFORE INSERT ON sketch_1m FOR EACH ROW BEGIN "
                     f"IF NEW.data = x'{marker}' THEN SIGNAL SQLSTATE '45000' "
                     "SET MESSAGE_TEXT = 'refused'; END IF; END")


async def test_quarantine_isolates_bad_sketches_and_replays_them(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    refuse_gauge(database_url)
    rows = [value_row(f"q.{n % 9}", BASE + n, [float(n), float(n + 1)]) for n in range(200)]
    bad_blob: SketchRow = ("q.0", "value", BASE, b"garbage")
    refused: SketchRow = gauge("q.g", BASE, REFUSED_LAST)
    counter_sketch: SketchRow = ("q.c", "counter", BASE, sketch([1.0]))
    sketches = [s for _, s in rows]
    sketches[50:50] = [bad_blob]
    sketches[120:120] = [refused, counter_sketch]
    writer = DurableWriter(store.write_batch, "w", quarantine=Quarantine(tmp_path))
    writer.start()
    outcome = await writer.commit([p for p, _ in rows], sketches)
    await writer.close(5)
    assert outcome.refused == frozenset()  # every point written
    assert outcome.refused_sketches == {("q.0", BASE), ("q.g", BASE), ("q.c", BASE)}
    assert outcome.result.rows == 200 and outcome.result.sketches == 200
    assert writer.stats.quarantined_rows == 3
    for n in range(9):  # every good sketch merged once, the bad one not at all
        samples = [float(x) for i in range(n, 200, 9) for x in (i, i + 1)]
        [(_, data)] = await store.read_sketches(await mid(store, f"q.{n}"), "value", BASE,
                                                BASE + 3600, 3600)
        assert data == sketch(samples)
    held = Quarantine(tmp_path)
    try:
        entries = await held.list()
        assert sorted(e.rows for e in entries) == [1, 1, 1]
        parts = {e.id: await held.get(e.id) for e in entries}
        assert sorted(row for b in parts.values() if b for row in b.sketches) == sorted(
            [bad_blob, refused, counter_sketch])
        assert all(b is not None and b.points == [] for b in parts.values())
        execute(database_url, "DROP TRIGGER refuse")  # the cause fixed: the refused replays
        for quarantine_id, part in parts.items():
            assert part is not None
            if part.sketches[0] is refused or part.sketches[0] == refused:
                assert (await store.write_batch(part)).sketches == 1
                await held.remove(quarantine_id)
            else:
                with pytest.raises(StoreError):
                    await store.write_batch(part)
        assert (await store.gauge_lasts())["q.g"] == REFUSED_LAST
        assert len(await held.list()) == 2
    finally:
        await held.close()


async def test_a_quarantine_file_from_before_sketches_is_upgraded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "quarantine.sqlite")
    conn.execute("CREATE TABLE quarantine (id INTEGER PRIMARY KEY, writer_id TEXT NOT NULL, "
                 "seq INTEGER NOT NULL, rows INTEGER NOT NULL, error TEXT NOT NULL, "
                 "quarantined_at REAL NOT NULL, data BLOB NOT NULL)")
    point: PointRow = ("old", "counter", BASE, 1.0, 2.0, 2.0, 2.0)
    conn.execute("INSERT INTO quarantine VALUES (1, 'w', 2, 1, 'refused', 0, ?)",
                 (zlib.compress(orjson.dumps([point])),))
    conn.commit()
    conn.close()
    held = Quarantine(tmp_path)
    try:
        assert await held.get(1) == Batch("w", 2, [point])
        new = Batch("w", 3, [], (gauge("g", BASE, 1.0),))
        await held.put(new, "refused too")
        [_, entry] = await held.list()
        assert await held.get(entry.id) == new and entry.rows == 1
    finally:
        await held.close()


# -- retention ---------------------------------------------------------------------------


async def test_retention_expires_each_sketch_level_with_its_point_level(
    store: Store, database_url: str
) -> None:
    now = int(time.time())
    hour = now - now % 3600 - 10 * DAY
    rows = [value_row("ret.lat", hour + 60 * m, [1.0]) for m in range(3)]
    await store.write_batch(Batch("w", 1, [p for p, _ in rows], [s for _, s in rows]))
    config = CollectorConfig(udp_port=None, tcp_port=None, retention_raw=7 * DAY,
                             retention_1m=9 * DAY, retention_1h=30 * DAY)
    levels = dict(retention_levels(config))
    assert levels["sketch_1m"] == levels["points_1m"] == 9 * DAY
    assert levels["sketch_1h"] == levels["points_1h"] == 30 * DAY
    deleted = {}
    for name, keep in retention_levels(config):  # what `retention run` does
        deleted[name] = await retention_pass(store, now - keep, 2, table=name, pace=False)
    assert deleted == {"points_1s": 3, "points_1m": 3, "points_1h": 0, "sketch_1m": 3,
                       "sketch_1h": 0}
    assert table(database_url, "sketch_1m") == {}
    assert len(table(database_url, "sketch_1h")) == 1
    assert await store.delete_points_before(now, 10, table="sketch_1h") == 1
    with pytest.raises(ValueError):
        await store.delete_points_before(now, 10, table="sketch_1s")


# -- migration 4's fill ------------------------------------------------------------------


async def test_migration_4_fills_the_minutes_whose_seconds_are_exact(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages: minutes and hours cross page boundaries.
    monkeypatch.setattr(sqlite_backend, "FILL_PAGE", 7)
    monkeypatch.setattr(mysql_backend, "FILL_PAGE", 7)
    t = BASE
    seconds: dict[int, list[tuple[float, float]]] = {}  # minute -> (value, weight)
    points: list[PointRow] = []

    def second(ts: int, value: float, cnt: float, spread: float = 0.0,
               kind: Kind = "value", name: str = "v.fill") -> None:
        points.append((name, kind, ts, cnt, value * cnt + spread, value, value + spread))
        if name == "v.fill" and not spread:
            seconds.setdefault(ts - ts % 60, []).append((value, cnt))

    for m in range(3):  # hour 0: three clean minutes: the hour is filled too
        for s in range(0, 60, 4):
            second(t + 60 * m + s, float(10 * m + s % 5 + 1), 1.0 + (s % 3) / 2)
    for s in range(10):  # hour 1: a clean minute, then one with a spread second
        second(t + 3600 + s, 5.0, 2.0)
        second(t + 3660 + s, 6.0, 1.0, spread=1.0 if s == 4 else 0.0)
    for s in range(10):  # hour 2: a minute whose first seconds expire, then a clean one
        second(t + 7200 + s, 7.0, 1.0)
        second(t + 7260 + s, -8.0, 3.0)
    second(t + 50, 4.0, 1.0, kind="counter", name="c.fill")  # counters: never
    second(t + 50, 4.0, 1.0, kind="gauge", name="g.fill")  # gauges: no last to recover
    await store.write_batch(Batch("seed", 1, points))
    execute(database_url, f"DELETE FROM points_1s WHERE ts >= {t + 7200} AND ts < {t + 7203}",
            "DROP TABLE sketch_1m", "DROP TABLE sketch_1h",
            "DELETE FROM schema_version WHERE version = 4")
    assert await store.migrate() == [4]
    metric = await mid(store, "v.fill")
    want_minutes = {(metric, ts): sketch(seconds[ts])
                    for ts in (t, t + 60, t + 120, t + 3600, t + 7260)}
    want_hours = {(metric, t): sketch([x for m in (t, t + 60, t + 120) for x in seconds[m]])}
    assert table(database_url, "sketch_1m") == want_minutes
    assert table(database_url, "sketch_1h") == want_hours
    # The query side sees them: a minute filled is a minute with a sketch.
    assert [ts for ts, _ in await store.read_sketches(metric, "value", t, t + 3 * 3600, 60)] == [
        t, t + 60, t + 120, t + 3600, t + 7260]
    if database_url.startswith("mysql"):
        # DDL commits at once in MySQL: a fill cut short runs again, tables in place.
        execute(database_url, "DELETE FROM schema_version WHERE version = 4",
                "UPDATE sketch_1m SET data = x'00'", "DELETE FROM sketch_1h")
        assert await store.migrate() == [4]
        assert table(database_url, "sketch_1m") == want_minutes
        assert table(database_url, "sketch_1h") == want_hours
