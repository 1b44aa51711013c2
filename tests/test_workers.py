"""``collector --workers N``: the installed CLI with N processes on one port stores exactly
the totals one process stores, on SQLite and on MariaDB.

The load comes from many source ports (UDP sockets and TCP connections), so the kernel
spreads it over the workers; every line is |T-stamped, so the totals do not depend on
arrival time. Values are integers and rates powers of two: sums are exact in any order.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import time
from pathlib import Path

from store import open_store
from tests.daemon import DaemonProcess
from tests.linegen import Totals, stored_totals
from tests.test_rollups import sql


def make_lines(seed: int, count: int, base: int) -> tuple[list[bytes], Totals]:
    rng = random.Random(seed)
    lines: list[bytes] = []
    totals: Totals = {}
    for _ in range(count):
        i = rng.randrange(40)
        name = f"w.{'c' if i % 2 else 'v'}.{i}"
        ts = base + rng.randrange(20)
        value = rng.randrange(-5, 100)
        rate = rng.choice([1.0, 0.5, 0.25])
        kind = "c" if i % 2 else "ms"
        suffix = "" if rate == 1.0 else f"|@{rate}"
        lines.append(f"{name}:{value}|{kind}{suffix}|T{ts}".encode())
        weight = 1 / rate
        bucket = totals.setdefault((name, ts), [0.0, 0.0, value, value])
        bucket[0] += weight
        bucket[1] += value * weight
        bucket[2] = min(bucket[2], value)
        bucket[3] = max(bucket[3], value)
    return lines, totals


async def send(udp_port: int, tcp_port: int, lines: list[bytes]) -> None:
    udp_lines, tcp_lines = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for n, start in enumerate(range(0, len(udp_lines), 40)):
            sock = sockets[n % len(sockets)]  # many source ports
            sock.sendto(b"\n".join(udp_lines[start : start + 40]), ("127.0.0.1", udp_port))
            if n % 50 == 49:
                await asyncio.sleep(0.001)
    finally:
        for sock in sockets:
            sock.close()

    async def stream(chunk: list[bytes]) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer.write(b"\n".join(chunk) + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(stream(tcp_lines[i::8]) for i in range(8)))


async def run_collector(
    database_url: str, tmp: Path, workers: int, lines: list[bytes]
) -> list[str]:
    """Start the CLI, send, stop it with SIGTERM: it must exit 0. Returns its log."""
    state = tmp / f"state-{workers}"
    daemon = await DaemonProcess.start(
        "collector", "--workers", str(workers), "--udp-port", "0", "--tcp-port", "0",
        "--database-url", database_url, "--state-dir", str(state), "--flush-interval", "0.2",
        cwd=tmp,
    )
    try:
        await send(daemon.ports["UDP"], daemon.ports["TCP"], lines)
        await asyncio.sleep(0.5)  # let the flushes of several intervals happen
        status = await daemon.stop(signal.SIGTERM)
    except BaseException:
        await daemon.kill()
        raise
    assert status == 0, "".join(daemon.log)
    if workers > 1:
        assert sum(" ready" in line and "worker " in line for line in daemon.log) == workers
    return daemon.log


async def stored(database_url: str, names: set[str], start: int, end: int) -> Totals:
    store = open_store(database_url)
    try:
        return await stored_totals(store, names, start, end)
    finally:
        await store.close()


def writers(database_url: str) -> int:
    """Distinct writer ids in the flush records: one per process that flushed."""
    with sql(database_url) as cursor:
        cursor.execute("SELECT COUNT(DISTINCT writer_id) FROM flushes")
        return int(cursor.fetchone()[0])


async def test_two_workers_store_exactly_what_one_stores(
    database_url: str, tmp_path: Path
) -> None:
    base = int(time.time()) - 60
    lines, totals = make_lines(1, 20_000, base)
    names = {name for name, _ts in totals}
    one_url = database_url
    await run_collector(one_url, tmp_path, 1, lines)
    one = await stored(one_url, names, base, base + 60)
    assert one == totals
    assert writers(one_url) == 1

    # The same load into a second, empty database, through two workers.
    if database_url.startswith("sqlite"):
        two_url = f"sqlite:///{tmp_path / 'two.db'}"
    else:
        two_url = database_url + "_two"
        with sql(database_url) as cursor:
            cursor.execute(f"CREATE DATABASE {two_url.rsplit('/', 1)[1]}")
    try:
        log = await run_collector(two_url, tmp_path, 2, lines)
        two = await stored(two_url, names, base, base + 60)
        assert two == one, "".join(log)
        assert writers(two_url) == 2  # both workers got load and flushed
    finally:
        if not database_url.startswith("sqlite"):
            with sql(database_url) as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {two_url.rsplit('/', 1)[1]}")


async def test_serve_workers_share_the_http_port(sqlite_url: str, tmp_path: Path) -> None:
    import aiohttp

    daemon = await DaemonProcess.start(
        "serve", "--workers", "2", "--http-port", "0", "--database-url", sqlite_url,
        "--state-dir", str(tmp_path / "state"), cwd=tmp_path,
    )
    try:
        port = daemon.ports["HTTP"]
        async with aiohttp.ClientSession() as session:
            for _ in range(20):  # new connections: the kernel picks a worker for each
                async with session.get(f"http://127.0.0.1:{port}/healthz",
                                       headers={"Connection": "close"}) as response:
                    assert response.status == 200
        status = await daemon.stop(signal.SIGTERM)
    except BaseException:
        await daemon.kill()
        raise
    assert status == 0, "".join(daemon.log)
    assert sum(" ready" in line and "worker " in line for line in daemon.log) == 2
