#!/usr/bin/env python3
"""A/B, side by side in one run: the storage layout of per-minute quantile sketches
(issue #11), measured against MariaDB.

    .venv/bin/python scripts/sketch_layout_ab.py            # ~3 minutes
    .venv/bin/python scripts/sketch_layout_ab.py --quick    # ~1.5 minutes: fewer timers,
                                                            # one round, 3 query runs
    .venv/bin/python scripts/sketch_layout_ab.py --json > layout.json

- rows: ``sketch_bins_1m(metric_id, ts, bin SMALLINT, cnt DOUBLE, PRIMARY KEY(metric_id,
  ts, bin))``; a flush upserts each timer's delta bins additively
  (``cnt = cnt + VALUES(cnt)``), UPSERT_CHUNK rows a statement as store/mysql.py writes
  points (multi-row text of numbers we made), one transaction a flush.
- blobs: ``sketch_1m(metric_id, ts, data MEDIUMBLOB, PRIMARY KEY(metric_id, ts))``; a
  flush, in one transaction, locks its keys in primary-key order, reads the stored blobs,
  merges each with its delta (from_bytes, merge_bytes, to_bytes: protocol.summary.merge's
  value branch) and writes them back: the minute level of store/mysql.py's
  _merge_sketches, with its statements (write_batch also merges the hour level and
  checks each delta once more: scripts/sketch_flush_bench.py measures all of it).

Workload: timers with lognormal latencies in ms (mu 3, sigma 1: median 20 ms), rounded to
six decimals as pystatsd's ``%0.6f|ms`` sends them, at 1, 100 and 10,000 samples per
second per timer; 60 flushes (one simulated minute, flushed every second as the
collector does), each carrying every timer's delta of that second for the minute. The
samples are drawn with numpy and binned ahead of the timed part (each layout gets its
input in its own form: rows the (bin, count) pairs, blobs each delta's Sketch bytes,
built with Sketch.add(bin value, count): the bins the collector would make).

Each layout flushes the minute ``--rounds`` times (default 2), in alternating order, each
into an emptied table: the best round is reported (a shared server's busy spells only
ever slow a round down). After the minute: rows and bytes per metric-minute (InnoDB
data_length + index_length after ANALYZE TABLE, which counts reserved extents; the
table's pages and the bytes of its records, from INNODB_BUFFER_PAGE; and the raw
payload: rows x 26 bytes or 16 bytes + blob length); flush throughput (delta bins and
rows written per second of flushing, the median flush); then one timer's
minute is copied over the rest of its UTC day (and merged into 24 hour rows) and p99 is
read + merged + computed over 1 hour (60 minute rows), 1 day (1,440 minute rows) and
1 day from hour rows (24), median of several runs. Every sketch implementation found
(protocol.sketch, the Python reference; protocol._sketch, the C version, when built)
runs the blob flush and the queries. A ``gf_bench_<hex>_layout`` database is created on
``--mysql-url`` and dropped at the end. docs/sketches-layout.md has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import signal
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "benchlib"))
from mysql_bench import admin, bench_database, log, settle  # noqa: E402

import protocol.sketch as sketch_module  # noqa: E402
from protocol.sketch import DEFAULT_ALPHA_BP, bin_key, bin_value, ln_gamma  # noqa: E402
from store.mysql import SKETCH_CHUNK, UPSERT_CHUNK, _sketch_statements  # noqa: E402

MU, SIGMA = 3.0, 1.0  # lognormal ms: median e^3 = 20 ms, p99 ~ 205 ms
DAY_START = 1_700_006_400  # a UTC midnight
MINUTE = DAY_START + 86_400 - 60  # the flushed minute: the day's last
CASES = ((1, 2000), (100, 200), (10_000, 50))  # (samples/s per timer, timers)
QUICK_CASES = ((1, 500), (100, 50), (10_000, 10))
SETTLE = 5.0  # seconds to wait for MariaDB to write back earlier pages (a shared server
# may never get below mysql_bench.settle's 2% dirty: then it goes on after this)
ROW_PAYLOAD = 8 + 8 + 2 + 8  # metric_id BIGINT, ts BIGINT, bin SMALLINT, cnt DOUBLE
BLOB_KEY = 8 + 8  # metric_id, ts
PAGE = 16384  # innodb_page_size
KEY_SPAN = 1 << 16  # (timer, bin) packed into one int64 for np.unique
ROWS_HEAD = "INSERT INTO sketch_bins_1m (metric_id, ts, bin, cnt) VALUES "
ROWS_TAIL = " ON DUPLICATE KEY UPDATE cnt = cnt + VALUES(cnt)"
BLOB_HEAD = "INSERT INTO sketch_1m (metric_id, ts, data) VALUES "
TABLES = {
    "rows": ("sketch_bins_1m", "sketch_bins_1h"),
    "blobs": ("sketch_1m", "sketch_1h"),
}
BINS_DDL = ("CREATE TABLE {} (metric_id BIGINT NOT NULL, ts BIGINT NOT NULL, "
            "bin SMALLINT NOT NULL, cnt DOUBLE NOT NULL, PRIMARY KEY (metric_id, ts, bin)) "
            "ENGINE=InnoDB")
BLOB_DDL = ("CREATE TABLE {} (metric_id BIGINT NOT NULL, ts BIGINT NOT NULL, "
            "data MEDIUMBLOB NOT NULL, PRIMARY KEY (metric_id, ts)) ENGINE=InnoDB")
QUERIES = {  # label: (table level, start, end)
    "1h": (0, MINUTE - 3540, MINUTE + 60),
    "1d": (0, DAY_START, DAY_START + 86_400),
    "1d_hours": (1, DAY_START, DAY_START + 86_400),
}


def implementations() -> dict[str, Any]:
    """Sketch classes to measure: the Python reference (protocol.sketch.PySketch; Sketch
    before the C version landed), and the C type (protocol._sketch) when it is built."""
    reference = getattr(sketch_module, "PySketch", sketch_module.Sketch)
    found: dict[str, Any] = {"py": reference}
    with contextlib.suppress(ImportError):
        found["c"] = importlib.import_module("protocol._sketch").Sketch
    return found


@dataclass
class Flush:
    """One second's deltas, in each layout's form."""

    rows: list[tuple[int, int, int, float]]  # (metric_id, ts, bin, count), PK order
    blobs: list[tuple[int, bytes]]  # (metric_id, delta Sketch bytes), id order


def workload(rate: int, timers: int, seed: int) -> list[Flush]:
    Sketch = sketch_module.Sketch  # the fastest built: every one makes the same bytes
    rng = np.random.default_rng(seed)
    ln_g = ln_gamma(DEFAULT_ALPHA_BP)
    ids = np.arange(1, timers + 1, dtype=np.int64)[:, None]
    flushes = []
    seen: set[int] = set()
    for _second in range(60):
        values = np.round(rng.lognormal(MU, SIGMA, size=(timers, rate)), 6)
        assert values.min() >= 1e-6
        keys = np.ceil(np.log(values) / ln_g).astype(np.int64)
        assert keys.min() > -32768 and keys.max() < 32768  # SMALLINT
        packed, counts = np.unique(ids * KEY_SPAN + keys + KEY_SPAN // 2, return_counts=True)
        metric_ids = (packed // KEY_SPAN).tolist()
        bins = (packed % KEY_SPAN - KEY_SPAN // 2).tolist()
        weights = counts.astype(np.float64).tolist()
        rows = [(m, MINUTE, k, w) for m, k, w in zip(metric_ids, bins, weights, strict=True)]
        blobs: list[tuple[int, bytes]] = []
        sketch, current = Sketch(), metric_ids[0]
        for m, k, w in zip(metric_ids, bins, weights, strict=True):
            if m != current:
                blobs.append((current, sketch.to_bytes()))
                sketch, current = Sketch(), m
            sketch.add(bin_value(k, ln_g), w)
            seen.add(k)
        blobs.append((current, sketch.to_bytes()))
        flushes.append(Flush(rows, blobs))
    # A bin's representative value falls in that bin: the deltas hold the drawn bins.
    assert all(bin_key(bin_value(k, ln_g), ln_g) == k for k in seen)
    return flushes


def flush_rows(conn: Any, flush: Flush) -> None:
    rows = flush.rows
    with conn.cursor() as cursor:
        cursor.execute("BEGIN")
        for start in range(0, len(rows), UPSERT_CHUNK):
            values = ",".join(["(%d,%d,%d,%r)" % row  # noqa: UP031 (as store/mysql.py)
                               for row in rows[start : start + UPSERT_CHUNK]])
            cursor.execute(ROWS_HEAD + values + ROWS_TAIL)
        cursor.execute("COMMIT")


def merger(sketch_class: Any) -> Callable[[bytes | None, bytes], bytes]:
    """protocol.summary.merge's value branch, with the class under test."""

    def merge(stored: bytes | None, delta: bytes) -> bytes:
        if stored is None:
            sketch_class.from_bytes(delta)  # validated: never store what cannot be read
            return delta
        sketch = sketch_class.from_bytes(stored)
        sketch.merge_bytes(delta)
        return bytes(sketch.to_bytes())

    return merge


