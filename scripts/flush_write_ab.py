#!/usr/bin/env python3
"""A/B of the flush's write, interleaved in one run: the daemon's CPU in
``Store.write_batch`` per flushed metric-second, for one or more checkouts.

    .venv/bin/python scripts/flush_write_ab.py --code OLD_CHECKOUT --code . \\
        [--backend sqlite,mysql] [--cases 1000:1,20000:3,100000:3] [--rounds 3]
        [--callgrind] [--mysql-url mysql://root@127.0.0.1:3306/]

Each case is N series and B seconds a batch: the cardinality bench's traffic
(scripts/benchlib/cardinality_bench.py: one realistic-mix line per series and second,
timers with their sketches, gauges with their last values) is fed to the checkout's own
Aggregator and cut into batches before anything is measured; then the process's CPU
(every thread: SQLite's writer, the executor building MySQL's statements) while
``write_batch`` writes them, after a first batch that creates the metrics. MariaDB's
own CPU is not in it. ``scripts/bench --only cardinality`` measures the whole flush in
real time; this isolates the write, where two builds differ by less than that bench's
noise. ``--callgrind`` counts instructions instead (SQLite only: MariaDB's share is
another process), minus a run that writes only the first batch: reproducible whatever
else the machine does. A checkout must be built in place (``setup.py build_ext
--inplace``). SQLite files go to a temp dir; each MariaDB run has its own
``gf_bench_flushab_<hex>`` database, dropped at its end.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, random, resource, secrets, sys, time
root, backend, url, series, seconds, count = sys.argv[1:7]
sys.path[:0] = [root, root + "/scripts/benchlib"]
import cardinality_bench
import mysql_bench
from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.flusher import to_batch
from collector.stats import CollectorStats
from store import open_store
from store.base import Batch
series, seconds, count = int(series), int(seconds), int(count)

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def main():
    server = None
    if backend == "mysql":
        name = "gf_bench_flushab_" + secrets.token_hex(4)
        server = mysql_bench.admin(url)
        server.cursor().execute(f"CREATE DATABASE {name}")
        store = open_store(mysql_bench.database_url(url, name))
    else:
        store = open_store(url)
    try:
        await store.migrate()
        agg = Aggregator(CollectorConfig(max_metrics=10**7, max_pending_buckets=10**8),
                         CollectorStats())
        rng = random.Random(series)
        names = [b"card.s%06d" % i for i in range(series)]
        start = 1_789_999_200  # an hour's start: the same minutes and hours every run
        batches = []
        for n in range(count + 1):
            for s in range(seconds):
                for datagram in cardinality_bench._datagrams(rng, names):
                    agg.feed(datagram, start + n * seconds + s)
            batches.append(Batch("ab", n + 1, *to_batch(*agg.take())))
        await store.write_batch(batches[0])  # creates every metric: not measured
        before = cpu()
        for batch in batches[1:]:
            await store.write_batch(batch)
        if count:
            print((cpu() - before) / (series * seconds * count) * 1e6)
    finally:
        await store.close()
        if server is not None:
            server.cursor().execute(f"DROP DATABASE {name}")
            server.close()

asyncio.run(main())
"""


def measure(code: Path, backend: str, url: str, series: int, seconds: int, count: int,
            callgrind: bool) -> float:
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def run(batches: int, out: Path | None) -> str:
        command = [sys.executable, "-c", CHILD, str(code), backend, url, str(series),
                   str(seconds), str(batches)]
        if out is not None:
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                       *command]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise SystemExit(f"{code} {backend} {series}: {done.stderr[-2000:]}")
        return done.stdout + done.stderr

    if not callgrind:
        return float(run(count, None).split()[-1])
    with tempfile.TemporaryDirectory(prefix="gf-flushab-") as tmp:
        def collected(batches: int) -> int:
            text = run(batches, Path(tmp) / "callgrind.out")
            return int(re.findall(r"Collected : (\d+)", text)[-1])
        return (collected(count) - collected(0)) / (series * seconds * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", type=Path, required=True)
    parser.add_argument("--backend", default="sqlite,mysql")
    parser.add_argument("--cases", default="1000:1,20000:3,100000:3",
                        help="series:seconds per batch, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=0,
                        help="batches written per run (default: ~60,000 metric-seconds)")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/")
    args = parser.parse_args()
    backends = args.backend.split(",")
    if args.callgrind and backends != ["sqlite"]:
        parser.error("--callgrind counts this process only: --backend sqlite")
    cases = [tuple(int(x) for x in case.split(":")) for case in args.cases.split(",")]
    codes = [code.resolve() for code in args.code]
    figures: dict[tuple[str, int, int, Path], list[float]] = {}
    unit = "instructions" if args.callgrind else "us of CPU"
    for n in range(args.rounds):
        for series, seconds in cases:
            count = args.batches or max(2, 60_000 // (series * seconds))
            for backend in backends:
                for code in codes:
                    with tempfile.TemporaryDirectory(prefix="gf-flushab-") as tmp:
                        url = (args.mysql_url if backend == "mysql"
                               else f"sqlite:///{tmp}/ab.sqlite")
                        figure = measure(code, backend, url, series, seconds, count,
                                         args.callgrind)
                    figures.setdefault((backend, series, seconds, code), []).append(figure)
                    print(f"round {n + 1}: {backend} {series:,} series x {seconds} s a "
                          f"batch, {code}: {figure:,.2f} {unit} per metric-second",
                          flush=True)
    print(f"\nmedian {unit} per flushed metric-second, write_batch alone:")
    for (backend, series, seconds, code), values in figures.items():
        print(f"  {backend:6} {series:>7,} series x {seconds} s  {code}: "
              f"{statistics.median(values):,.2f}  ({', '.join(f'{v:,.2f}' for v in values)})")


if __name__ == "__main__":
    main()
