"""Fault injection for HTTP ingest: the real ``glowing-fiesta serve`` / ``run`` process,
real MariaDB behind a proxy a test cuts (tests/faultproxy.py), real HTTP clients.

The guarantee under test (DESIGN §4, §6): a 200 means the points are committed, or
fsync'd in the local spool while the database is down, and then they reach the
database exactly once, even across a SIGKILL; a 503 means they are nowhere.

Every request writes its own rows: client ``c``'s request ``k`` carries timestamp
``base - k``, so each (metric, second) row in points_1s belongs to exactly one request.
The test reads every row of its metrics straight from the server (not through the
proxy) and compares them with the rows of the requests answered 200: a lost
acknowledged request, a 503 request that got stored, or a request applied twice all
show up as a differing row. SUM(cnt) and SUM(sum) per metric are compared as well.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.daemon import CLI, DaemonProcess
from tests.faultproxy import FaultProxy
from tests.mysqldirect import connect

Rows = dict[tuple[str, int], tuple[float, float]]  # (metric, ts) -> (cnt, sum)


async def start_service(
    command: str, database_url: str, state_dir: Path, *options: str
) -> DaemonProcess:
    """``glowing-fiesta serve`` or ``run`` on ephemeral ports."""
    extra = ["--udp-port", "0", "--tcp-port", "0", "--flush-interval", "0.2"] \
        if command == "run" else []
    return await DaemonProcess.start(
        command, "--database-url", database_url, "--state-dir", str(state_dir),
        "--host", "127.0.0.1", "--http-port", "0", "--key-cache-ttl", "3600",
        "--log-level", "info", *extra, *options,
    )


async def create_key(database_url: str) -> str:
    """``glowing-fiesta keys create`` against the real server (it migrates too)."""
    process = await asyncio.create_subprocess_exec(
        CLI, "keys", "create", "fault-http", "--rate-limit", "1000000/s",
        "--database-url", database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().split()[0]


def db_rows(mysql_url: str, prefix: str) -> Rows:
    """Every points_1s row of the metrics under ``prefix``, straight from the server."""
    conn = connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT m.name, p.ts, p.cnt, p.`sum` FROM points_1s p "
                "JOIN metrics m ON m.id = p.metric_id WHERE m.name LIKE %s",
                (prefix + ".%",),
            )
            rows = cursor.fetchall()
    finally:
        conn.close()
    return {(name, int(ts)): (float(cnt), float(total)) for name, ts, cnt, total in rows}


def per_metric(rows: Rows) -> dict[str, tuple[float, float]]:
    """SUM(cnt), SUM(sum) per metric."""
    out: dict[str, tuple[float, float]] = {}
    for (name, _ts), (cnt, total) in rows.items():
        c, s = out.get(name, (0.0, 0.0))
        out[name] = (c + cnt, s + total)
    return out


class Clients:
    """``count`` clients, each posting one batch at a time (paced), every batch with
    rows of its own; what was answered 200 (``acked``) and 503 (``refused``)."""

    def __init__(self, prefix: str, token: str, count: int = 20, pace: float = 0.05) -> None:
        self.prefix = prefix
        self.token = token
        self.count = count
        self.pace = pace
        self.base = int(time.time()) - 5
        self.next_k = [0] * count
        self.acked: Rows = {}
        self.refused: Rows = {}
        self.statuses: dict[int, int] = {}
        self.acked_while = 0  # 200s answered while ``down`` was set
        self.down = False

    def request(self, client: int) -> tuple[dict[str, object], Rows]:
        k = self.next_k[client]
        self.next_k[client] += 1
        ts = self.base - k
        a, b = k % 7 + 1, k % 100
        counter, value = f"{self.prefix}.c{client}", f"{self.prefix}.v{client}"
        body = {"points": [
            {"metric": counter, "type": "counter", "value": a, "timestamp": ts},
            {"metric": counter, "type": "counter", "value": 2, "timestamp": ts},
            {"metric": value, "type": "value", "value": b, "timestamp": ts},
        ]}
        return body, {(counter, ts): (2.0, float(a + 2)), (value, ts): (1.0, float(b))}

    async def post(self, session: aiohttp.ClientSession, url: str, client: int) -> int:
        body, rows = self.request(client)
        async with session.post(f"{url}/api/metrics/batch", json=body,
                                headers={"X-API-Key": self.token}) as response:
            await response.read()
            status = response.status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.acked.update(rows)
            self.acked_while += self.down
        elif status == 503:
            self.refused.update(rows)
        else:
            raise AssertionError(f"unexpected status {status}")
        return status

    async def run(self, url: str, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(client: int) -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    await self.post(session, url, client)
                    await asyncio.sleep(max(0.0, self.pace - (time.monotonic() - started)))

            await asyncio.gather(*(one(c) for c in range(self.count)))


def assert_exact(mysql_url: str, clients: Clients) -> None:
    stored = db_rows(mysql_url, clients.prefix)
    lost = {key: row for key, row in clients.acked.items() if stored.get(key) != row}
    assert not lost, f"{len(lost)} acknowledged row(s) missing or wrong: {list(lost.items())[:5]}"
    leaked = [key for key in clients.refused if key in stored]
    assert not leaked, f"{len(leaked)} row(s) of 503 requests stored: {leaked[:5]}"
    assert stored == clients.acked, "rows stored that no request was answered 200 for"
    assert per_metric(stored) == per_metric(clients.acked)


# -- 1. the database unreachable for 10 s under steady HTTP ingest --------------------


@pytest.mark.slow
async def test_database_outage_10s_under_http_load(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """20 clients posting batches through a 10 s outage of the database: what was
    answered 200 during it is spooled, and everything answered 200 is stored once."""
    token = await create_key(mysql_url)
    state = tmp_path / "state"
    service = await start_service("serve", proxy.url(mysql_url), state)
    daemons.append(service)
    clients = Clients("hfo", token)
    stop = asyncio.Event()
    load = asyncio.create_task(clients.run(service.base_url, stop))
    try:
        await asyncio.sleep(2)  # steady state: every client's names known, writes direct
        assert clients.statuses == {200: len(clients.acked) // 2}, clients.statuses
        mark = len(service.log)
        proxy.cut()
        clients.down = True
        await service.wait_for_log(r"spooled \d+ batch", after=mark, timeout=10)
        await asyncio.sleep(10)
        clients.down = False
        proxy.restore()
        await service.wait_for_log(r"spool .* drained", after=mark, timeout=60)
        await asyncio.sleep(1)  # and ingest goes on after it
    finally:
        stop.set()
        await load
    assert await service.stop() == 0, service.transcript()
    assert_exact(mysql_url, clients)
    assert clients.acked_while > 100, clients.statuses  # acknowledged while down: spooled
    assert clients.statuses.get(200, 0) > 2000, clients.statuses
    assert proxy.resets >= 1
    assert not (state / "spool-http.sqlite").exists()  # drained and removed at exit


# -- 2. SIGKILL during an outage, restart while still down, then the database back ---


async def test_sigkill_during_outage_keeps_every_acknowledged_http_point(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """``run`` (collector and HTTP share one spool): points acknowledged during an
    outage are in the spool when the process is SIGKILLed; the restarted process (the
    database still down) takes the spool back and, once the database answers, drains
    it: every acknowledged point exactly once."""
    token = await create_key(mysql_url)
    state = tmp_path / "state"
    url = proxy.url(mysql_url)
    first = await start_service("run", url, state)
    daemons.append(first)
    clients = Clients("hfk", token, count=10)
    stop = asyncio.Event()
    load = asyncio.create_task(clients.run(first.base_url, stop))
    try:
        await asyncio.sleep(1.5)
        proxy.cut()
        clients.down = True
        await asyncio.sleep(3)
    finally:
        stop.set()
        await load
    assert clients.acked_while > 50, clients.statuses
    assert first.count_log("spooled") >= 1, first.transcript()
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert (state / "spool-collector.sqlite").exists()

    second = await start_service("run", url, state)
    daemons.append(second)
    assert second.count_log("unreachable .* starting anyway"), second.transcript()
    assert second.count_log(r"spool .* holds \d+ batch"), second.transcript()
    await asyncio.sleep(1)
    assert db_rows(mysql_url, "hfk") != clients.acked  # nothing replayed while down
    proxy.restore()
    await second.wait_for_log(r"spool .* drained", timeout=60)
    assert await second.stop() == 0, second.transcript()
    assert_exact(mysql_url, clients)
    assert not (state / "spool-collector.sqlite").exists()


# -- 3. the spool full during an outage: 503, and those points are nowhere ------------


async def test_full_spool_during_outage_refuses_and_records_nothing_refused(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A spool budget of 5 kB fills within the outage: later requests are answered 503
    (neither written nor spooled) and must be absent; the acknowledged ones all land."""
    token = await create_key(mysql_url)
    url = proxy.url(mysql_url)
    service = await start_service("run", url, tmp_path / "state", "--spool-max-bytes", "5000")
    daemons.append(service)
    clients = Clients("hff", token, count=10)
    stop = asyncio.Event()
    load = asyncio.create_task(clients.run(service.base_url, stop))
    try:
        await asyncio.sleep(1)
        proxy.cut()
        clients.down = True
        deadline = time.monotonic() + 20
        while clients.statuses.get(503, 0) < 10:  # the spool is full
            assert time.monotonic() < deadline, (clients.statuses, service.transcript())
            await asyncio.sleep(0.1)
        clients.down = False
        proxy.restore()
        await service.wait_for_log(r"spool .* drained", timeout=60)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await load
    assert await service.stop() == 0, service.transcript()
    assert_exact(mysql_url, clients)
    assert clients.acked_while > 10, clients.statuses
    assert service.count_log(r"spool: .*full"), service.transcript()


