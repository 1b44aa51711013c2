"""Percentile query latency through the real HTTP API on MariaDB (issue 11's budget: p99
over 1 day for one timer, p95 < 50 ms).

    .venv/bin/python scripts/sketch_query_bench.py                 # ~1 min
    .venv/bin/python scripts/sketch_query_bench.py --runs 200 --rate 50 --json

Creates its own ``gf_bench_sketch_<hex>`` database (dropped at the end, also on Ctrl-C)
on ``--mysql-url`` and fills it through the real write path (``Store.write_batch``: the
per-second points and one DDSketch per minute, which the store merges into its minute
and hour levels) with one timer, ``db.query.ms``: ``--rate`` lognormal samples a second
(``%0.6f``-rounded, as pystatsd sends them) from yesterday 00:00 UTC to now. The app
runs in this process on a real socket (port 0) and is asked over HTTP with a read key,
one request at a time, after 3 warm-up requests:

    day_avg        the baseline: avg (no sketches), interval=1d, yesterday 00:00 .. today
                   00:00: what the same request costs without sketches
    day_hours      p99, interval=1d, yesterday 00:00 .. today 00:00: one bucket from the
                   day's 24 hour sketches (the headline figure)
    day_minutes    the same day to 23:30: not hour-aligned, so the store reads minutes
                   (up to 1,410 minute sketches, or the hours and the tail, as it chooses)
    last_24h       p99, interval=1d over [now - 24 h, now): Grafana's "last 24 hours"
                   (two day buckets, each from the hours and minutes it covers)
    hourly_24h     p99, interval=1h over the last 24 h: 25 buckets
    histogram_24h  GET .../histogram?buckets=10,50,100,500 over the last 24 h
    dashboard_24h  p99, interval=5m over the last 24 h: the dashboard's 1 d chart, 289
                   buckets of 5 minute sketches each (1,440 sketches merged)
    minutely_24h   p99, interval=1m over the last 24 h: 1,441 buckets, each its own
                   minute sketch (1,440 sketches decoded)

Traffic shape: one timer; every sketch is read from the database on every request (no
cache in the query path learns the inputs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pymysql
from aiohttp import web

from protocol.sketch import Sketch
from protocol.tokens import display_prefix, generate_token, hash_token
from query.app import make_app
from query.config import HttpConfig
from store import Batch, open_store
from store.base import PointRow, SketchRow

DAY = 86400
HOUR = 3600
NAME = "db.query.ms"
SLOW = ("dashboard_24h", "minutely_24h")  # fewer runs: each takes a second or so


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def admin(url: str) -> Any:
    parts = urlsplit(url)
    return pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "",
                           autocommit=True)


async def fill(store: Any, start: int, end: int, rate: int, seed: int) -> tuple[int, int]:
    """One timer's samples over [start, end), an hour per batch; (samples, sketch bytes)."""
    rng = np.random.default_rng(seed)
    samples = 0
    sketch_bytes = 0
    for seq, hour in enumerate(range(start, end, HOUR), 1):
        stop = min(hour + HOUR, end)
        points: list[PointRow] = []
        sketches: list[SketchRow] = []
        for minute in range(hour, stop, 60):
            sketch = Sketch()
            for second in range(minute, min(minute + 60, stop)):
                values = [float(f"{v:0.6f}") for v in rng.lognormal(3.0, 0.7, rate)]
                for v in values:
                    sketch.add(v)
                points.append((NAME, "value", second, float(rate), math.fsum(values),
                               min(values), max(values)))
                samples += rate
            data = sketch.to_bytes()
            sketch_bytes += len(data)
            sketches.append((NAME, "value", minute, data))
        await store.write_batch(Batch("bench-sketch", seq, points, sketches))
    return samples, sketch_bytes


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    name = f"gf_bench_sketch_{secrets.token_hex(4)}"
    conn = admin(args.mysql_url)
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    url = urlsplit(args.mysql_url)._replace(path=f"/{name}").geturl()
    store = open_store(url)
    runner: web.AppRunner | None = None
    try:
        await store.migrate()
        now = int(time.time())
        today = now - now % DAY
        yesterday = today - DAY
        current = now - now % 60
        started = time.monotonic()
        samples, sketch_bytes = await fill(store, yesterday, current, args.rate, seed=11)
        minutes = (current - yesterday) // 60
        log(f"data: {samples} samples of {NAME} over {minutes} minutes in "
            f"{time.monotonic() - started:.1f} s; {sketch_bytes / minutes:.0f} B a minute's "
            "sketch")
        token = generate_token()
        await store.create_key("bench-sketch", hash_token(token), display_prefix(token),
                               ("read",), None, now)
        runner = web.AppRunner(make_app(HttpConfig(default_rate_limit="1000000/s"), store),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        series = f"{base}/api/metrics/{NAME}"
        cases = {
            "day_avg": (series, {"from": yesterday, "to": today, "interval": "1d",
                                 "aggregation": "avg"}),
            "day_hours": (series, {"from": yesterday, "to": today, "interval": "1d",
                                   "aggregation": "p99"}),
            "day_minutes": (series, {"from": yesterday, "to": today - 1800, "interval": "1d",
                                     "aggregation": "p99"}),
            "last_24h": (series, {"from": now - DAY, "to": now, "interval": "1d",
                                  "aggregation": "p99"}),
            "hourly_24h": (series, {"from": now - DAY, "to": now, "interval": "1h",
                                    "aggregation": "p99"}),
            "histogram_24h": (f"{series}/histogram", {"from": now - DAY, "to": now,
                                                      "buckets": "10,50,100,500"}),
            "dashboard_24h": (series, {"from": now - DAY, "to": now, "interval": "5m",
                                       "aggregation": "p99"}),
            "minutely_24h": (series, {"from": now - DAY, "to": now, "interval": "1m",
                                      "aggregation": "p99"}),
        }
        out: dict[str, Any] = {"rate": args.rate, "runs": args.runs, "samples": samples,
                               "sketch_bytes_per_minute": round(sketch_bytes / minutes)}
        async with aiohttp.ClientSession(headers={"X-API-Key": token}) as session:
            for key, (target, params) in cases.items():
                query = {k: str(v) for k, v in params.items()}
                timings = []
                answer: Any = None
                runs = args.runs if key not in SLOW else max(args.runs // 5, 5)
                for _run in range(runs + 3):  # 3 warm-up requests, not counted
                    t0 = time.perf_counter()
                    async with session.get(target, params=query) as response:
                        answer = await response.json()
                    timings.append((time.perf_counter() - t0) * 1e3)
                    if response.status != 200:
                        raise SystemExit(f"{key}: {response.status} {answer}")
                timings = timings[3:]
                shown = (answer["points"][0]["value"] if "points" in answer
                         else answer["buckets"])
                out[key] = {"p50_ms": round(pct(timings, 0.5), 2),
                            "p95_ms": round(pct(timings, 0.95), 2),
                            "mean_ms": round(statistics.fmean(timings), 2)}
                log(f"  {key:14s} p50 {out[key]['p50_ms']:7.2f} ms  p95 "
                    f"{out[key]['p95_ms']:7.2f} ms  (first answer: {shown})")
    finally:
        if runner is not None:
            await runner.cleanup()
        await store.close()
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/")
    parser.add_argument("--runs", type=int, default=50, help="timed requests per case")
    parser.add_argument("--rate", type=int, default=10,
                        help="samples a second of the timer (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