def flush_blobs(conn: Any, flush: Flush, *,
                merge: Callable[[bytes | None, bytes], bytes]) -> float:
    """One flush of blobs, the minute level of store/mysql.py's _merge_sketches: an
    upsert of empty placeholders X-locks every key in primary-key order, the missing ones
    by creating them (SELECT ... FOR UPDATE locks nothing there under READ COMMITTED),
    the keys that existed are read, merged and written back (_sketch_statements). Returns
    the seconds spent merging (CPU, between the read and the write)."""
    deltas = flush.blobs
    with conn.cursor() as cursor:
        cursor.execute("BEGIN")
        stored: dict[int, bytes] = {}
        for start in range(0, len(deltas), SKETCH_CHUNK):
            chunk = [m for m, _d in deltas[start : start + SKETCH_CHUNK]]
            cursor.execute(BLOB_HEAD + ",".join([f"({m},{MINUTE},'')" for m in chunk])
                           + " ON DUPLICATE KEY UPDATE data = data")
            if cursor.rowcount < len(chunk):  # 1 a key created, 0 a key that existed
                keys = ",".join([f"({m},{MINUTE})" for m in chunk])
                cursor.execute(f"SELECT metric_id, data FROM sketch_1m "
                               f"WHERE (metric_id, ts) IN ({keys})")
                stored.update(cursor.fetchall())
        started = time.perf_counter()
        rows = [(m, MINUTE, merge(stored.get(m) or None, delta)) for m, delta in deltas]
        merging = time.perf_counter() - started
        for statement in _sketch_statements("sketch_1m", rows):
            cursor.execute(statement)
        cursor.execute("COMMIT")
    return merging