# -- 4. new metric names during an outage ----------------------------------------------


async def test_new_names_during_an_outage_are_spooled_not_refused(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """DESIGN §6 "ingest goes on": a name this process has never seen cannot have its
    kind checked while the database is down; it is spooled (200) and stored on replay."""
    token = await create_key(mysql_url)
    service = await start_service("serve", proxy.url(mysql_url), tmp_path / "state")
    daemons.append(service)
    headers = {"X-API-Key": token}
    ts = int(time.time()) - 5
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service.base_url}/api/metrics/counter", headers=headers,
                                json={"metric": "hfn.warmup", "timestamp": ts}) as response:
            assert response.status == 200  # the key is cached now
        proxy.cut()
        points = [{"metric": f"hfn.new{i}", "type": "counter", "value": i, "timestamp": ts}
                  for i in range(1, 6)]
        async with session.post(f"{service.base_url}/api/metrics/batch", headers=headers,
                                json={"points": points}) as response:
            assert response.status == 200, await response.text()
    proxy.restore()
    await service.wait_for_log(r"spool .* drained", timeout=60)
    assert await service.stop() == 0, service.transcript()
    rows = db_rows(mysql_url, "hfn")
    assert {name: total for (name, _ts), (_cnt, total) in rows.items()} == {
        "hfn.warmup": 1.0, **{f"hfn.new{i}": float(i) for i in range(1, 6)}
    }


