"""The installed ``glowing-fiesta`` command as a real subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from alerts.config import AlertConfig
from collector.config import AdminConfig, CollectorConfig
from glowing_fiesta import __version__
from glowing_fiesta.cli import (
    NewKey,
    QuarantinePick,
    build_config,
    cli_spec,
    field_default,
    main,
)
from glowing_fiesta.config import Config
from protocol.units import format_duration, parse_duration
from query.config import HttpConfig
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
    status, _, err = await run_cli("keys", "create", "x", "--scopes", "root",
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


def commands() -> dict[str, click.Command]:
    """Every leaf command by its path ("run", "keys create", ...)."""
    out: dict[str, click.Command] = {}

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out[path] = command

    walk(main, "")
    return out


def test_every_option_has_its_gf_variable() -> None:
    for path, command in commands().items():
        for param in command.params:
            if isinstance(param, click.Option):
                flag = param.opts[0].lstrip("-").replace("-", "_").upper()
                assert param.envvar == f"GF_{flag}", (path, param.opts)
                assert param.show_envvar, (path, param.opts)


def test_option_defaults_are_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each default is written once, on its dataclass field: every command given no
    option builds exactly Config(), and each option's default, as click parses it, is
    its field's default."""
    for name in list(os.environ):
        if name.startswith("GF_") and not name.startswith("GF_TEST_"):
            monkeypatch.delenv(name)
    specs = {}
    for cls in (Config, CollectorConfig, HttpConfig, AdminConfig, AlertConfig, NewKey,
                QuarantinePick):
        for f in dataclasses.fields(cls):
            spec = cli_spec(f)
            if spec is not None:
                assert spec.name not in specs, f"two fields are {spec.flag}"
                specs[spec.name] = (spec, field_default(f))
    for path, command in commands().items():
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        ctx = command.make_context(path, ["x"] * len(arguments))
        for param in command.params:
            if not isinstance(param, click.Option):
                ctx.params.pop(str(param.name))
                continue
            spec, default = specs[param.name]
            if spec.default_from is None:
                assert param.type_cast_value(ctx, param.default) == default, param.opts
            else:
                assert param.default is None, param.opts
        for own in ("scopes", "rate_limit", "all"):  # not configuration
            ctx.params.pop(own, None)
        assert build_config(ctx.params) == Config(), path
    assert NewKey() == NewKey(scopes="write,read", rate_limit=None)


async def test_durations_show_as_written_and_new_variables_work(tmp_path: Path) -> None:
    status, out, _ = await run_cli("retention", "run", "--help")
    out = " ".join(out.split())  # --help wraps lines
    assert status == 0 and "default: 7d" in out and "default: 730d" in out
    assert "GF_CHUNK" in out
    status, out, _ = await run_cli("keys", "create", "--help")
    assert status == 0 and "GF_SCOPES" in out and "GF_RATE_LIMIT" in out
    cmd = main.get_command(click.Context(main), "retention")
    assert isinstance(cmd, click.Group)
    ctx = cmd.commands["run"].make_context("run", ["--chunk", "7", "--retention-1m", "2w"])
    config = build_config(ctx.params)
    assert config.collector.retention_chunk == 7 and config.collector.retention_1m == 14 * 86400


def test_scopes_and_rate_limit_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    created = CliRunner().invoke(main, ["keys", "create", "envkey", "--database-url", url],
                                 env={"GF_SCOPES": "read", "GF_RATE_LIMIT": "7/s"})
    assert created.exit_code == 0, created.output
    listing = CliRunner().invoke(main, ["keys", "list", "--database-url", url]).output
    row = next(line for line in listing.splitlines() if line.startswith("envkey"))
    assert row.split()[2:4] == ["read", "7/s"]


def test_admin_options_join_the_one_config() -> None:
    cmd = main.get_command(click.Context(main), "collector")
    assert cmd is not None
    ctx = cmd.make_context("collector", ["--admin-port", "0", "--self-metrics",
                                         "--admin-host", "127.0.0.2"])
    assert build_config(ctx.params).admin == AdminConfig("127.0.0.2", 0, True)
    ctx = cmd.make_context("collector", ["--admin-port", "0", "--workers", "2"])
    with pytest.raises(click.UsageError, match="--admin-port cannot be used with --workers"):
        build_config(ctx.params)


def test_durations_are_shown_as_people_write_them() -> None:
    for seconds, text in [(7 * 86400, "7d"), (730 * 86400, "730d"), (300.0, "5m"),
                          (7200, "2h"), (90, "90s"), (0, "0")]:
        assert format_duration(seconds) == text
        assert parse_duration(text) == seconds