def run_flushes(flushes: list[Flush], write: Callable[[Flush], float | None],
                rows_per_flush: Callable[[Flush], int]) -> dict[str, float]:
    times, merging = [], []
    for flush in flushes:
        started = time.perf_counter()
        merging.append(write(flush) or 0.0)
        times.append(time.perf_counter() - started)
    total = sum(times)
    bins = sum(len(f.rows) for f in flushes)
    rows = sum(rows_per_flush(f) for f in flushes)
    return {"bins_per_s": bins / total, "rows_per_s": rows / total,
            "ms_per_flush": statistics.median(times) * 1e3,
            "merge_ms_per_flush": statistics.median(merging) * 1e3, "seconds": total}


def sizes(conn: Any, database: str, table: str, metric_minutes: int) -> dict[str, float]:
    with conn.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE {table}")
        cursor.fetchall()
        cursor.execute("SELECT data_length + index_length FROM information_schema.tables "
                       "WHERE table_schema = %s AND table_name = %s", (database, table))
        innodb = int(cursor.fetchone()[0])
        # Just written: every page of the table is in the buffer pool.
        cursor.execute("SELECT COUNT(*), SUM(data_size) FROM information_schema.innodb_buffer_page "
                       "WHERE table_name = %s", (f"`{database}`.`{table}`",))
        pages, records = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        rows = int(cursor.fetchone()[0])
        payload_column = (f"COUNT(*) * {ROW_PAYLOAD}" if "bins" in table
                          else f"SUM(LENGTH(data)) + COUNT(*) * {BLOB_KEY}")
        cursor.execute(f"SELECT {payload_column} FROM {table}")
        payload = int(cursor.fetchone()[0])
    return {"rows": rows / metric_minutes, "innodb": innodb / metric_minutes,
            "pages": int(pages) * PAGE / metric_minutes,
            "records": int(records or 0) / metric_minutes,
            "payload": payload / metric_minutes}


