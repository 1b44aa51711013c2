"""scripts/bench: HTTP ingest through the real ``serve`` process (MariaDB store).

Batch: N clients each POST 1,000-point batches back to back (200 = committed).
Single: N clients POST one counter each, back to back (the highest rate), then a paced
run at half that rate for the latency target. The server is pinned to core 0 and this
client to core 1.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
from typing import Any

from mysql_bench import admin, database_url, log, pct


def http_bench(bench: Any) -> dict[str, Any]:
    import importlib

    main = importlib.import_module("__main__")
    args = bench.args
    try:
        conn = admin(args.mysql_url)
    except Exception as exc:  # pymysql errors, refused connections
        return {"skipped": f"MariaDB unavailable: {exc}"}
    name = f"gf_bench_{secrets.token_hex(4)}"
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    conn.close()
    bench.stack.callback(_drop, args.mysql_url, name)
    url = database_url(args.mysql_url, name)
    made = subprocess.run(
        [main.CLI, "keys", "create", "bench", "--rate-limit", "1000000/s", "--database-url", url,
         "--state-dir", str(bench.tmp / "state")],
        capture_output=True, text=True, cwd=bench.tmp,
    )
    if made.returncode != 0:
        return {"skipped": f"keys create failed: {made.stderr.strip()[-200:]}"}
    token = made.stdout.strip().splitlines()[0]
    server = main.Proc(main.pinned(main.DAEMON_CPU, [
        main.CLI, "serve", "--database-url", url, "--http-port", "0", "--state-dir",
        str(bench.tmp / "state"),
    ]), cwd=bench.tmp)
    bench.stack.callback(server.stop)
    try:
        server.wait_for(r"listening on HTTP", 60)
        port = int(re.findall(r"listening on HTTP [\d.]+:(\d+)", "".join(server.lines))[0])
    except (RuntimeError, TimeoutError) as exc:
        return {"skipped": f"serve did not start: {str(exc)[-300:]}"}
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(main.LOAD_CPU)})
    try:
        return asyncio.run(_run(port, token, 3.0 if args.quick else 8.0))
    finally:
        os.sched_setaffinity(0, previous)


def _drop(url: str, name: str) -> None:
    conn = admin(url)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


async def _run(port: int, token: str, seconds: float) -> dict[str, Any]:
    import aiohttp
    import orjson

    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": token, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        now = int(time.time())
        probe = orjson.dumps({"points": [{"metric": "bench.probe", "type": "counter",
                                          "value": 1, "timestamp": now}]})
        async with session.post(f"{base}/api/metrics/batch", data=probe) as response:
            if response.status != 200:
                text = await response.text()
                reason = f"POST /api/metrics/batch answered {response.status}: {text[:120]}"
                log(f"HTTP skipped: {reason}")
                return {"skipped": reason}

        async def batches(client: int, stop: float, latencies: list[float]) -> int:
            points = 0
            n = 0
            while time.monotonic() < stop:
                n += 1
                ts = int(time.time())
                body = orjson.dumps({"points": [
                    {"metric": f"bench.http.{client}.{i % 200}", "type": "counter",
                     "value": 1, "timestamp": ts - (i // 200)} for i in range(1000)]})
                t0 = time.perf_counter()
                async with session.post(f"{base}/api/metrics/batch", data=body) as response:
                    await response.read()
                    if response.status == 200:
                        points += 1000
                latencies.append((time.perf_counter() - t0) * 1e3)
            return points

        log("HTTP batch ingest: 8 clients x 1,000-point batches")
        latencies: list[float] = []
        t0 = time.monotonic()
        done = await asyncio.gather(*(batches(c, t0 + seconds, latencies) for c in range(8)))
        elapsed = time.monotonic() - t0
        batch = {"points_per_s": sum(done) / elapsed, "clients": 8, **_pcts(latencies)}
        log(f"  {batch['points_per_s']:,.0f} points/s")

        body = orjson.dumps({"metric": "bench.single", "value": 1})

        async def single(stop: float, latencies: list[float], interval: float = 0.0) -> int:
            ok = 0
            next_at = time.monotonic()
            while time.monotonic() < stop:
                if interval:
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t0 = time.perf_counter()
                async with session.post(f"{base}/api/metrics/counter", data=body) as response:
                    await response.read()
                    ok += response.status == 200
                latencies.append((time.perf_counter() - t0) * 1e3)
            return ok

        log("HTTP single counter POSTs: 32 clients, back to back")
        latencies = []
        t0 = time.monotonic()
        done = await asyncio.gather(*(single(t0 + seconds, latencies) for _ in range(32)))
        elapsed = time.monotonic() - t0
        rate = sum(done) / elapsed
        result = {"req_per_s": rate, **_pcts(latencies)}
        log(f"  {rate:,.0f} req/s")
        log("HTTP single counter POSTs at half that rate")
        latencies = []
        t0 = time.monotonic()
        done = await asyncio.gather(*(single(t0 + seconds, latencies, 32 / (rate / 2))
                                      for _ in range(32)))
        half = {"req_per_s": sum(done) / (time.monotonic() - t0), **_pcts(latencies)}
        return {"batch": batch, "single": result, "half": half}


def _pcts(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {"p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95),
            "p99": pct(latencies, 0.99)}
