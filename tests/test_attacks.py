"""The three holes a hostile sender found (issue 9), against the real ``glowing-fiesta
run`` on SQLite and MariaDB. After each: new good data is stored within 2 s, and
/healthz tells the truth.

1. ``x:0|c|@1e-320``: 1/rate was infinite, 0*inf NaN, and the flush failed forever.
   Now the rate is below the documented floor (1e-6): dropped as ``bad_rate``.
   ``a:1e308|v`` twice in a second summed to infinity: the second is dropped as
   ``overflow``; across seconds of one minute (the rollup) and across two writers (the
   database's upsert) the bucket keeps its finite sum.
2. ``gf_<32 base62>web.hits:1|c`` (the dot after the token forgotten) was stored as a
   metric every read key could list: now ``bad_key``, and no stored name holds a token.
3. The flood of junk names and unknown tokens: tests/test_bounded_input.py.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.daemon import DaemonProcess, create_key
from tests.http_support import scrape, value
from tests.mysqldirect import fetch_all

pytestmark = pytest.mark.slow

TOKEN = re.compile(r"gf_[0-9A-Za-z]{32}")


def stored_rows(url: str, table: str = "points_1s") -> dict[str, list[tuple[float, ...]]]:
    query = (f"SELECT m.name, p.ts, p.cnt, p.`sum`, p.mn, p.mx FROM {table} p "
             "JOIN metrics m ON m.id = p.metric_id ORDER BY m.name, p.ts")
    rows = fetch_all(url, query)
    out: dict[str, list[tuple[float, ...]]] = {}
    for name, *row in rows:
        out.setdefault(name, []).append(tuple(float(x) for x in row))
    return out


class Service:
    def __init__(self, daemon: DaemonProcess, admin: str, url: str, key: str) -> None:
        self.daemon = daemon
        self.admin = admin
        self.url = url
        self.key = key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, *lines: str) -> None:
        self.sock.sendto("\n".join(lines).encode(), self.daemon.udp)

    async def health(self) -> dict[str, object]:
        async with aiohttp.ClientSession() as session:
            for base in (self.daemon.base_url, self.admin):
                async with session.get(base + "/healthz") as response:
                    assert response.status == 200
                    body: dict[str, object] = await response.json()
                    assert body["status"] == "ok", body
        return body

    async def stored_within(self, name: str, seconds: float = 2.0) -> None:
        """``name`` reaches the database within ``seconds`` of being sent."""
        self.send(f"{name}:1|c")
        deadline = time.monotonic() + seconds
        while name not in await asyncio.to_thread(stored_rows, self.url):
            assert time.monotonic() < deadline, f"{name} not stored within {seconds} s"
            await asyncio.sleep(0.05)

    async def drops(self, reason: str) -> float:
        return value(await scrape(self.admin), "gf_collector_lines_dropped_total",
                     reason=reason)


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    key = await create_key(database_url, "attacks")
    daemon = await DaemonProcess.start(
        "run", "--database-url", database_url, "--state-dir", str(tmp_path / "state"),
        "--udp-port", "0", "--tcp-port", "0", "--http-port", "0", "--admin-port", "0",
        "--flush-interval", "0.2")
    admin_line = daemon.log[await daemon.wait_for_log(r"admin endpoints .* on ")]
    admin = "http://{}:{}".format(*re.findall(r" on ([\d.]+):(\d+)", admin_line)[0])
    running = Service(daemon, admin, database_url, key)
    try:
        yield running
    finally:
        running.sock.close()
        assert await daemon.stop() == 0, daemon.log


def all_finite(url: str) -> bool:
    return all(math.isfinite(x) for table in ("points_1s", "points_1m", "points_1h")
               for rows in stored_rows(url, table).values() for row in rows for x in row)


async def test_a_subnormal_rate_is_dropped_and_flushing_goes_on(service: Service) -> None:
    service.send("x:0|c|@1e-320", "y:1|c|@1e-7", "ok.rate:1|c|@1e-6")
    await service.stored_within("after.rate")
    assert await service.drops("bad_rate") == 2
    rows = await asyncio.to_thread(stored_rows, service.url)
    assert "x" not in rows and "y" not in rows
    assert rows["ok.rate"][0][1:3] == (1e6, 1e6)  # the floor itself is accepted
    await service.health()
    assert all_finite(service.url)


async def test_huge_values_never_sum_to_infinity(service: Service) -> None:
    now = int(time.time())
    minute = now - now % 60 - 120  # a whole minute in the past, within retention
    service.send("a:1e308|v", "a:1e308|v")  # one second, one bucket
    service.send(f"b:1e308|v|T{minute}", f"b:1e308|v|T{minute + 1}")  # one minute's rollup
    await service.stored_within("after.huge")
    assert await service.drops("overflow") == 1
    # Two writers on one metric-second: HTTP ingest and the collector, merged by the
    # database's upsert, which keeps the finite sum rather than failing forever.
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            service.daemon.base_url + "/api/metrics/value", headers={"X-API-Key": service.key},
            json={"metric": "c", "value": 1e308, "timestamp": minute})
        assert response.status == 200, await response.text()
    service.send(f"c:1e308|v|T{minute}")
    await service.stored_within("after.writers")
    rows = await asyncio.to_thread(stored_rows, service.url)
    assert rows["a"][0][1:3] == (1.0, 1e308)
    assert [row[1:3] for row in rows["b"]] == [(1.0, 1e308), (1.0, 1e308)]
    assert rows["c"][0][2] == 1e308
    minutes = await asyncio.to_thread(stored_rows, service.url, "points_1m")
    assert minutes["b"][0][2] == 1e308  # the second second was not merged into it
    assert all_finite(service.url)
    await service.health()


async def test_a_token_typo_never_becomes_a_metric_name(service: Service) -> None:
    token = service.key
    service.send(f"{token}web.hits:1|c", f"{token}.web.hits:1|c")
    await service.stored_within("after.typo")
    assert await service.drops("bad_key") == 1
    async with aiohttp.ClientSession() as session:
        response = await session.get(service.daemon.base_url + "/api/metrics",
                                     headers={"X-API-Key": token})
        assert response.status == 200
        names = [m["name"] for m in (await response.json())["metrics"]]
    assert "web.hits" in names  # the good line, its key stripped
    assert not any(TOKEN.search(name) for name in names)
    assert not any(token in line for line in service.daemon.log)
    await service.health()
