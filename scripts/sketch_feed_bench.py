#!/usr/bin/env python3
"""Aggregator.feed with and without value sketches, side by side in one run (issue 11's
budget: value lines with sketches keep >= 80% of the lines/s without).

    .venv/bin/python scripts/sketch_feed_bench.py [--rounds 5] [--shapes timers,mix]

Traffic (generated once, fixed seed; packed 1,400-byte datagrams, as scripts/bench's):
- timers: 10,000 names, every line a pystatsd-style ``%0.6f|ms`` timer with a value
  uniform in [0, 1000), 30% with 1-4 DogStatsD tags;
- lognormal: the same names, timers lognormal (median 20 ms, sigma 0.3: a service's
  latency, a narrower range per name);
- mix: scripts/bench_load.c's realistic mix (40% counters, a quarter ``|@0.1``; 40%
  timers; 10% gauges; 10% ``|h``/``|d``; 30% tagged; 1% invalid).

A trial runs in a fresh process pinned to core 0 (taskset): an Aggregator that knows
every name, then SECONDS simulated seconds of PER_SECOND lines (a take() after each,
as the flusher does every --flush-interval); process CPU time. Configurations
alternate, each round in a new process; the best of the rounds counts (the machine is
shared).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = 10_000
TAGS = ["env:prod", "host:web-01", "region:eu-west-1", "service:api", "version:1.2.3",
        "az:b", "team:core", "shard:7"]
CONFIGS = {
    "no-sketches": {"sketches": False},
    "sketches": {},
}


def line(rng: random.Random, shape: str) -> str:
    i = rng.randrange(NAMES)
    if shape == "mix" and rng.random() < 0.01:
        return rng.choice((f"b.m.{i:05d}:abc|c", f"b..m.{i:05d}:1|c", f"b.m.{i:05d}:1|q"))
    kind = (i * 7919) % 100 if shape == "mix" else 50
    x = rng.randrange(1_000_000_000) / 1e6
    if shape == "lognormal":
        x = rng.lognormvariate(3.0, 0.3)
    if kind < 40:
        text = f"b.m.{i:05d}:{1 + rng.randrange(5)}|c" + ("|@0.1" if rng.random() < 0.25 else "")
    elif kind < 80:
        text = f"b.m.{i:05d}:{x:0.6f}|ms"
    elif kind < 90:
        text = f"b.m.{i:05d}:{x:0.2f}|g"
    else:
        text = f"b.m.{i:05d}:{x:0.3f}|{'h' if kind < 95 else 'd'}"
    if rng.random() < 0.3:
        text += "|#" + ",".join(rng.sample(TAGS, rng.randint(1, 4)))
    return text


def packets(shape: str, count: int) -> list[bytes]:
    rng = random.Random(15)
    out: list[bytes] = []
    current: list[str] = []
    size = 0
    for _ in range(count):
        text = line(rng, shape)
        if current and size + len(text) + 1 > 1400:
            out.append("\n".join(current).encode())
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    out.append("\n".join(current).encode())
    return out


def trial(path: str, config_name: str, per_second: int, seconds: int) -> float:
    """One trial in this process: ns of CPU per line."""
    import logging

    from collector.aggregator import Aggregator
    from collector.config import CollectorConfig
    from collector.stats import CollectorStats

    logging.disable(logging.WARNING)
    with open(path, "rb") as f:
        lines, data = pickle.load(f)
    config = CollectorConfig(**CONFIGS[config_name])  # type: ignore[arg-type]
    agg = Aggregator(config, CollectorStats())
    assert agg.uses_c, "the C pass is not in use"
    for datagram in data:  # every name learnt
        agg.feed(datagram, 1_699_999_000)
    agg.take()
    per_packet = lines / len(data)
    step = int(per_second / per_packet)
    start = time.process_time()
    for second in range(seconds):
        for datagram in data[second * step:(second + 1) * step]:
            agg.feed(datagram, 1_700_000_000 + second)
        agg.take()
    return float((time.process_time() - start) / (seconds * step * per_packet) * 1e9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default="timers,lognormal,mix")
    parser.add_argument("--per-second", type=int, default=250_000)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--trial", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(trial(args.trial[0], args.trial[1], args.per_second, args.seconds))
        return 0
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            path = str(Path(tmp) / f"{shape}.pkl")
            count = args.per_second * args.seconds
            with open(path, "wb") as f:
                pickle.dump((count, packets(shape, count)), f)
            best = {name: float("inf") for name in CONFIGS}
            for r in range(args.rounds):
                names = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
                for name in names:
                    out = subprocess.run(
                        ["taskset", "-c", "0", sys.executable, __file__, "--trial", path, name,
                         "--per-second", str(args.per_second), "--seconds", str(args.seconds)],
                        check=True, capture_output=True, text=True, cwd=ROOT).stdout
                    best[name] = min(best[name], float(out))
            results[shape] = best
            base = best["no-sketches"]
            for name, ns in best.items():
                print(f"{shape:10s} {name:12s} {1e3 / ns:6.3f} M lines/s ({ns:4.0f} ns/line) "
                      f"{base / ns:6.1%} of no-sketches", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