def fill_day(conn: Any, impl: Any) -> None:
    """Timer 1's flushed minute copied over the rest of its day, and the day's 24 hour
    rows (the minute 60 times over) in each layout's hour table."""
    with conn.cursor() as cursor:
        cursor.execute("INSERT INTO sketch_bins_1m SELECT metric_id, ts - 60 * seq, bin, cnt "
                       "FROM sketch_bins_1m, seq_1_to_1439 WHERE metric_id = 1 AND ts = %s",
                       (MINUTE,))
        cursor.execute("INSERT INTO sketch_1m SELECT metric_id, ts - 60 * seq, data "
                       "FROM sketch_1m, seq_1_to_1439 WHERE metric_id = 1 AND ts = %s",
                       (MINUTE,))
        cursor.execute("INSERT INTO sketch_bins_1h SELECT metric_id, ts DIV 3600 * 3600, bin, "
                       "SUM(cnt) FROM sketch_bins_1m WHERE metric_id = 1 GROUP BY 1, 2, 3")
        cursor.execute("SELECT data FROM sketch_1m WHERE metric_id = 1 AND ts = %s", (MINUTE,))
        minute = cursor.fetchone()[0]
        hour = impl.from_bytes(minute)
        for _ in range(59):
            hour.merge_bytes(minute)
        cursor.executemany("INSERT INTO sketch_1h VALUES (1, %s, %s)",
                           [(DAY_START + 3600 * h, bytes(hour.to_bytes())) for h in range(24)])


def p99_rows(cursor: Any, impl: Any, table: str, start: int, end: int) -> float:
    """The server adds the bins (GROUP BY bin); the sketch is built from the sums."""
    cursor.execute(f"SELECT bin, SUM(cnt) FROM {table} WHERE metric_id = 1 AND ts >= %s "
                   "AND ts < %s GROUP BY bin", (start, end))
    ln_g = ln_gamma(DEFAULT_ALPHA_BP)
    sketch = impl(DEFAULT_ALPHA_BP)
    for key, weight in cursor.fetchall():
        sketch.add(bin_value(key, ln_g), float(weight))
    return float(sketch.quantile(0.99))


def p99_blobs(cursor: Any, impl: Any, table: str, start: int, end: int) -> float:
    cursor.execute(f"SELECT data FROM {table} WHERE metric_id = 1 AND ts >= %s AND ts < %s "
                   "ORDER BY ts", (start, end))
    blobs = cursor.fetchall()
    sketch = impl.from_bytes(blobs[0][0])
    for (blob,) in blobs[1:]:
        sketch.merge_bytes(blob)
    return float(sketch.quantile(0.99))


def query_times(conn: Any, layout: str, impl: Any, runs: int) -> tuple[dict[str, float],
                                                                        dict[str, float]]:
    read = p99_rows if layout == "rows" else p99_blobs
    times, answers = {}, {}
    with conn.cursor() as cursor:
        for label, (level, start, end) in QUERIES.items():
            table = TABLES[layout][level]
            answers[label] = read(cursor, impl, table, start, end)  # warm: not timed
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                read(cursor, impl, table, start, end)
                timings.append((time.perf_counter() - started) * 1e3)
            times[label] = statistics.median(timings)
    return times, answers


