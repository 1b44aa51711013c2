#!/usr/bin/env python3
"""Aggregator.feed with and without value sketches, side by side in one run (issue 11's
budget: value lines with sketches keep >= 80% of the lines/s without).

    .venv/bin/python scripts/sketch_feed_bench.py [--pairs 40] [--shapes timers,mix]

Traffic (generated once, fixed seed; packed 1,400-byte datagrams, as scripts/bench's):
- timers: 10,000 names, every line a pystatsd-style ``%0.6f|ms`` timer with a value
  uniform in [0, 1000), 30% with 1-4 DogStatsD tags;
- lognormal: the same names, timers lognormal (median 20 ms, sigma 0.3: a service's
  latency, a narrower range per name);
- mix: scripts/bench_load.c's realistic mix (40% counters, a quarter ``|@0.1``; 40%
  timers; 10% gauges; 10% ``|h``/``|d``; 30% tagged; 1% invalid).

The measurement runs in one process pinned to core 0 (taskset), per traffic shape: two
Aggregators, one per configuration, that know every name; then --pairs simulated
seconds of PER_SECOND lines for each in turn (ABBA order), each second's feed() calls
and its take() (as the flusher does every --flush-interval) timed in process CPU time.
Before every timed second a 64 MB write sweeps the caches, so neither configuration
inherits the other's lines. The ratio is the median over the pairs of each pair's
ratio: this machine is shared and its speed moves from one second to the next, which
two runs a fraction of a second apart mostly cancel (separate processes a few seconds
apart gave pair ratios from 52% to 200% in one run); the lines/s are each
configuration's median second.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
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


def measure(path: str, per_second: int, pairs: int) -> dict[str, float]:
    """The interleaved seconds in this process: median ns of CPU per line of each
    configuration, and the median of the pairs' ratios (without / with: lines/s kept)."""
    import logging

    from collector.aggregator import Aggregator
    from collector.config import CollectorConfig
    from collector.stats import CollectorStats

    logging.disable(logging.WARNING)
    with open(path, "rb") as f:
        lines, data = pickle.load(f)
    aggregators = {}
    for name, options in CONFIGS.items():
        agg = Aggregator(CollectorConfig(**options), CollectorStats())  # type: ignore[arg-type]
        assert agg.uses_c, "the C pass is not in use"
        for datagram in data:  # every name learnt
            agg.feed(datagram, 1_699_999_000)
        agg.take()
        aggregators[name] = agg
    per_packet = lines / len(data)
    step = int(per_second / per_packet)
    seconds_of_data = len(data) // step
    ns: dict[str, list[float]] = {name: [] for name in CONFIGS}
    ratios = []
    for pair in range(pairs):
        chunk = data[(pair % seconds_of_data) * step:(pair % seconds_of_data + 1) * step]
        order = list(CONFIGS) if pair % 2 == 0 else list(CONFIGS)[::-1]
        for name in order:
            agg = aggregators[name]
            bytearray(64 << 20)  # a cold cache for either configuration
            start = time.process_time()
            for datagram in chunk:
                agg.feed(datagram, 1_700_000_000 + pair)
            agg.take()
            ns[name].append((time.process_time() - start) / (step * per_packet) * 1e9)
        ratios.append(ns["no-sketches"][-1] / ns["sketches"][-1])
    return {**{name: statistics.median(v) for name, v in ns.items()},
            "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--shapes", default="timers,lognormal,mix")
    parser.add_argument("--per-second", type=int, default=250_000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.per_second, args.pairs)))
        return 0
    results: dict[str, dict[str, float]] = {}  # shape -> median ns of each config, ratio
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            path = str(Path(tmp) / f"{shape}.pkl")
            count = args.per_second * 4  # four seconds of traffic, taken in turn
            with open(path, "wb") as f:
                pickle.dump((count, packets(shape, count)), f)
            out = subprocess.run(
                ["taskset", "-c", "0", sys.executable, __file__, "--measure", path,
                 "--per-second", str(args.per_second), "--pairs", str(args.pairs)],
                check=True, capture_output=True, text=True, cwd=ROOT).stdout
            result = results[shape] = json.loads(out)
            for name in CONFIGS:
                ns = result[name]
                print(f"{shape:10s} {name:12s} {1e3 / ns:6.3f} M lines/s ({ns:4.0f} ns/line)",
                      flush=True)
            print(f"{shape:10s} sketches keep {result['ratio']:.1%} of the lines/s without "
                  f"(median of {args.pairs} pairs; pairs {result['low']:.0%}-"
                  f"{result['high']:.0%})", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
