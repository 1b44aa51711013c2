"""The sketches section of scripts/bench: issue #11's four budgets, side by side.

- feed: lines/s of the collector's aggregation pass (Aggregator.feed, the C pass when
  built, and take() every simulated second) with sketches on and off, alternating
  rounds in one fresh process, best of each. Traffic: value lines as real clients send
  them: 2,000 timer names, lognormal values in pystatsd's ``%0.6f|ms``, 30% with 1-4
  DogStatsD tags, 20% at ``|@0.5``, packed in 1,400-byte datagrams; every value is
  drawn anew (no cache can learn them). A second case adds the counters of the
  realistic mix (half the lines ``n|c``). This is the pass the sketch changes, without
  the socket and the flush (the UDP section measures those).
- flush: scripts/sketch_flush_bench.py: 10,000 timers' per-minute deltas (~70 bins,
  100 samples/s each) merged into MariaDB by write_batch: sketch bins/s.
- size: the bytes of one busy timer-minute's sketch (10,000 samples/s for a minute) and
  of a 100/s and a 1/s one; docs/sketches-layout.md has InnoDB's bytes for the same.
- query: scripts/sketch_query_bench.py: p99 over one day for one timer through HTTP.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mysql_bench import log

ROOT = Path(__file__).resolve().parents[2]

FEED = r"""
import json, random, sys, time
from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.stats import CollectorStats

rng = random.Random(7)
names = [f"app.svc{i % 40}.op{i}.ms" for i in range(2000)]
counters = [f"app.svc{i % 40}.hits{i}" for i in range(2000)]
TAGS = ["env:prod", "region:eu-west-1", "host:web-17", "version:1.4.2"]

def value_line():
    line = f"{rng.choice(names)}:{rng.lognormvariate(3.0, 1.0):0.6f}|ms"
    if rng.random() < 0.2:
        line += "|@0.5"
    if rng.random() < 0.3:
        line += "|#" + ",".join(TAGS[:rng.randint(1, 4)])
    return line

def counter_line():
    return f"{rng.choice(counters)}:{rng.randint(1, 5)}|c"

def datagrams(mixed, lines):
    out, cur, size = [], [], 0
    for n in range(lines):
        line = counter_line() if mixed and n % 2 else value_line()
        if size + len(line) + 1 > 1400:
            out.append("\n".join(cur).encode())
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    out.append("\n".join(cur).encode())
    return out

LINES = int(sys.argv[1])
PER_SECOND = 100_000  # lines per simulated second (a take() each)
result = {}
for case, mixed in (("values", False), ("mix", True)):
    data = datagrams(mixed, LINES)
    per = max(1, len(data) * PER_SECOND // LINES)
    best = {True: 0.0, False: 0.0}
    for _round in range(3):
        for sketches in (True, False):
            agg = Aggregator(CollectorConfig(sketches=sketches), CollectorStats())
            agg.feed(data[0], 1_700_000_000)  # learn the names once: a fleet's are known
            for d in data[1:per]:
                agg.feed(d, 1_700_000_000)
            agg.take()
            now = 1_700_000_001
            counted = agg.stats.lines
            t0 = time.perf_counter()
            for i, d in enumerate(data):
                agg.feed(d, now)
                if i % per == per - 1:
                    agg.take()
                    now += 1
            agg.take()
            seconds = time.perf_counter() - t0
            best[sketches] = max(best[sketches], (agg.stats.lines - counted) / seconds)
    result[case] = {"with": best[True], "without": best[False],
                    "ratio": best[True] / best[False]}
print(json.dumps(result))
"""

SIZE = r"""
import json, random
from protocol.sketch import Sketch
rng = random.Random(3)
out = {}
for rate in (1, 100, 10_000):
    sketch = Sketch()
    for _ in range(rate * 60):
        sketch.add(float(f"{rng.lognormvariate(3.0, 1.0):0.6f}"))
    out[str(rate)] = len(sketch.to_bytes())
print(json.dumps(out))
"""


def _python(code: str, *args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=True)
    return done.stdout


def sketch_bench(bench: Any) -> dict[str, Any]:
    quick = bench.args.quick
    out: dict[str, Any] = {}
    log("sketches: the aggregation pass with and without sketches (alternating rounds)")
    out["feed"] = json.loads(_python(FEED, "300000" if quick else "1000000"))
    out["size"] = json.loads(_python(SIZE))
    log("sketches: 10,000 timers' minute deltas merged into MariaDB (sketch_flush_bench)")
    flush = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sketch_flush_bench.py"), "--url",
         bench.args.mysql_url, "--flushes", "3" if quick else "6"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    steady = re.search(r"steady state: median ([\d.]+) s a flush = ([\d,]+) sketch rows/s "
                       r"\(([\d,]+) bins/s\)", flush.stdout)
    if steady is not None:
        out["flush"] = {"seconds": float(steady.group(1)),
                        "rows_per_s": float(steady.group(2).replace(",", "")),
                        "bins_per_s": float(steady.group(3).replace(",", ""))}
    log("sketches: p99 over one day through HTTP (sketch_query_bench)")
    query = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sketch_query_bench.py", ), "--mysql-url",
         bench.args.mysql_url, "--runs", "30" if quick else "100", "--rate", "100", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    out["query"] = json.loads(query.stdout)
    return out