def run_case(url: str, database: str, rate: int, timers: int, rounds: int, runs: int,
             impls: dict[str, Any]) -> dict[str, Any]:
    log(f"{rate:,}/s x {timers:,} timers: drawing {rate * timers * 60:,} samples")
    flushes = workload(rate, timers, seed=rate)
    metric_minutes = timers
    conn = admin(url)  # autocommit: each flush is its own BEGIN ... COMMIT
    writers: dict[str, tuple[str, Callable[[Flush], float | None], Callable[[Flush], int]]] = {
        "rows": ("sketch_bins_1m", lambda f: flush_rows(conn, f), lambda f: len(f.rows)),
        **{f"blobs_{name}": ("sketch_1m", functools.partial(flush_blobs, conn,
                                                            merge=merger(impl)),
                             lambda f: len(f.blobs)) for name, impl in impls.items()},
    }
    out: dict[str, Any] = {"rate": rate, "timers": timers, "layouts": {}, "rounds": {}}
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"USE {database}")
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")  # as store
            for minute_table, hour_table in TABLES.values():
                for table in (minute_table, hour_table):
                    cursor.execute(f"DROP TABLE IF EXISTS {table}")
                    cursor.execute((BINS_DDL if "bins" in table else BLOB_DDL).format(table))
        stored: dict[str, list[bytes]] = {}
        for round_no in range(rounds):  # alternating order: a busy spell hits each side
            for key in list(writers)[:: 1 if round_no % 2 == 0 else -1]:
                table, write, rows_of = writers[key]
                with conn.cursor() as cursor:
                    cursor.execute(f"TRUNCATE TABLE {table}")
                settle(url, SETTLE)
                got = run_flushes(flushes, write, rows_of)
                log(f"  {LABELS[key]}: {got['bins_per_s']:,.0f} bins/s, "
                    f"{got['ms_per_flush']:.1f} ms a flush"
                    + (f" ({got['merge_ms_per_flush']:.1f} merging)" if key != "rows" else ""))
                out["rounds"].setdefault(key, []).append(got)
                best = out["layouts"].get(key)
                if best is None or got["seconds"] < best["flush"]["seconds"]:
                    out["layouts"][key] = {"flush": got}
                if key != "rows":
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT data FROM sketch_1m ORDER BY metric_id")
                        stored[key] = [row[0] for row in cursor.fetchall()]
        assert len({tuple(v) for v in stored.values()}) == 1, "implementations stored other bytes"
        # Every round wrote the same minute: the tables hold it once, as the last one left it.
        out["size"] = {"rows": sizes(conn, database, "sketch_bins_1m", metric_minutes),
                       "blobs": sizes(conn, database, "sketch_1m", metric_minutes)}
        fill_day(conn, impls["py"])
        settle(url, SETTLE)
        answers = {}
        for key, layout, impl in [("rows", "rows", impls["py"]),
                                  *((f"blobs_{n}", "blobs", i) for n, i in impls.items())]:
            times, answers[key] = query_times(conn, layout, impl, runs)
            out["layouts"][key]["query_ms"] = times
        out["p99_agree"] = len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1
        out["p99"] = answers["rows"]
    finally:
        conn.close()
    return out


def blob_sizes(impls: dict[str, Any]) -> dict[int, dict[str, int]]:
    """A metric-minute's sketch alone (no database), every sample added (by each
    implementation: the same bytes)."""
    rng = np.random.default_rng(7)
    out = {}
    for rate, _timers in CASES:
        values = np.round(rng.lognormal(MU, SIGMA, rate * 60), 6).tolist()
        made = set()
        for impl in impls.values():
            sketch = impl(DEFAULT_ALPHA_BP)
            for value in values:
                sketch.add(value)
            made.add(bytes(sketch.to_bytes()))
        assert len(made) == 1, "implementations made different bytes"
        data = made.pop()
        bins = len(impls["py"].from_bytes(data).positive.bins)  # the reference's store
        out[rate] = {"samples": rate * 60, "bytes": len(data), "bins": bins}
    return out


