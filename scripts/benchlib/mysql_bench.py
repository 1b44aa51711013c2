"""scripts/bench: query latency and flush throughput on MariaDB (via the Store itself).

A ``gf_bench_<hex>`` database is created on the server of ``--mysql-url`` and dropped at
the end. The query data is generated in SQL with MariaDB's SEQUENCE engine
(``seq_0_to_N``): ``--query-full`` metrics hold 30 days of per-second points, the others
of the ``--query-metrics`` one day (the per-metric primary-key ranges are what a query
touches; 259M rows for all 100 would take ~6 min to generate here and not change them).
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import pymysql
import uvloop

DAY = 86400


def log(message: str) -> None:
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def admin(url: str) -> Any:
    parts = urlsplit(url)
    return pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "",
                           autocommit=True, connect_timeout=5)


def database_url(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_database(bench: Any, what: str) -> tuple[str | None, str]:
    """A new ``gf_bench_<hex>_<what>`` database on ``--mysql-url``, dropped when the bench
    ends: (its URL, its name), or (None, why not) when MariaDB is unavailable."""
    args = bench.args
    try:
        conn = admin(args.mysql_url)
    except pymysql.err.MySQLError as exc:
        reason = f"MariaDB unavailable at {args.mysql_url}: {exc}"
        log(reason)
        return None, reason
    name = f"gf_bench_{secrets.token_hex(4)}_{what}"
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    bench.stack.callback(_drop, args.mysql_url, name)
    conn.close()
    return database_url(args.mysql_url, name), name


def mysql_bench(bench: Any) -> dict[str, Any]:
    args = bench.args
    try:
        conn = admin(args.mysql_url)
    except pymysql.err.MySQLError as exc:
        reason = f"MariaDB unavailable at {args.mysql_url}: {exc}"
        log(reason)
        return {"query": {"skipped": reason}, "flush_mysql": {"skipped": reason}}
    name = f"gf_bench_{secrets.token_hex(4)}"
    with conn.cursor() as cursor:
        for database in (name, f"{name}_flush"):  # the flush writes its own tables
            cursor.execute(f"CREATE DATABASE {database}")
            bench.stack.callback(_drop, args.mysql_url, database)
    conn.close()
    url = database_url(args.mysql_url, name)
    out: dict[str, Any] = {}
    # uvloop, as in the daemon and the query service. The flush first: the query data
    # (millions of rows) leaves the server writing pages back for a while.
    if bench.wants("flush"):
        settle(args.mysql_url)
        out["flush_mysql"] = uvloop.run(_flush(database_url(args.mysql_url, f"{name}_flush"),
                                               bench.args.quick))
    if bench.wants("query"):
        out["query"] = uvloop.run(_query(url, name, args, bench.args.quick))
    return out


def settle(url: str, timeout: float = 60.0) -> None:
    """Wait (at most ``timeout``) until MariaDB has written back its dirty pages and
    purged old row versions: a measurement started while it still digests the previous
    section's rows measures that, not us (flush figures 117k-165k rows/s otherwise)."""
    conn = admin(url)
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ("
                               "'Innodb_buffer_pool_pages_dirty', "
                               "'Innodb_buffer_pool_pages_total', 'Innodb_history_list_length')")
                status = {name: int(value) for name, value in cursor.fetchall()}
                dirty = status.get("Innodb_buffer_pool_pages_dirty", 0)
                total = status.get("Innodb_buffer_pool_pages_total", 1)
                if dirty < total * 0.02 and status.get("Innodb_history_list_length", 0) < 1000:
                    return
                time.sleep(0.5)
            log("MariaDB still busy with earlier writes after "
                f"{timeout:.0f} s: figures may be low")
    finally:
        conn.close()


def _drop(url: str, name: str) -> None:
    conn = admin(url)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


