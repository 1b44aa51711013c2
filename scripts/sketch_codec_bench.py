#!/usr/bin/env python3
"""The quantile sketch's figures: C (protocol/_sketch.c) against the reference
(protocol.sketch.PySketch). A measurement to rerun, not a test:

    .venv/bin/python scripts/sketch_codec_bench.py [--alpha-bp 100] [--repeat 5]

- add: ns per ``add(value)`` from Python (the call included), lognormal values, and the
  ns per sample of ``to_bytes`` + ``from_bytes`` round trips;
- bytes per sketch of one metric-minute at 1, 100 and 10,000 samples/s (1, 6,000 and
  600,000 lognormal samples; integer weights, and weights 1/0.3 of a sample rate);
- merge_bytes: bins merged per second, each blob a busy minute's sketch.

Each figure is the best of --repeat runs (the least disturbed by the other work of a
shared machine). Values: lognormal(mu=3, sigma=1.5), milliseconds of a typical timer.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.sketch import PySketch, Sketch

try:
    from protocol._sketch import Sketch as CSketch
except ImportError:
    CSketch = None


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def ns_per_add(new: Callable[[], Any], values: list[float], repeat: int) -> float:
    def run() -> float:
        s = new()
        add = s.add
        start = time.perf_counter_ns()
        for v in values:
            add(v)
        return (time.perf_counter_ns() - start) / len(values)

    return best(repeat, run)


def loop_overhead(values: list[float], repeat: int) -> float:
    def run() -> float:
        def noop(_v: float) -> None:
            pass

        start = time.perf_counter_ns()
        for v in values:
            noop(v)
        return (time.perf_counter_ns() - start) / len(values)

    return best(repeat, run)


def bins_per_second(new: Callable[[], Any], blobs: list[bytes], bins: int,
                    repeat: int) -> float:
    def run() -> float:
        s = new()
        start = time.perf_counter()
        for blob in blobs:
            s.merge_bytes(blob)
        return (time.perf_counter() - start) / (bins * len(blobs))

    return 1.0 / best(repeat, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha-bp", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(20240611)
    alpha = args.alpha_bp
    impls = [("C", CSketch)] if CSketch is not None else []
    impls.append(("Python", PySketch))
    print(f"Sketch is {Sketch.__module__}.{Sketch.__name__}; alpha = {alpha / 100:g}%")
    if CSketch is None:
        print("protocol._sketch is not built: the Python figures only")

    values = [rng.lognormvariate(3.0, 1.5) for _ in range(200_000)]
    overhead = loop_overhead(values, args.repeat)
    print(f"\nadd, ns per sample (a Python for loop calling a no-op: {overhead:.0f} ns)")
    for name, impl in impls:
        got = ns_per_add(partial(impl, alpha), values, args.repeat)
        print(f"  {name:7s} {got:8.0f} ns")

    print("\nbytes per metric-minute sketch (lognormal samples)")
    print(f"  {'samples/s':>10s} {'samples':>8s} {'bins':>6s} {'bytes':>7s} {'rate 0.3':>9s}")
    for per_second in (1, 100, 10_000):
        n = per_second * 60
        minute = [rng.lognormvariate(3.0, 1.5) for _ in range(n)]
        s, weighted = Sketch(alpha), Sketch(alpha)
        for v in minute:
            s.add(v)
            weighted.add(v, 1 / 0.3)
        nbins = _bins(s)
        print(f"  {per_second:>10,d} {n:>8,d} {nbins:>6d} {len(s.to_bytes()):>7,d} "
              f"{len(weighted.to_bytes()):>9,d}")

    busy = Sketch(alpha)
    for v in [rng.lognormvariate(3.0, 1.5) for _ in range(600_000)]:
        busy.add(v)
    blob = busy.to_bytes()
    nbins = _bins(busy)
    blobs = [blob] * 200
    print(f"\nmerge_bytes, bins per second (blobs of {nbins} bins, {len(blob):,d} bytes)")
    for name, impl in impls:
        rate = bins_per_second(partial(impl, alpha), blobs, nbins, args.repeat)
        print(f"  {name:7s} {rate / 1e6:8.1f} M bins/s  ({1e6 / rate * nbins:.1f} us per blob)")

    print("\nround trip to_bytes + from_bytes of that blob, us")
    for name, impl in impls:
        s = impl.from_bytes(blob)

        def trip(s: Any = s, impl: Any = impl) -> float:
            start = time.perf_counter()
            for _ in range(200):
                impl.from_bytes(s.to_bytes())
            return (time.perf_counter() - start) / 200

        print(f"  {name:7s} {best(args.repeat, trip) * 1e6:8.1f} us")


def _bins(s: Any) -> int:
    """The number of bins of a sketch: the bytes' two bin counts (varints)."""
    data = s.to_bytes()
    pos = 3
    pos = _skip_weight(data, pos)
    total = 0
    for _ in range(2):
        n, pos = _varint(data, pos)
        total += n
        for _ in range(n):
            _, pos = _varint(data, pos)
            pos = _skip_weight(data, pos)
    return total


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def _skip_weight(data: bytes, pos: int) -> int:
    n, pos = _varint(data, pos)
    return pos + 8 if n == 1 else pos


if __name__ == "__main__":
    main()
