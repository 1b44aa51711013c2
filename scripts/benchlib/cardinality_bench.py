"""scripts/bench --only cardinality: daemon CPU per flushed metric-second (issue 15).

What many active series cost beyond their lines: for each store (SQLite in a temp dir,
MariaDB in its own ``gf_bench_<hex>_cardinality`` database) and each count of active
series (1k, 20k, 100k), the collector's real parts in this process (the Aggregator with
the C pass, the Flusher ticking every second, the DurableWriter, the store) take, every
wall-clock second, one line of each series: the realistic mix's kinds (40% counters, a
quarter of them ``|@0.1``; 40% timers ``%0.6f|ms`` with their sketches; 10% gauges;
10% ``|h``), random values, in 1,400-byte datagrams. Nothing a cache could learn but the
names, which a fleet's are.

Measured: the process's CPU (every thread: the SQLite writer's too) minus the main
thread's CPU inside ``feed``, over the metric-seconds fed, from the first measured
second until the writer has written the last of them: the CPU of everything after the
parse (take, batches, rollups, sketch merges, SQL, WAL) per metric-second. MariaDB's own
CPU is the server's, not the daemon's, and is not in it. Each case runs twice side by
side: the default (``--flush-write-share 0.25``: a busy database gets fewer, larger
batches) and ``--flush-write-share 1`` (a batch a second whenever the last one is
written, the cadence before it existed).
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import shutil
import tempfile
import time
from typing import Any

import uvloop
from mysql_bench import bench_database, log

SERIES = (1_000, 20_000, 100_000)
# The old cadence first: on MariaDB (one database for every case) the later case runs
# on the larger tables, so any bias is against the default.
SHARES = (1.0, 0.25)
DATAGRAM = 1400
WRITE_TIMEOUT = 300.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _line(rng: random.Random, name: bytes, i: int) -> bytes:
    kind = (i * 7919) % 100  # a name keeps its kind (as in bench_load.c's mix)
    if kind < 40:
        if rng.random() < 0.25:
            return b"%s:%d|c|@0.1" % (name, rng.randint(1, 5))
        return b"%s:%d|c" % (name, rng.randint(1, 5))
    if kind < 80:
        return b"%s:%0.6f|ms" % (name, rng.random() * 1000)
    if kind < 90:
        return b"%s:%0.2f|g" % (name, rng.random() * 1000)
    return b"%s:%0.3f|h" % (name, rng.random() * 1000)


def _datagrams(rng: random.Random, names: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for i, name in enumerate(names):
        line = _line(rng, name, i)
        if size + len(line) + 1 > DATAGRAM and part:
            out.append(b"\n".join(part))
            part, size = [], 0
        part.append(line)
        size += len(line) + 1
    if part:
        out.append(b"\n".join(part))
    return out


async def _case(url: str, series: int, share: float, seconds: int, tag: str) -> dict[str, Any]:
    from collector.aggregator import Aggregator
    from collector.config import CollectorConfig
    from collector.flusher import Flusher, to_batch
    from collector.stats import CollectorStats
    from store import open_store
    from store.durable import DurableWriter

    store = open_store(url)
    await store.migrate()
    config = CollectorConfig(max_metrics=10**7, max_pending_buckets=10**8,
                             flush_write_share=share)
    stats = CollectorStats()
    agg = Aggregator(config, stats)
    # At 100k series one second of the mix is ~160k rows (60k of them sketch merges):
    # on this machine a longer write than --flush-timeout's 10 s. The figure is what it
    # costs, not timeouts and retries: a longer timeout here.
    writer = DurableWriter(store.write_batch, f"bench-cardinality-{tag}", stats=stats,
                           write_timeout=WRITE_TIMEOUT, ack_timeout=WRITE_TIMEOUT)
    writer.start()
    flusher = Flusher(agg, config, stats, writer)
    rng = random.Random(series)
    names = [b"card.%s.s%06d" % (tag.encode(), i) for i in range(series)]
    # the first second creates the metrics (once in a collector's life): not measured
    now = int(time.time())
    for datagram in _datagrams(rng, names):
        agg.feed(datagram, now)
    await writer.commit(*to_batch(*agg.take()))
    load = [_datagrams(rng, names) for _ in range(seconds)]  # built before measuring
    # The daemon freezes what start-up made out of the garbage collector (runner.py);
    # so does this stand-in, or every full collection would walk the bench's setup.
    gc.collect()
    gc.freeze()
    stopping = asyncio.Event()
    ticking = asyncio.create_task(flusher.run(stopping))
    batches_before = stats.flushes
    cpu_before = _cpu()
    started = time.monotonic()
    feed_cpu = 0.0
    for n, datagrams in enumerate(load):
        # one second of lines, fed in slices so the loop (the flusher) runs between them
        second = int(time.time())
        t0 = time.thread_time()
        for i, datagram in enumerate(datagrams):
            agg.feed(datagram, second)
            if i % 64 == 63:
                feed_cpu += time.thread_time() - t0
                await asyncio.sleep(0)
                t0 = time.thread_time()
        feed_cpu += time.thread_time() - t0
        delay = started + n + 1 - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
    stopping.set()
    await ticking
    await flusher.cut(force=True)
    await writer.close(120)  # writes everything pending (the database is up)
    elapsed = time.monotonic() - started
    cpu = _cpu() - cpu_before
    batches = stats.flushes - batches_before
    await store.close()
    gc.unfreeze()  # the next case starts as this one did
    metric_seconds = series * seconds
    return {
        "series": series, "share": share, "seconds": seconds,
        "flush_us_per_metric_second": (cpu - feed_cpu) / metric_seconds * 1e6,
        "feed_us_per_line": feed_cpu / metric_seconds * 1e6,
        "batches": batches, "wall_s": elapsed, "rows_lost": stats.rows_lost,
        "slowest_write_s": stats.flush_seconds_max, "write_timeouts": stats.flush_timeouts,
    }


async def _all(urls: dict[str, str], seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend, url in urls.items():
        for series in SERIES:
            for share in SHARES:
                tag = f"{backend[0]}{series // 1000}k{int(share * 100)}"
                # SQLite: a file per case, so every case starts from the same size
                case_url = url.replace("{tag}", tag)
                case = await _case(case_url, series, share, seconds, tag)
                case["tag"] = backend
                case["old"] = f"{backend}_{series}_1.0"  # the same case at share 1
                out[f"{backend}_{series}_{share}"] = case
                log(f"  cardinality {backend} {series:,} series, --flush-write-share {share}: "
                    f"{case['flush_us_per_metric_second']:.1f} us per metric-second after the "
                    f"parse, feed {case['feed_us_per_line']:.2f} us/line, "
                    f"{case['batches']} batches in {case['wall_s']:.1f} s, slowest write "
                    f"{case['slowest_write_s']:.1f} s")
    return out


def cardinality_bench(bench: Any) -> dict[str, Any]:
    seconds = 6 if bench.args.quick else 12
    tmp = tempfile.mkdtemp(prefix="gf-bench-cardinality-")
    bench.stack.callback(shutil.rmtree, tmp, True)
    urls = {"sqlite": f"sqlite:///{tmp}/cardinality-{{tag}}.sqlite"}
    url, name = bench_database(bench, "cardinality")
    if url is not None:
        urls["mysql"] = url
    else:
        log(f"cardinality on MariaDB skipped: {name}")
    log(f"cardinality: {', '.join(f'{n:,}' for n in SERIES)} active series x {seconds} s, "
        f"on {' and '.join(urls)}")
    return uvloop.run(_all(urls, seconds))
