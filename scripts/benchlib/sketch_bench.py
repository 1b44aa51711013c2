"""The sketches section of scripts/bench: issue #11's four budgets, side by side.

- feed: scripts/sketch_feed_bench.py: lines/s of the collector's aggregation pass
  (Aggregator.feed, the C pass when built, and take() every simulated second) with
  sketches on and off, simulated seconds of each in turn in one pinned process, the
  caches swept before each (the ratio: the median of the pairs' ratios), on
  its ``timers`` (10,000 names, ``%0.6f|ms``, 30% tagged) and ``mix`` (the realistic
  mix of scripts/bench_load.c) traffic. This is the pass the sketch changes, without
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
    log("sketches: the aggregation pass with and without sketches (sketch_feed_bench)")
    feed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sketch_feed_bench.py"), "--shapes",
         "timers,mix", "--pairs", "20" if quick else "40"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    ns_per_line = json.loads(feed.stdout.splitlines()[-1])
    out["feed"] = {shape: {"with": 1e9 / ns["sketches"], "without": 1e9 / ns["no-sketches"],
                           "ratio": ns["ratio"]}  # the median of the pairs' ratios
                   for shape, ns in ns_per_line.items()}
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
