"""collectd's ``write_graphite`` plugin, the real daemon, pointed at the carbon port.

collectd (Debian ``collectd-core``) runs as a process with a generated configuration:
the ``unixsock`` plugin takes our PUTVAL commands (known values at known times, the
exact input a test needs), ``write_graphite`` sends them on as Graphite plaintext over
TCP or UDP, with its ``Prefix`` set to an API key, to a real collector with
``--require-key`` and a counter pattern. Every value is then read back exactly from
the store (SQLite and MariaDB).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.daemon import Collector
from store import open_store
from tests.conftest import REQUIRE_SERVICES
from tests.http_support import new_key, stored_points

COLLECTD = shutil.which("collectd") or "/usr/sbin/collectd"
TYPES_DB = "/usr/share/collectd/types.db"
T = int(time.time()) - 120
VALUES = [1.5, 2.5, 3.5, 4.5, 5.5]  # one per second from T on
COUNTS = [1, 2, 3, 4, 5]

CONFIG = """\
Hostname "gfhost"
FQDNLookup false
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
TypesDB "{types_db}"
Interval 60
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDERR
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "{dir}/sock"
</Plugin>
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "glowing-fiesta">
    Host "127.0.0.1"
    Port "{port}"
    Protocol "{protocol}"
    Prefix "{token}."
    SeparateInstances true
    StoreRates false
  </Node>
</Plugin>
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for a unix socket path (108 bytes at most)."""
    if not os.path.exists(COLLECTD):
        message = "collectd is not installed (apt-get install collectd-core)"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (GF_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    path = Path(tempfile.mkdtemp(prefix="gfcd"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  line: str) -> str:
    """One unixsock command; its status line (a negative status is an error)."""
    writer.write(line.encode() + b"\n")
    await writer.drain()
    answer = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    assert answer and not answer.startswith("-"), (line, answer)
    return answer


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
async def test_write_graphite_totals_exact(
    database_url: str, tmp_path: Path, short_dir: Path, protocol: str
) -> None:
    store = open_store(database_url)
    await store.migrate()
    process: asyncio.subprocess.Process | None = None
    try:
        token = await new_key(store, scopes=("write",))
        collector = Collector(CollectorConfig(
            host="127.0.0.1", udp_port=None, tcp_port=None, carbon_port=0,
            flush_interval=0.1, require_key=True, carbon_counter_pattern=r"\.count\.",
            state_dir=tmp_path,
        ), store)
        await collector.startup()
        try:
            assert collector.carbon is not None and collector.carbon.tcp_address is not None
            conf = short_dir / "collectd.conf"
            conf.write_text(CONFIG.format(dir=short_dir, types_db=TYPES_DB, token=token,
                                          port=collector.carbon.tcp_address[1],
                                          protocol=protocol))
            log = short_dir / "collectd.log"
            with log.open("wb") as log_file:
                process = await asyncio.create_subprocess_exec(
                    COLLECTD, "-f", "-C", str(conf), stdout=asyncio.subprocess.DEVNULL,
                    stderr=log_file)
            socket_path = short_dir / "sock"
            deadline = time.monotonic() + 30
            while not socket_path.exists():  # collectd has no readiness signal of its own
                assert process.returncode is None, log.read_text()
                assert time.monotonic() < deadline, "collectd's unixsock did not appear"
                await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            for i, (value, count) in enumerate(zip(VALUES, COUNTS, strict=True)):
                await command(reader, writer,
                              f"PUTVAL gfhost/gftest-load/gauge-a interval=60 {T + i}:{value}")
                await command(reader, writer,
                              f"PUTVAL gfhost/gftest/count-hits interval=60 {T + i}:{count}")
            await command(reader, writer, "FLUSH plugin=write_graphite")
            writer.close()
            await writer.wait_closed()
            process.send_signal(signal.SIGTERM)  # flushes write_graphite's buffer too
            assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text()
        finally:
            await collector.shutdown()
        assert collector.stats.carbon_lines == 2 * len(VALUES)
        assert sum(collector.stats.drops.values()) == 0, collector.stats.drops
        assert await stored_points(store) == {
            "gfhost.gftest.load.gauge.a": [(T + i, 1.0, v, v, v) for i, v in enumerate(VALUES)],
            "gfhost.gftest.count.hits": [(T + i, 1.0, c, c, c) for i, c in enumerate(COUNTS)],
        }
        hits = await store.get_metric("gfhost.gftest.count.hits")
        gauge = await store.get_metric("gfhost.gftest.load.gauge.a")
        assert hits is not None and hits.kind == "counter"
        assert gauge is not None and gauge.kind == "value"
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await store.close()