async def _query(url: str, name: str, args: Any, quick: bool) -> dict[str, Any]:
    from store import open_store

    metrics = args.query_metrics
    full = 1 if quick else 3
    short = 3600 if quick else DAY
    end = int(time.time()) // 60 * 60 - 17  # unaligned, like "now": the tail is read too
    base = end - 30 * DAY
    store = open_store(url)
    await store.migrate()
    log(f"query data: {full} metric(s) x 30 days + {metrics - full} x {short // 3600} h "
        "of per-second points, generated with the SEQUENCE engine")
    started = time.monotonic()
    conn = admin(url)
    with conn.cursor() as cursor:
        cursor.execute(f"USE {name}")
        cursor.execute(
            f"INSERT INTO metrics (name, kind, created_at) SELECT CONCAT('q.metric.', seq), "
            f"'value', {base} FROM seq_1_to_{metrics}"
        )
        cursor.execute("SELECT id FROM metrics ORDER BY id")
        ids = [int(row[0]) for row in cursor.fetchall()]
        for index, metric_id in enumerate(ids):
            span = 30 * DAY if index < full else short
            cursor.execute(
                f"INSERT INTO points_1s SELECT {metric_id}, {end - span} + seq, 1 + seq % 3, "
                f"seq % 1000, seq % 1000, seq % 1000 FROM seq_0_to_{span - 1}"
            )
        for table, step in (("points_1m", 60), ("points_1h", 3600)):
            cursor.execute(
                f"INSERT INTO {table} SELECT metric_id, ts DIV {step} * {step} AS t, SUM(cnt), "
                f"SUM(`sum`), MIN(mn), MAX(mx) FROM points_1s GROUP BY metric_id, t"
            )
        cursor.execute("ANALYZE TABLE points_1s, points_1m, points_1h")
        cursor.fetchall()
        cursor.execute("SELECT COUNT(*) FROM points_1s")
        rows = int(cursor.fetchone()[0])
    log(f"  {rows:,} rows (+ rollups) in {time.monotonic() - started:.1f}s")
    settle(args.mysql_url)
    runs = 30 if quick else 100
    shapes = {"1h_second": (3600, 1), "1d_hour": (DAY, 3600), "30d_day": (30 * DAY, DAY)}
    out: dict[str, Any] = {"rows_1s": rows}
    try:
        for key, (span, interval) in shapes.items():
            timings = []
            for run in range(runs):
                metric_id = ids[run % full]
                t0 = time.perf_counter()
                buckets = await store.read_buckets(metric_id, end - span, end, interval)
                timings.append((time.perf_counter() - t0) * 1e3)
                assert buckets, key
            out[key] = {"p50": pct(timings, 0.5), "p95": pct(timings, 0.95),
                        "buckets": len(buckets), "runs": runs}
        # The same answers from the raw table, for comparison (what rollups save).
        with conn.cursor() as cursor:
            for key, (span, interval) in shapes.items():
                if key == "1h_second" or (quick and key == "30d_day"):
                    continue
                timings = []
                for run in range(3):
                    t0 = time.perf_counter()
                    cursor.execute(
                        "SELECT ts DIV %s * %s AS b, SUM(cnt), SUM(`sum`), MIN(mn), MAX(mx) "
                        "FROM points_1s WHERE metric_id = %s AND ts >= %s AND ts < %s "
                        "GROUP BY b ORDER BY b",
                        (interval, interval, ids[run % full], end - span - (end - span) % interval,
                         end),
                    )
                    cursor.fetchall()
                    timings.append((time.perf_counter() - t0) * 1e3)
                out[key]["raw_p50"] = statistics.median(timings)
    finally:
        conn.close()
        await store.close()
    for key in shapes:
        log(f"  query {key}: p50 {out[key]['p50']:.2f} ms, p95 {out[key]['p95']:.2f} ms")
    return out


async def _flush(url: str, quick: bool) -> dict[str, Any]:
    """Store.write_batch with fresh rows: 2,000 names x 10 s per batch (1,000-row
    upsert chunks), rollups in the same transaction; and once without rollups."""
    import store.mysql as mysql_module
    from store import Batch, open_store

    names = [f"f.metric.{i:04d}" for i in range(2000)]
    batches = 8 if quick else 16  # ~1 s and ~2 s of writing: shorter runs were noise
    out: dict[str, Any] = {}
    for label, rollups in (("rows_per_s", True), ("rows_per_s_raw_only", False)):
        store = open_store(url)
        saved = mysql_module._ROLLUP_HEADS
        if not rollups:
            mysql_module._ROLLUP_HEADS = []  # type: ignore[misc]
        try:
            await store.migrate()
            base = 1_700_000_000 + (0 if rollups else 10**7)

            def batch(n: int, base: int = base, label: str = label) -> Any:
                points = [(name, "counter", base + n * 10 + s, 1.0, float(i), float(i),
                           float(i)) for s in range(10) for i, name in enumerate(names)]
                return Batch(f"bench-{label}", n + 1, points)

            await store.write_batch(batch(0))  # creates the metrics: not timed
            total, started = 0, time.perf_counter()
            for n in range(1, batches + 1):
                result = await store.write_batch(batch(n))
                total += result.rows
            elapsed = time.perf_counter() - started
        finally:
            mysql_module._ROLLUP_HEADS = saved  # type: ignore[misc]
            await store.close()
        out[label] = total / elapsed
        log(f"  flush {'with' if rollups else 'without'} rollups: {total / elapsed:,.0f} rows/s")
    out["rollup_cost"] = 1 - out["rows_per_s"] / out["rows_per_s_raw_only"]
    return out
