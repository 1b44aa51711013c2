"""The installed ``glowing-fiesta`` command as a real subprocess."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import click

from glowing_fiesta import __version__
from glowing_fiesta.cli import build_config, main
from store import Batch, Store, open_store
from tests.daemon import DaemonProcess, run_cli
from tests.linegen import make_load


async def send_tcp(port: int, lines: list[bytes]) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\n".join(lines) + b"\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def totals(store: Store, names: set[str], start: int, end: int) -> dict:
    out = {}
    for name in sorted(names):
        info = await store.get_metric(name)
        assert info is not None, name
        for row in await store.read_buckets(info.id, start, end, 1):
            out[(name, row.ts)] = [row.cnt, row.sum, row.mn, row.mx]
    return out


async def test_version_and_help() -> None:
    status, out, _ = await run_cli("--version")
    assert status == 0 and __version__ in out
    status, out, _ = await run_cli("run", "--help")
    assert status == 0 and "GF_DATABASE_URL" in out and "--flush-interval" in out


async def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    status, _, err = await run_cli("run", "--database-url", "postgres://x/y", cwd=tmp_path)
    assert status == 2 and "sqlite:// or mysql://" in err
    status, _, err = await run_cli("serve", "--host", "0.0.0.0", cwd=tmp_path)
    assert status == 2 and "plain HTTP" in err


async def test_two_collector_processes_give_the_totals_of_one(mysql_url: str) -> None:
    """Two collectors write the same metric-seconds into one MariaDB concurrently."""
    status, out, _ = await run_cli("db", "migrate", "--database-url", mysql_url)
    assert status == 0 and "schema version" in out
    base = int(time.time()) - 60
    load = make_load(40_000, base, bad_every=10**9, seed=5)  # good lines only
    args = ("collector", "--database-url", mysql_url, "--udp-port", "0", "--tcp-port", "0",
            "--flush-interval", "0.1")
    first, second = await asyncio.gather(DaemonProcess.start(*args), DaemonProcess.start(*args))
    try:
        # Eight concurrent streams, four into each process, over the same metric-seconds.
        ports = [first.ports["TCP"], second.ports["TCP"]]
        await asyncio.gather(
            *(send_tcp(ports[i % 2], load.lines[i::8]) for i in range(8))
        )
    finally:
        statuses = await asyncio.gather(first.stop(), second.stop())
    assert statuses == [0, 0], first.log + second.log
    store = open_store(mysql_url)
    try:
        names = {name for name, _ in load.totals}
        assert await totals(store, names, base, base + 60) == load.totals
    finally:
        await store.close()


async def test_run_stores_a_netcat_style_line_and_exits_cleanly(tmp_path: Path) -> None:
    """The README's quick start: `run` on SQLite, one UDP line, stored; SIGINT exits 0."""
    daemon = await DaemonProcess.start(
        "run", "--udp-port", "0", "--tcp-port", "0", "--http-port", "0", cwd=tmp_path
    )
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", daemon.ports["UDP"])
        )
        transport.sendto(b"page.views:1|c\n")
        transport.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.ports["HTTP"])
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        response = await reader.read()
        writer.close()
        assert b"200 OK" in response.split(b"\r\n")[0]
    finally:
        status = await daemon.stop(signal.SIGINT)
    assert status == 0, daemon.log
    store = open_store(f"sqlite:///{tmp_path / 'var' / 'glowing-fiesta.db'}")
    try:
        info = await store.get_metric("page.views")
        assert info is not None and info.kind == "counter"
        now = int(time.time())
        rows = await store.read_buckets(info.id, now - 600, now + 60, 3600)
        assert sum(row.sum for row in rows) == 1
    finally:
        await store.close()


async def test_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    status, token, err = await run_cli("keys", "create", "ci", "--scopes", "write",
                                       "--rate-limit", "50/s", "--database-url", url)
    assert status == 0, err
    token = token.strip()
    assert token.startswith("gf_") and len(token) == 35
    status, listing, _ = await run_cli("keys", "list", "--database-url", url)
    assert status == 0 and "ci" in listing and token[:8] in listing
    assert token not in listing  # never shown again
    status, out, _ = await run_cli("keys", "revoke", "ci", "--database-url", url)
    assert status == 0 and "revoked 1" in out
    status, _, err = await run_cli("keys", "revoke", "ci", "--database-url", url)
    assert status == 1 and "no active key" in err
    status, _, err = await run_cli("keys", "create", "x", "--scopes", "admin",
                                   "--database-url", url)
    assert status == 2 and "unknown scope" in err


async def test_sigterm_keeps_lines_of_connections_not_yet_accepted(tmp_path: Path) -> None:
    """Clients that connected and sent while the daemon was not scheduled (SIGSTOP, the
    stand-in for a busy loop) are still in the listen queue at SIGTERM: their lines are
    stored, not reset with the listener."""
    daemon = await DaemonProcess.start(
        "collector", "--udp-port", "0", "--tcp-port", "0", "--flush-interval", "0.2",
        cwd=tmp_path,
    )
    port = daemon.ports["TCP"]
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        writers = []
        for i in range(20):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"queued.c{i % 4}:1|c\n".encode() * 50)
            await writer.drain()
            writers.append(writer)
        daemon.process.send_signal(signal.SIGTERM)
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    status = await daemon.stop()
    for writer in writers:
        writer.close()
    assert status == 0, daemon.log
    store = open_store(f"sqlite:///{tmp_path / 'var' / 'glowing-fiesta.db'}")
    try:
        now = int(time.time())
        total = 0.0
        for i in range(4):
            info = await store.get_metric(f"queued.c{i}")
            assert info is not None
            rows = await store.read_buckets(info.id, now - 600, now + 60, 3600)
            total += sum(row.sum for row in rows)
        assert total == 1000
    finally:
        await store.close()


async def test_retention_run_expires_every_level(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(url)
    await store.migrate()
    now = int(time.time())
    old, young = now - 10 * 86400, now - 3600
    await store.write_batch(Batch("w", 1, [
        ("ret.c", "counter", old, 1.0, 5.0, 5.0, 5.0),
        ("ret.c", "counter", young, 1.0, 7.0, 7.0, 7.0),
    ]))
    try:
        status, out, err = await run_cli("retention", "run", "--database-url", url,
                                         "--retention-raw", "7d", "--retention-1m", "9d",
                                         "--chunk", "1")
        assert status == 0, err
        assert "points_1s: deleted 1 rows" in out and "points_1m: deleted 1 rows" in out
        assert "points_1h: deleted 0 rows" in out
        info = await store.get_metric("ret.c")
        assert info is not None
        raw = await store.read_buckets(info.id, now - 30 * 86400, now, 1)
        assert [row.sum for row in raw] == [7.0]
        hourly = await store.read_buckets(info.id, now - 30 * 86400 - now % 3600, now, 3600)
        assert sum(row.sum for row in hourly) == 12.0  # the hour level keeps both
    finally:
        await store.close()


def test_serve_takes_the_spool_budget_of_its_own_spool() -> None:
    """`serve` spools acknowledged HTTP points through an outage: its spool has the
    same budget option as the collector's (run_services opens it with this value)."""
    for command in ("serve", "run", "collector"):
        cmd = main.get_command(click.Context(main), command)
        assert cmd is not None
        ctx = cmd.make_context(command, ["--spool-max-bytes", "12345"])
        assert build_config(ctx.params).collector.spool_max_bytes == 12345, command
