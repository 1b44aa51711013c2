"""scripts/bench: HTTP ingest through the real ``serve`` process (MariaDB store).

Batch: ``--http-clients`` clients (16) each POST 1,000-point batches back to back
(200 = committed), in two shapes: a fleet's flushes (250 metric names shared by all
clients, 4 samples each in the current second: what instrumented services send) and
the worst case (every point its own metric-second, so every point is a row to write).
Single: 32 clients POST one counter each, back to back (the highest rate), then a paced
run at half that rate for the latency target. One server process is pinned to core 0
and this client to core 1. The client is a lean keep-alive HTTP/1.1 loop (see Client);
its own CPU share is reported beside each figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import time
from typing import Any

from mysql_bench import admin, database_url, log, pct, settle


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
    serve = [main.CLI, "serve", "--database-url", url, "--http-port", "0", "--state-dir",
             str(bench.tmp / "state"), "--workers", str(args.http_workers)]
    # One worker: pinned, as every daemon here. More: they get every core.
    server = main.Proc(main.pinned(main.DAEMON_CPU, serve) if args.http_workers == 1 else serve,
                       cwd=bench.tmp)
    bench.stack.callback(server.stop)
    try:
        server.wait_for(r"listening on HTTP", 60)
        port = int(re.findall(r"listening on HTTP [\d.]+:(\d+)", "".join(server.lines))[0])
    except (RuntimeError, TimeoutError) as exc:
        return {"skipped": f"serve did not start: {str(exc)[-300:]}"}
    settle(args.mysql_url)
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(main.LOAD_CPU)})
    try:
        import uvloop

        return uvloop.run(_run(port, token, 3.0 if args.quick else 8.0, args.http_clients))
    finally:
        os.sched_setaffinity(0, previous)


def _drop(url: str, name: str) -> None:
    conn = admin(url)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


class Client:
    """One keep-alive HTTP/1.1 connection that POSTs prepared requests and reads the
    answers with the least work: aiohttp's client costs ~200 µs a request, as much as
    the server's side, so with it the load generator, not the server, set the figure."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (f"Host: 127.0.0.1:{port}\r\nX-API-Key: {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\n".encode() + self.head
                + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        match = _LENGTH.search(head)
        body = await self.reader.readexactly(int(match[1])) if match else b""
        return int(head[9:12]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def _run(port: int, token: str, seconds: float, clients: int) -> dict[str, Any]:
    opened: list[Client] = []

    def client() -> Client:
        opened.append(Client(port, token))
        return opened[-1]

    try:
        return await _measure(client, seconds, clients)
    finally:
        for each in opened:
            await each.close()


async def _measure(new_client: Any, seconds: float, clients: int) -> dict[str, Any]:
    from orjson import dumps  # the script runs in the project's virtualenv

    now = int(time.time())
    probe_client = new_client()
    probe = dumps({"points": [{"metric": "bench.probe", "type": "counter", "value": 1,
                               "timestamp": now}]})
    status, text = await probe_client.post(probe_client.request("/api/metrics/batch", probe))
    if status != 200:
        reason = f"POST /api/metrics/batch answered {status}: {text[:120]!r}"
        log(f"HTTP skipped: {reason}")
        return {"skipped": reason}

    def fleet_body(client: int, ts: int) -> bytes:
        # An instrumented service's flush: 250 metrics shared by every client (the
        # same code on every host), 4 samples each in the current second, half
        # counters, half values (timings).
        return dumps({"points": [
            {"metric": f"bench.http.m{i % 250:03d}",
             "type": "counter" if i % 250 < 125 else "value",
             "value": 1 if i % 250 < 125 else (i * 7 + client) % 50 + 0.5,
             "timestamp": ts} for i in range(1000)]})

    def distinct_body(client: int, ts: int) -> bytes:
        # The worst case: every point its own metric-second, nothing to merge (200
        # names of this client x 5 seconds), so every point is a row to write.
        return dumps({"points": [
            {"metric": f"bench.http.{client}.{i % 200}", "type": "counter",
             "value": 1, "timestamp": ts - (i // 200)} for i in range(1000)]})

    async def batches(make: Any, number: int, stop: float, latencies: list[float]) -> int:
        conn = new_client()
        points = 0
        ts, request = 0, b""
        while time.monotonic() < stop:
            if int(time.time()) != ts:  # one body per second: the client stays cheap
                ts = int(time.time())
                request = conn.request("/api/metrics/batch", make(number, ts))
            t0 = time.perf_counter()
            status, _ = await conn.post(request)
            if status == 200:
                points += 1000
            latencies.append((time.perf_counter() - t0) * 1e3)
        return points

    out: dict[str, Any] = {}
    for label, make in (("batch", fleet_body), ("batch_distinct", distinct_body)):
        log(f"HTTP {label}: {clients} clients x 1,000-point batches")
        # Warm-up, not measured: the first batches create the metrics (one-time work).
        await asyncio.gather(*(batches(make, c, time.monotonic() + 1, [])
                               for c in range(clients)))
        latencies: list[float] = []
        t0, c0 = time.monotonic(), time.process_time()
        done = await asyncio.gather(*(batches(make, c, t0 + seconds, latencies)
                                      for c in range(clients)))
        elapsed = time.monotonic() - t0
        out[label] = {"points_per_s": sum(done) / elapsed, "clients": clients,
                      "client_cpu": (time.process_time() - c0) / elapsed, **_pcts(latencies)}
        log(f"  {out[label]['points_per_s']:,.0f} points/s "
            f"(load generator busy {out[label]['client_cpu']:.0%} of its core)")

    body = dumps({"metric": "bench.single", "value": 1})

    async def single(stop: float, latencies: list[float], interval: float = 0.0) -> int:
        conn = new_client()
        request = conn.request("/api/metrics/counter", body)
        ok = 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            t0 = time.perf_counter()
            status, _ = await conn.post(request)
            ok += status == 200
            latencies.append((time.perf_counter() - t0) * 1e3)
        return ok

    log("HTTP single counter POSTs: 32 clients, back to back")
    latencies = []
    t0, c0 = time.monotonic(), time.process_time()
    done = await asyncio.gather(*(single(t0 + seconds, latencies) for _ in range(32)))
    elapsed = time.monotonic() - t0
    rate = sum(done) / elapsed
    result = {"req_per_s": rate, "client_cpu": (time.process_time() - c0) / elapsed,
              **_pcts(latencies)}
    log(f"  {rate:,.0f} req/s (load generator busy {result['client_cpu']:.0%} of its core)")
    log("HTTP single counter POSTs at half that rate")
    latencies = []
    t0 = time.monotonic()
    done = await asyncio.gather(*(single(t0 + seconds, latencies, 32 / (rate / 2))
                                  for _ in range(32)))
    half = {"req_per_s": sum(done) / (time.monotonic() - t0), **_pcts(latencies)}
    return {**out, "single": result, "half": half}


def _pcts(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {"p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95),
            "p99": pct(latencies, 0.99)}
