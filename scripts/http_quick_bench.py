#!/usr/bin/env python3
"""A quick figure for HTTP ingest (the full benchmark is ``scripts/bench``).

    .venv/bin/python scripts/http_quick_bench.py [--seconds 5] [--batch-clients 4]
        [--single-clients 32] [--database-url sqlite:///...] [--commit-window 0.002]

Starts the installed ``glowing-fiesta serve`` on an ephemeral port (SQLite in a temp
directory unless --database-url is given), creates a key with a limit far above the
load, then measures with aiohttp clients in this process (uvloop):

- batch: ``--batch-clients`` clients POST 1,000-point batches back to back; points/s.
- single: ``--single-clients`` clients POST one counter each, back to back;
  requests/s and latency percentiles (every 200 is a committed point).

Client and server share the machine: on a small box the client's CPU is part of the
figure. Pin with taskset for cleaner numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import uvloop

T = TypeVar("T")
BIN = Path(sys.executable).with_name("glowing-fiesta")


def create_key(database_url: str, state_dir: Path) -> str:
    result = subprocess.run(
        [str(BIN), "keys", "create", "bench", "--rate-limit", "100000000/s",
         "--database-url", database_url, "--state-dir", str(state_dir)],
        check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def start_server(
    database_url: str, state_dir: Path, commit_window: float
) -> tuple[subprocess.Popen[str], str]:
    """``serve`` on port 0; the port is read from its log (no fixed port, no sleep)."""
    process = subprocess.Popen(
        [str(BIN), "serve", "--http-port", "0", "--database-url", database_url,
         "--state-dir", str(state_dir), "--commit-window", str(commit_window),
         "--log-level", "info"],
        stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        match = re.search(r"listening on HTTP (\S+):(\d+)", line)
        if match:
            url = f"http://{match.group(1)}:{match.group(2)}"
        if line.rstrip().endswith("ready"):
            break
    if url is None:
        process.kill()
        raise SystemExit("serve did not start")
    # keep reading its log, or a full pipe would stall the server
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, url


async def batch_load(url: str, token: str, clients: int, seconds: float) -> float:
    now = int(time.time())
    body = {"points": [
        {"metric": f"bench.batch.{i % 100}", "type": "value", "value": i, "timestamp": now}
        for i in range(1000)
    ]}
    headers = {"X-API-Key": token}
    points = 0
    async with aiohttp.ClientSession(url) as session:
        async with session.post("/api/metrics/batch", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()  # warm: kinds cached, metrics created
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def client() -> None:
            nonlocal points
            while time.perf_counter() < deadline:
                async with session.post("/api/metrics/batch", json=body,
                                        headers=headers) as response:
                    assert response.status == 200, await response.text()
                    points += 1000

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return points / elapsed


async def single_load(
    url: str, token: str, clients: int, seconds: float
) -> tuple[float, list[float]]:
    headers = {"X-API-Key": token}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def client(n: int) -> None:
            body = {"metric": f"bench.single.{n % 10}"}
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post("/api/metrics/counter", json=body,
                                        headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def scrape(url: str, names: tuple[str, ...]) -> dict[str, float]:
    async with aiohttp.ClientSession(url) as session, session.get("/metrics") as r:
        text = await r.text()
    out = {}
    for name in names:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        if match:
            out[name] = float(match.group(1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--single-clients", type=int, default=32)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--commit-window", type=float, default=0.002)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gf-http-bench-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    process = None
    try:
        token = create_key(database_url, workdir)
        process, url = start_server(database_url, workdir, args.commit_window)
        print(f"serve at {url} on {database_url.split('://')[0]}, commit window "
              f"{args.commit_window * 1000:g} ms, {os.cpu_count()} CPUs")
        batch_rate = run(batch_load(url, token, args.batch_clients, args.seconds))
        print(f"batch : {batch_rate:,.0f} points/s "
              f"({args.batch_clients} clients x 1,000-point batches)")
        before = run(scrape(url, ("gf_http_commit_batches_total",
                                          "gf_http_commit_requests_total")))
        rate, latencies = run(single_load(url, token, args.single_clients, args.seconds))
        after = run(scrape(url, ("gf_http_commit_batches_total",
                                         "gf_http_commit_requests_total")))
        ms = [x * 1000 for x in latencies]
        commits = after["gf_http_commit_batches_total"] - before["gf_http_commit_batches_total"]
        requests = (after["gf_http_commit_requests_total"]
                    - before["gf_http_commit_requests_total"])
        print(f"single: {rate:,.0f} requests/s ({args.single_clients} clients), latency "
              f"p50 {percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms, "
              f"p99 {percentile(ms, 99):.1f} ms; {requests / max(commits, 1):.1f} "
              "requests per commit")
        return 0
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