async def test_a_stalled_database_delays_lookups_by_seconds_not_forever(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A database that accepts and then never answers (not one that refuses): a request
    whose key or metric names are not cached yet must not wait for it forever. A new
    name is spooled (200) and stored once the database answers again; a key never
    seen gets 503 in seconds."""
    token, unseen = await create_key(mysql_url), await create_key(mysql_url)
    service = await start_service("serve", proxy.url(mysql_url), tmp_path / "state")
    daemons.append(service)
    ts = int(time.time()) - 5
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service.base_url}/api/metrics/counter",
                                headers={"X-API-Key": token},
                                json={"metric": "stall.warmup", "timestamp": ts}) as response:
            assert response.status == 200  # the key is cached now
        proxy.stall()
        started = time.monotonic()
        async with session.post(
            f"{service.base_url}/api/metrics/counter", headers={"X-API-Key": token},
            json={"metric": "stall.new", "value": 3, "timestamp": ts},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            assert response.status == 200, await response.text()
        assert time.monotonic() - started < 10  # lookup timeout + write timeout, not 30
        started = time.monotonic()
        async with session.post(
            f"{service.base_url}/api/metrics/counter", headers={"X-API-Key": unseen},
            json={"metric": "stall.other"}, timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            assert response.status == 503, await response.text()
        assert time.monotonic() - started < 10
    proxy.restore()
    await service.wait_for_log(r"spool .* drained", timeout=60)
    assert await service.stop() == 0, service.transcript()
    rows = db_rows(mysql_url, "stall")
    assert {name: total for (name, _ts), (_cnt, total) in rows.items()} == {
        "stall.warmup": 1.0, "stall.new": 3.0}