LABELS = {"rows": "rows", "blobs": "blobs", "blobs_py": "blobs (py)", "blobs_c": "blobs (C)"}
SIZE_HEADER = ("case", "layout", "rows/mm", "InnoDB B/mm", "pages B/mm", "records B/mm",
               "payload B/mm")
SPEED_HEADER = ("case", "layout", "ms/flush", "merge ms", "bins/s", "rows/s", "timers/1s",
                "p99 1h ms", "1d ms", "1d@1h ms")


def tables(results: list[dict[str, Any]]) -> Iterator[str]:
    size_lines, speed_lines = [SIZE_HEADER], [SPEED_HEADER]
    for case in results:
        label = f"{case['rate']:,}/s x {case['timers']:,}"
        for key, size in case["size"].items():
            size_lines.append((label if key == "rows" else "", LABELS[key],
                               f"{size['rows']:,.1f}", f"{size['innodb']:,.0f}",
                               f"{size['pages']:,.0f}", f"{size['records']:,.0f}",
                               f"{size['payload']:,.0f}"))
        for key, layout in case["layouts"].items():
            flush, query = layout["flush"], layout["query_ms"]
            speed_lines.append((
                label if key == "rows" else "", LABELS[key], f"{flush['ms_per_flush']:.1f}",
                f"{flush['merge_ms_per_flush']:.1f}" if key != "rows" else "-",
                f"{flush['bins_per_s']:,.0f}", f"{flush['rows_per_s']:,.0f}",
                f"{case['timers'] * 1e3 / flush['ms_per_flush']:,.0f}",
                f"{query['1h']:.2f}", f"{query['1d']:.1f}", f"{query['1d_hours']:.2f}"))
    for lines in (size_lines, speed_lines):
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for line in lines:
            yield "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
        yield ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/")
    parser.add_argument("--quick", action="store_true", help="fewer timers and runs")
    parser.add_argument("--rounds", type=int, default=0,
                        help="minutes flushed per layout, the best one reported (default 2, "
                        "quick 1)")
    parser.add_argument("--runs", type=int, default=0, help="query runs (default 9, quick 3)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 9)
    rounds = args.rounds or (1 if args.quick else 2)
    impls = implementations()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())  # a shared machine: say how busy
    log("sketch implementations: " + ", ".join(f"{n} ({c.__module__})" for n, c in impls.items()))
    started = time.monotonic()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up either way
    with contextlib.ExitStack() as stack:
        url, name = bench_database(types.SimpleNamespace(args=args, stack=stack), "layout")
        if url is None:
            sys.exit(name)
        results = [run_case(args.mysql_url, name, rate, timers, rounds, runs, impls)
                   for rate, timers in (QUICK_CASES if args.quick else CASES)]
    alone = blob_sizes(impls)
    log(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps({"cases": results, "blob_alone": alone, "load": load,
                          "runs": runs, "rounds": rounds}, indent=2))
        return
    print("mm = metric-minute. InnoDB = (data_length + index_length) / mm after ANALYZE "
          "TABLE; pages = the table's pages x 16 KiB / mm; records = the bytes of its records "
          "(INNODB_BUFFER_PAGE.DATA_SIZE) / mm; payload = rows x 26 B or 16 B + blob length.")
    print(f"flush = one second's deltas of every timer, one transaction (the best of {rounds} "
          "round(s) of a minute each: median ms; bins and rows per second of flushing); "
          "timers/1s = timers one flusher keeps up with at this rate (timers x 1000 / ms a "
          "flush: linear); "
          f"p99 of one timer, read + merge + quantile, median of {runs} runs. "
          f"Load average at the start: {load}.")
    print()
    for line in tables(results):
        print(line)
    for case in results:
        print(f"{case['rate']:,}/s: p99 {case['p99']['1d']:.2f} ms, same in every layout: "
              f"{'yes' if case['p99_agree'] else 'NO'}")
    print("a metric-minute's blob alone (every sample added, no database): " + ", ".join(
        f"{rate:,}/s ({s['samples']:,} samples) {s['bytes']:,} B, {s['bins']} bins"
        for rate, s in alone.items()))


if __name__ == "__main__":
    main()
