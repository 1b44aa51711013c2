"""A batch the database refuses for good, in the middle of a steady stream, through the
real ``glowing-fiesta collector`` process on SQLite and MariaDB.

The database itself refuses it (a trigger that rejects a marked value: as real as a
1690 overflow, and unlike input, no parser fix can stop it). Before the durable writer,
such a batch was retried forever and every later batch queued behind it, in memory and
the spool, across restarts, while /healthz said "ok". Now: every good line is stored,
exactly once; the refused row is in the quarantine; /healthz says "degraded" until an
operator replays it (after fixing the cause) or discards it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.daemon import DaemonProcess, run_cli
from tests.http_support import scrape, value
from tests.mysqldirect import fetch_all
from tests.poison import POISON, accept_poison, refuse_poison

pytestmark = pytest.mark.slow

Totals = dict[str, tuple[float, float]]  # name -> (SUM(cnt), SUM(sum))


def db_totals(url: str) -> Totals:
    query = ("SELECT m.name, SUM(p.cnt), SUM(p.`sum`) FROM points_1s p "
             "JOIN metrics m ON m.id = p.metric_id GROUP BY m.name")
    rows = fetch_all(url, query)
    return {name: (float(cnt), float(total)) for name, cnt, total in rows}


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


async def health(admin: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(admin + "/healthz") as r:
        assert r.status == 200
        body: dict[str, object] = await r.json()
        return body


async def test_a_refused_batch_mid_stream_is_set_aside_and_every_good_line_stored_once(
    database_url: str, tmp_path: Path, udp: socket.socket
) -> None:
    state = tmp_path / "state"
    migrate = await run_cli("db", "migrate", "--database-url", database_url)
    assert migrate[0] == 0, migrate
    refuse_poison(database_url)
    daemon = await DaemonProcess.start(
        "collector", "--database-url", database_url, "--state-dir", str(state),
        "--udp-port", "0", "--tcp-port", "0", "--flush-interval", "0.2",
        "--admin-port", "0")
    try:
        admin_line = daemon.log[await daemon.wait_for_log(r"admin endpoints .* on ")]
        admin = "http://{}:{}".format(*re.findall(r" on ([\d.]+):(\d+)", admin_line)[0])
        expected: dict[str, list[float]] = {}
        for round_no in range(30):  # ~3 s of steady traffic, poison in the middle
            lines = []
            for i in range(50):
                name = f"steady.m{i % 10}"
                lines.append(f"{name}:{i + 1}|c")
                got = expected.setdefault(name, [0.0, 0.0])
                got[0] += 1
                got[1] += i + 1
            if round_no in (10, 20):  # the database refuses this one row
                lines.insert(25, f"poison.r{round_no}:{POISON:g}|c")
            udp.sendto("\n".join(lines).encode(), daemon.udp)
            await asyncio.sleep(0.1)
        want = {name: (cnt, total) for name, (cnt, total) in expected.items()}
        deadline = time.monotonic() + 20
        while (got := await asyncio.to_thread(db_totals, database_url)) != want:
            assert time.monotonic() < deadline, f"never stored exactly: {got} != {want}"
            await asyncio.sleep(0.2)
        body = await health(admin)
        assert body["status"] == "degraded", body
        assert body["quarantine_batches"] == 2
        figures = await scrape(admin)
        assert value(figures, "gf_collector_rows_quarantined_total") == 2
        assert value(figures, "gf_collector_pending_batches") == 0  # nothing stuck
        # new good data keeps flowing, within 2 s
        udp.sendto(b"after.poison:5|c", daemon.udp)
        deadline = time.monotonic() + 2
        while "after.poison" not in (got := await asyncio.to_thread(db_totals, database_url)):
            assert time.monotonic() < deadline, "new data not stored within 2 s"
            await asyncio.sleep(0.05)

        # The operator fixes the cause and replays: stored once; health ok again.
        accept_poison(database_url)
        status, out, err = await run_cli("quarantine", "replay", "--all", "--database-url",
                                         database_url, "--state-dir", str(state))
        assert status == 0, err
        assert out.count("1 row(s) written") == 2
        assert (await health(admin))["status"] == "ok"
    finally:
        assert await daemon.stop() == 0, daemon.log
    got = db_totals(database_url)
    assert got["poison.r10"] == got["poison.r20"] == (1.0, POISON)
    assert {k: v for k, v in got.items() if k.startswith("steady.")} == want
    logs = "\n".join(daemon.log)
    assert logs.count("set aside in") == 2  # logged once per refused row, not per retry
