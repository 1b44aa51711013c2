"""How fast write_batch merges sketches: 10,000 timers x 1 minute, ~80-bin deltas.

Each flush is one Batch of one point and one SketchRow (the minute's delta since the
last flush) per metric, as the collector sends every second. The first flush of the
minute creates every sketch_1m / sketch_1h key (placeholder upsert, no read); the
later ones lock, read, merge and rewrite them (the steady state). Deltas are drawn from
a pool of lognormal samples (each delta a different mix of them, so nothing repeats
that the store could learn); building them is not timed.

    .venv/bin/python scripts/sketch_flush_bench.py [--url mysql://root@127.0.0.1:3306]
        [--metrics 10000] [--flushes 6] [--samples 110] [--sqlite]

A ``gf_sketchbench_<hex>`` database is created on the server of ``--url`` and dropped at
the end (``--sqlite``: a temporary SQLite file instead).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import pymysql

from protocol.sketch import PySketch, Sketch
from store import Batch, PointRow, Store, open_store, rollups
from store import mysql as mysql_backend
from store import sqlite as sqlite_backend
from store.base import SketchRow

# Seconds spent merging summaries in Python (protocol.summary.merge, via the two store
# helpers that call it), so the database's part of a flush shows on its own: the
# reference Python sketch is to be replaced by a C one with the same bytes.
MERGING = [0.0]


def timed(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            MERGING[0] += time.perf_counter() - started

    return wrapper


for module in (mysql_backend, sqlite_backend):
    module.group_sketches = timed(rollups.group_sketches)  # type: ignore[attr-defined]
    module.merge_stored = timed(rollups.merge_stored)  # type: ignore[attr-defined]


def deltas(rng: random.Random, metrics: int, samples: int) -> tuple[list[bytes], float]:
    """One delta per metric, and the mean number of bins in them."""
    out = []
    bins = 0
    for _ in range(metrics):
        sketch = Sketch()
        for _ in range(samples):
            sketch.add(round(rng.lognormvariate(3.0, 0.6), 6))
        out.append(sketch.to_bytes())
        reference = PySketch.from_bytes(out[-1])  # the C sketch does not show its bins
        bins += len(reference.positive.bins) + len(reference.negative.bins)
    return out, bins / metrics


async def run(url: str, args: argparse.Namespace) -> None:
    store: Store = open_store(url)
    await store.migrate()
    rng = random.Random(42)
    now = int(time.time())
    minute = now - now % 3600 - 3600  # the first minute of the last whole hour
    names = [f"bench.timer.{n:05d}" for n in range(args.metrics)]
    print(f"{args.metrics} metrics, one minute, {args.flushes} flushes; building deltas ...",
          file=sys.stderr)
    rounds = []
    mean_bins = 0.0
    for _ in range(args.flushes):
        blobs, mean_bins = deltas(rng, args.metrics, args.samples)
        rounds.append(blobs)
    sizes = [len(blob) for blobs in rounds for blob in blobs]
    print(f"deltas: {mean_bins:.0f} bins, {statistics.mean(sizes):.0f} bytes on average",
          file=sys.stderr)
    results = []
    try:
        for flush, blobs in enumerate(rounds):
            ts = minute + flush  # one second of the same minute per flush
            points: list[PointRow] = [(name, "value", ts, 1.0, 1.0, 1.0, 1.0) for name in names]
            sketches: list[SketchRow] = [(name, "value", minute, blob)
                                         for name, blob in zip(names, blobs, strict=True)]
            MERGING[0] = 0.0
            started = time.perf_counter()
            result = await store.write_batch(Batch("bench", flush + 1, points, sketches))
            seconds = time.perf_counter() - started
            assert result.applied and result.sketches == args.metrics
            merging = MERGING[0]
            results.append((seconds, seconds - merging))
            what = "creates the keys" if flush == 0 else "merges into stored"
            print(f"flush {flush + 1} ({what}): {seconds:.3f} s, "
                  f"{args.metrics / seconds:,.0f} sketch rows/s, "
                  f"{args.metrics * mean_bins / seconds:,.0f} delta bins/s; "
                  f"of it merging in Python {merging:.3f} s, the rest (database, "
                  f"statements) {seconds - merging:.3f} s = "
                  f"{args.metrics / (seconds - merging):,.0f} rows/s")
        # The points alone, for the same flush shape: what sketches add to it.
        started = time.perf_counter()
        await store.write_batch(Batch("bench", 10_000, [
            (name, "value", minute + 59, 1.0, 1.0, 1.0, 1.0) for name in names]))
        points_only = time.perf_counter() - started
        steady = results[1:] or results
        total = statistics.median(s for s, _ in steady)
        rest = statistics.median(r for _, r in steady)
        print(f"steady state: median {total:.3f} s a flush = "
              f"{args.metrics / total:,.0f} sketch rows/s "
              f"({args.metrics * mean_bins / total:,.0f} bins/s); without the Python "
              f"merging {rest:.3f} s = {args.metrics / rest:,.0f} sketch rows/s "
              f"({args.metrics * mean_bins / rest:,.0f} bins/s); "
              f"the same flush without sketches: {points_only:.3f} s")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306")
    parser.add_argument("--metrics", type=int, default=10_000)
    parser.add_argument("--flushes", type=int, default=6)
    parser.add_argument("--samples", type=int, default=110,
                        help="samples per delta (110 lognormal samples: ~80 bins)")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as directory:
            asyncio.run(run(f"sqlite:///{directory}/bench.db", args))
        return
    parts = urlsplit(args.url)
    conn = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "",
                           autocommit=True)
    name = f"gf_sketchbench_{secrets.token_hex(4)}"
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        asyncio.run(run(parts._replace(path=f"/{name}").geturl(), args))
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name}")
        conn.close()


if __name__ == "__main__":
    main()
