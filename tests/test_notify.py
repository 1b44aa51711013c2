"""sd_notify: the Notifier against a socket the test owns, then the real daemon under a
NOTIFY_SOCKET of ours, as systemd would run it (Type=notify, WatchdogSec=)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from glowing_fiesta.notify import Notifier

CLI = Path(sys.executable).parent / "glowing-fiesta"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd, and its NOTIFY_SOCKET address."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"glowing-fiesta-test-{secrets.token_hex(8)}"
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("ready")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_messages_reach_a_socket_path(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    try:
        assert notifier.ready("ready: UDP 127.0.0.1:8125")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ready: UDP 127.0.0.1:8125"
        assert notifier.status("flushing")
        assert sock.recv(4096) == b"STATUS=flushing"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping("stopping: final flush")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping: final flush"
    finally:
        notifier.close()


def test_abstract_namespace_address(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, address = abstract_listener
    notifier = Notifier(address)
    try:
        assert notifier.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
    finally:
        notifier.close()


def test_watchdog_settings_come_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env).watchdog_interval == 15.0
    mine = Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 15.0
    # Meant for another process (we inherited it): no pings from us.
    other = Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "junk"}).watchdog_interval is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000"}).watchdog_interval is None


async def test_run_watchdog_pings_from_the_loop_until_cancelled(
    listener: tuple[socket.socket, str],
) -> None:
    sock, address = listener
    sock.setblocking(False)
    notifier = Notifier(address, watchdog_usec=20_000)  # a ping every 10 ms
    task = asyncio.create_task(notifier.run_watchdog())
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):
            assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 10) == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_run_watchdog_returns_when_no_watchdog_is_asked_for() -> None:
    await asyncio.wait_for(Notifier("@x").run_watchdog(), 5)


def test_a_missing_supervisor_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="glowing_fiesta.notify"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()
    assert not Notifier("relative/path").notify("READY=1")


# -- the real daemon ------------------------------------------------------------


def receive(sock: socket.socket, want: str, seen: list[str], deadline: float) -> str:
    """Messages until one with the line ``want``; all of them are kept in ``seen``."""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no {want} within the time; got {seen}") from None
        seen.append(message)
        if want in message.splitlines():
            return message


def test_daemon_reports_ready_watchdog_and_stopping(
    abstract_listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, address = abstract_listener
    database = tmp_path / "metrics.db"
    env = {name: value for name, value in os.environ.items() if not name.startswith("GF_")}
    env.update(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CLI), "run", "--database-url", f"sqlite:///{database}",
             "--state-dir", str(tmp_path / "state"), "--udp-port", "0", "--tcp-port", "0",
             "--http-port", "0", "--admin-port", "0", "--log-format", "json",
             "--self-metrics", "--flush-interval", "0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        ready = receive(sock, "READY=1", seen, deadline)
        assert seen[0] == "STATUS=starting: opening the database"
        # READY=1 means bound and answering: the addresses it reports take traffic now.
        status = next(line for line in ready.splitlines() if line.startswith("STATUS="))
        where = dict(part.split(" ") for part in status.removeprefix("STATUS=ready: ")
                     .split(", "))
        assert set(where) == {"UDP", "TCP", "HTTP", "admin"}
        for service in ("HTTP", "admin"):
            with urllib.request.urlopen(f"http://{where[service]}/healthz", timeout=10) as r:
                assert json.loads(r.read())["status"] == "ok"
        host, port = where["UDP"].rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"notify.test:5|c", (host, int(port)))

        for _ in range(3):
            receive(sock, "WATCHDOG=1", seen, deadline)

        process.send_signal(signal.SIGTERM)
        stopping = receive(sock, "STOPPING=1", seen, deadline)
        assert "STATUS=stopping: draining sockets, final flush" in stopping.splitlines()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    with sqlite3.connect(database) as db:
        # The datagram sent right after READY=1 was stored by SIGTERM at the latest.
        row = db.execute(
            "SELECT SUM(p.sum) FROM points_1s p JOIN metrics m ON m.id = p.metric_id "
            "WHERE m.name = 'notify.test'"
        ).fetchone()
        # --self-metrics: the collector's own figures were stored as metrics too.
        own = {name for (name,) in db.execute("SELECT name FROM metrics")}
    db.close()
    assert row == (5.0,), log
    assert "glowing_fiesta.collector.pending_buckets" in own, log


def test_collector_with_its_database_down_is_ready_and_says_so(
    abstract_listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """Waiting for the database would lose lines: the collector binds, spools, and
    reports ready with a STATUS= that says the database is unreachable."""
    sock, address = abstract_listener
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {name: value for name, value in os.environ.items() if not name.startswith("GF_")}
    env.update(NOTIFY_SOCKET=address)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CLI), "collector", "--database-url", f"mysql://gf@127.0.0.1:{port}/gf",
             "--state-dir", str(tmp_path), "--udp-port", "0", "--tcp-port", "0"],
            env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        ready = receive(sock, "READY=1", seen, deadline)
        assert "STATUS=ready, database unreachable (spooling): UDP 127.0.0.1:" in ready
        process.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1", seen, deadline)
        assert process.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
