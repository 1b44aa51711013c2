"""Shared fixtures: real SQLite files, real MariaDB databases, real Redis.

MariaDB and Redis are found at GF_TEST_MYSQL_URL / GF_TEST_REDIS_URL. When a server is
unreachable its tests are skipped, unless GF_TEST_REQUIRE_SERVICES=1 (set by .ci/run),
which turns the skip into a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql
import pytest

from collector import aggregator, listeners
from store import Store, open_store
from tests.alert_support import Receiver
from tests.daemon import DaemonProcess
from tests.faultproxy import FaultProxy
from tests.mysqldirect import connect

MYSQL_URL = os.environ.get("GF_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("GF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1"


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} unavailable: {exc}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (GF_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _mysql_admin() -> Any:
    return connect(MYSQL_URL, database=False)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test, dropped afterwards."""
    try:
        admin = _mysql_admin()
    except pymysql.err.MySQLError as exc:
        _unavailable("MariaDB", exc)
        raise
    name = f"gf_test_{secrets.token_hex(6)}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(MYSQL_URL)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metrics.db'}"


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("mysql_url"))


async def _migrated(url: str) -> AsyncIterator[Store]:
    opened = open_store(url)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on each backend."""
    async for opened in _migrated(database_url):
        yield opened


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    """A migrated SQLite store (for tests about the collector or the spool, not the
    backend)."""
    async for opened in _migrated(sqlite_url):
        yield opened


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable("Redis", exc)
        raise
    finally:
        client.close()
    yield REDIS_URL


@pytest.fixture
async def daemons() -> AsyncIterator[list[DaemonProcess]]:
    """Processes a test starts are appended here and killed if the test left them up."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        await daemon.kill()
        # Shown by pytest for a failing test only: the daemon's side of the story.
        print(f"--- log of {daemon!r} (last 60 lines) ---")
        print("".join(daemon.log[-60:]))


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """A TCP proxy in front of MariaDB that a test can cut, stall or reset."""
    started = await FaultProxy().start()
    try:
        yield started
    finally:
        await started.close()


_BUILT_FEED = aggregator._feed_fast  # the extension's feed, or None: before any test patches it


@pytest.fixture(params=["c", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using this runs on the C accelerator and on the pure-Python path of
    the aggregator. Without the extension the C run is skipped, or fails in CI (where
    GF_TEST_REQUIRE_SERVICES=1: the C path must be tested)."""
    built = _BUILT_FEED
    if request.param == "c" and built is None:
        message = "collector._fastfeed is not built (optional C accelerator)"
        if os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setattr(aggregator, "_feed_fast", built if request.param == "c" else None)
    return str(request.param)


_BUILT_RECV = listeners.recv_datagrams  # the extension's recvmmsg reader, or None


@pytest.fixture(params=["recvmmsg", "protocol"])
def udp_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using this reads UDP with recvmmsg (listeners.UdpReader) and with
    asyncio's DatagramProtocol (listeners.UdpProtocol, the fallback). Without the
    extension the recvmmsg run is skipped, or fails in CI."""
    if request.param == "recvmmsg" and _BUILT_RECV is None:
        message = "collector._fastfeed.recv_datagrams is not built (optional C accelerator)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setattr(listeners, "recv_datagrams",
                        _BUILT_RECV if request.param == "recvmmsg" else None)
    return str(request.param)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real local webhook receiver (tests/alert_support.py), stopped at the end."""
    started = await Receiver().start()
    try:
        yield started
    finally:
        await started.stop()
