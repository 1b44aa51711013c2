"""A/B, interleaved in one run: a pushed-down Graphite ``sumSeries`` of 100 counters over
one day at 1 min, read by ``MySQLStore.read_totals_merged`` (one column and its scaled
sum) against the read it replaced (all five aggregates: cnt, sum, scaled sum, min, max).
Both in two halves on two pooled connections, decoded from one GROUP_CONCAT string each,
over the minute rollups plus the per-second tail of the current minute.

    .venv/bin/python scripts/merged_read_ab.py [mysql://root@127.0.0.1:3306/]

Creates and drops the database gf_bench_merged_<hex>. /render latency itself is in
``scripts/bench --only render``; there the machine's noise hides a difference of this
size between two runs, hence this.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from store import open_store
from store.mysql import MySQLStore
from store.rollups import SCALED_SUM_SQL, plan_reads

DAY = 86400
SERIES = 100
ROUNDS = 60


def five_aggregates(ids: list[int], reads: list[tuple[str, int, int]]) -> tuple[str, list[int]]:
    """The statement before read_totals_merged (store/mysql.py at dac9625)."""
    marks = ", ".join(["%s"] * len(ids))
    selects = [
        f"SELECT {'ts' if table == 'points_1m' else 'ts DIV 60 * 60'} AS bucket, "
        f"SUM(cnt) AS c, SUM(`sum`) AS s, {SCALED_SUM_SQL} AS z, MIN(mn) AS lo, "
        f"MAX(mx) AS hi FROM {table} WHERE metric_id IN ({marks}) AND ts >= %s AND ts < %s "
        "GROUP BY bucket" for table, _low, _high in reads]
    merged = ("SELECT bucket, SUM(c) AS c, SUM(s) AS s, SUM(z) AS z, MIN(lo) AS lo, "
              "MAX(hi) AS hi FROM (" + " UNION ALL ".join(selects) + ") AS levels GROUP BY bucket")
    sql = ("SELECT COUNT(*), GROUP_CONCAT(bucket, ',', c, ',', s, ',', z, ',', lo, ',', hi "
           f"ORDER BY bucket SEPARATOR ',') FROM ({merged}) AS buckets")
    return sql, [value for _table, low, high in reads for value in (*ids, low, high)]


async def old_read(store: MySQLStore, ids: list[int], start: int, end: int) -> int:
    reads = plan_reads(start, end, 60)

    async def half(part: list[int]) -> int:
        sql, params = five_aggregates(part, reads)

        async def run(cursor: Any) -> int:
            await cursor.execute("SET SESSION group_concat_max_len = 16777216")
            await cursor.execute(sql, params)
            count, text = await cursor.fetchone()
            values = list(map(float, text.split(",")))
            assert len(values) == 6 * count
            return int(count)

        return await store._run(run)

    counts = await asyncio.gather(half(ids[:SERIES // 2]), half(ids[SERIES // 2:]))
    return max(counts)


async def main(server: str) -> None:
    url = urlsplit(server)
    name = f"gf_bench_merged_{secrets.token_hex(3)}"
    admin = pymysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                            user=url.username or "root", password=url.password or "",
                            autocommit=True)
    cursor = admin.cursor()
    cursor.execute(f"CREATE DATABASE {name}")
    store = open_store(f"mysql://{url.username or 'root'}:{url.password or ''}@"
                       f"{url.hostname or '127.0.0.1'}:{url.port or 3306}/{name}")
    assert isinstance(store, MySQLStore)
    try:
        await store.migrate()
        now = int(time.time())
        day_start, hour_start = now - now % 60 - DAY, now - now % 3600
        cursor.execute(f"USE {name}")
        cursor.execute("INSERT INTO metrics (name, kind, created_at) SELECT CONCAT('app.', "
                       f"LPAD(seq, 3, '0'), '.requests'), 'counter', {day_start} "
                       f"FROM seq_1_to_{SERIES}")
        cursor.execute(f"INSERT INTO points_1m SELECT m.id, {day_start} + s.seq * 60, 60, "
                       "60 * (1 + (s.seq + m.id) % 7), 1, 7 FROM metrics m "
                       f"JOIN seq_0_to_{DAY // 60} s")
        cursor.execute(f"INSERT INTO points_1s SELECT m.id, {hour_start} + s.seq, 1, "
                       "1 + (s.seq + m.id) % 7, 1, 7 FROM metrics m "
                       f"JOIN seq_0_to_{max(now - hour_start, 1) - 1} s")
        cursor.execute("ANALYZE TABLE metrics, points_1s, points_1m")
        cursor.fetchall()
        cursor.execute("SELECT id FROM metrics ORDER BY id")
        ids = [int(row[0]) for row in cursor.fetchall()]
        start, end = now - DAY, now
        new_rows = await store.read_totals_merged(ids, start, end, 60, "sum")
        assert len(new_rows) == await old_read(store, ids, start - start % 60, end)
        timings: dict[str, list[float]] = {"five aggregates (before)": [],
                                           "one column (read_totals_merged)": []}
        for round_no in range(ROUNDS + 3):  # 3 warm-up rounds, not counted
            for label in sorted(timings, reverse=bool(round_no % 2)):
                began = time.perf_counter()
                if label.startswith("five"):
                    await old_read(store, ids, start - start % 60, end)
                else:
                    await store.read_totals_merged(ids, start, end, 60, "sum")
                if round_no >= 3:
                    timings[label].append((time.perf_counter() - began) * 1e3)
        print(f"{SERIES} counters x 1 d at 1 min ({len(new_rows)} buckets), {ROUNDS} "
              "interleaved rounds:")
        for label, values in timings.items():
            values.sort()
            print(f"  {label:32s} p50 {statistics.median(values):6.1f} ms   "
                  f"p95 {values[int(len(values) * 0.95)]:6.1f} ms")
    finally:
        await store.close()
        cursor.execute(f"DROP DATABASE {name}")
        admin.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1] if len(sys.argv) > 1 else "mysql://root@127.0.0.1:3306/"))
