"""Fault injection: the real ``glowing-fiesta collector`` process, real MariaDB behind a
proxy that a test cuts, stalls and resets (tests/faultproxy.py), a known load, and exact
totals afterwards.

Every load is made of integer values, so sums are exact in any order; each test checks,
per metric, SUM(cnt), SUM(sum), MIN(mn) and MAX(mx) over points_1s through its own
connection to the server (not through the proxy) against what it sent. A batch applied
twice, or lost, changes those numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import random
import re
import signal
import socket
import sqlite3
import struct
import termios
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from collector.daemon import Collector
from collector.retention import retention_pass
from store import Batch, Store, WriteResult, open_store
from store.spool import decode_points
from tests.daemon import DaemonProcess
from tests.faultproxy import FaultProxy
from tests.http_support import scrape, value
from tests.mysqldirect import connect

Totals = dict[str, tuple[float, float, float, float]]  # name -> (cnt, sum, mn, mx)


# -- the daemon under test --------------------------------------------------------


async def start_collector(database_url: str, state_dir: Path, *options: str) -> DaemonProcess:
    """``glowing-fiesta collector`` on ephemeral ports, flushing every 0.2 s."""
    return await DaemonProcess.start(
        "collector", "--database-url", database_url, "--state-dir", str(state_dir),
        "--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
        "--flush-interval", "0.2", "--log-level", "info", *options,
    )


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP sending socket, closed however the test ends (a failed test must not
    leave it to the garbage collector, whose ResourceWarning fails a later test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


# -- load and totals ----------------------------------------------------------------


class Load:
    """Lines sent and what the database must hold for them."""

    def __init__(self, prefix: str, names: int = 20, seed: int = 1) -> None:
        self.prefix = prefix
        self.names = names
        self.rng = random.Random(seed)
        self.expected: dict[str, list[float]] = {}
        self.lines = 0

    def line(self) -> bytes:
        i = self.rng.randrange(self.names)
        kind = "c" if i % 2 else "ms"
        value = self.rng.randrange(-5 if kind == "c" else 0, 1000)
        name = f"{self.prefix}.{'c' if kind == 'c' else 'v'}{i}"
        self.record(name, value)
        return f"{name}:{value}|{kind}".encode()

    def record(self, name: str, value: float) -> None:
        self.lines += 1
        bucket = self.expected.get(name)
        if bucket is None:
            self.expected[name] = [1.0, float(value), float(value), float(value)]
        else:
            bucket[0] += 1
            bucket[1] += value
            bucket[2] = min(bucket[2], value)
            bucket[3] = max(bucket[3], value)

    def datagram(self, lines: int) -> bytes:
        return b"\n".join(self.line() for _ in range(lines))

    def totals(self) -> Totals:
        return {name: (b[0], b[1], b[2], b[3]) for name, b in self.expected.items()}


def merged(*loads: Load) -> Totals:
    out: Totals = {}
    for load in loads:
        for name, row in load.totals().items():
            assert name not in out, "loads must use distinct prefixes"
            out[name] = row
    return out


def db_totals(mysql_url: str, prefixes: Iterable[str] | None = None) -> Totals:
    """Per metric SUM(cnt), SUM(sum), MIN(mn), MAX(mx), read straight from the server."""
    conn = connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT m.name, SUM(p.cnt), SUM(p.`sum`), MIN(p.mn), MAX(p.mx) "
                "FROM points_1s p JOIN metrics m ON m.id = p.metric_id GROUP BY m.name"
            )
            rows = cursor.fetchall()
    finally:
        conn.close()
    wanted = tuple(f"{p}." for p in prefixes) if prefixes is not None else None
    return {
        name: (float(cnt), float(total), float(mn), float(mx))
        for name, cnt, total, mn, mx in rows
        if wanted is None or name.startswith(wanted)
    }


async def wait_for_totals(mysql_url: str, expected: Totals, prefixes: list[str],
                          timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := await asyncio.to_thread(db_totals, mysql_url, prefixes)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"totals never matched: {diff(got, expected)}")
        await asyncio.sleep(0.1)


def assert_totals(mysql_url: str, prefixes: list[str] | None, expected: Totals) -> None:
    got = db_totals(mysql_url, prefixes)
    assert got == expected, f"(stored, sent) where they differ: {diff(got, expected)}"


def diff(got: Totals, expected: Totals) -> dict[str, object]:
    return {
        name: (got.get(name), expected.get(name))
        for name in sorted(set(got) | set(expected))
        if got.get(name) != expected.get(name)
    }


def spooled_totals(path: Path) -> Totals:
    """What the collector's spool file holds, summed per metric."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(path, timeout=5)
    try:
        sums: dict[str, list[float]] = {}
        try:
            batches = conn.execute("SELECT id FROM batches ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            # The file exists a moment before the collector has created its tables.
            if "no such table" not in str(exc):
                raise
            return {}
        for (batch_id,) in batches:
            chunks = [c for (c,) in conn.execute(
                "SELECT data FROM chunks WHERE batch_id = ? ORDER BY n", (batch_id,))]
            for name, _kind, _ts, cnt, total, mn, mx in decode_points(chunks):
                row = sums.setdefault(name, [0.0, 0.0, math.inf, -math.inf])
                row[0] += cnt
                row[1] += total
                row[2] = min(row[2], mn)
                row[3] = max(row[3], mx)
    finally:
        conn.close()
    return {name: (r[0], r[1], r[2], r[3]) for name, r in sums.items()}


def udp_kernel_drops(port: int) -> int:
    """The kernel's drop counter of the UDP socket bound to ``port`` (/proc/net/udp)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as handle:
            next(handle)
            for row in handle:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[12])
    raise AssertionError(f"no UDP socket on port {port}")


async def steady_udp(address: tuple[str, int], load: Load, stop: asyncio.Event,
                     *, per_second: int = 4000, lines: int = 20) -> None:
    """``per_second`` lines in datagrams of ``lines``, paced in 10 ms steps, until stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        step = 0.01
        per_step = max(1, per_second * step // lines)
        next_step = time.monotonic()
        while not stop.is_set():
            for _ in range(int(per_step)):
                sock.sendto(load.datagram(lines), address)
            next_step += step
            await asyncio.sleep(max(0.0, next_step - time.monotonic()))
    finally:
        sock.close()


def tcp_unsent(sock: socket.socket) -> int:
    """Bytes in our send queue the peer has not acknowledged (SIOCOUTQ)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


# -- 1. database unreachable during steady load --------------------------------------


async def _outage(mysql_url: str, proxy: FaultProxy, tmp_path: Path,
                  daemons: list[DaemonProcess], outage: float) -> None:
    daemon = await start_collector(proxy.url(mysql_url), tmp_path, "--spool-after", "2",
                                   "--admin-port", "0")
    daemons.append(daemon)
    admin_line = daemon.log[await daemon.wait_for_log(r"admin endpoints .* on ")]
    admin = "http://{}:{}".format(*re.findall(r" on ([\d.]+):(\d+)", admin_line)[0])
    load = Load("outage")
    stop = asyncio.Event()
    sender = asyncio.create_task(steady_udp(daemon.udp, load, stop))
    try:
        await asyncio.sleep(2)  # steady state: flushing through the proxy
        proxy.cut()
        cut_at = time.monotonic()
        first_spool = await daemon.wait_for_log(r"spooled \d+ batch", timeout=outage)
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - cut_at)))
        proxy.restore()
        await daemon.wait_for_log(r"spool .* drained", after=first_spool, timeout=60)
        await asyncio.sleep(1)  # and ingest goes on after it
        # What an operator sees afterwards: every spooled batch and row replayed.
        figures = await scrape(admin)
        spooled = value(figures, "gf_collector_batches_spooled_total")
        assert spooled >= 1
        assert value(figures, "gf_collector_batches_replayed_total") == spooled
        assert value(figures, "gf_collector_rows_replayed_total") == \
            value(figures, "gf_collector_rows_spooled_total") > 0
        assert value(figures, "gf_collector_spool_corrupt_rows_total") == 0
        assert value(figures, "gf_collector_spool_rows") == 0
    finally:
        stop.set()
        await sender
    drops = udp_kernel_drops(daemon.ports["UDP"])
    assert await daemon.stop() == 0, daemon.transcript()
    assert drops == 0, "the kernel dropped datagrams: totals cannot be exact"
    assert_totals(mysql_url, ["outage"], load.totals())
    assert load.lines > 3000 * (outage + 2)
    assert daemon.count_log("write of .* failed") >= 3
    assert proxy.resets >= 1


async def test_database_outage_10s_under_udp_load(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """10 s without the database (backoff, spool after 2 s, drain in order): exact."""
    await _outage(mysql_url, proxy, tmp_path, daemons, outage=10)


@pytest.mark.slow
async def test_database_outage_30s_under_udp_load(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """The issue's full 30 s outage: backoff reaches its cap; still exact."""
    await _outage(mysql_url, proxy, tmp_path, daemons, outage=30)


async def test_database_stall_under_udp_load(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A hung database (connections open, no byte moves) for 6 s: writes time out after
    --flush-timeout, batches spool, everything lands once bytes flow again."""
    daemon = await start_collector(proxy.url(mysql_url), tmp_path,
                                "--spool-after", "1", "--flush-timeout", "1")
    daemons.append(daemon)
    load = Load("stall")
    stop = asyncio.Event()
    sender = asyncio.create_task(steady_udp(daemon.udp, load, stop, per_second=2000))
    try:
        await asyncio.sleep(1)
        proxy.stall()
        first_spool = await daemon.wait_for_log(r"spooled \d+ batch", timeout=15)
        await asyncio.sleep(4)
        proxy.restore()
        await daemon.wait_for_log(r"spool .* drained", after=first_spool, timeout=60)
    finally:
        stop.set()
        await sender
    assert await daemon.stop() == 0, daemon.transcript()
    assert_totals(mysql_url, ["stall"], load.totals())
    assert daemon.count_log(r"failed \(TimeoutError\)") >= 1, daemon.transcript()


# -- 2. connection reset right after COMMIT --------------------------------------------


async def test_connection_reset_after_commit_repeatedly(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """10 resets at COMMIT: 5 after the server committed (the retry must find its
    (writer_id, seq) and not apply again), 5 before (the retry must apply)."""
    daemon = await start_collector(proxy.url(mysql_url), tmp_path)
    daemons.append(daemon)
    load = Load("commit")
    stop = asyncio.Event()
    sender = asyncio.create_task(steady_udp(daemon.udp, load, stop, per_second=3000))
    try:
        for i in range(10):
            mark = len(daemon.log)
            proxy.reset_next_commits(1, forward=i % 2 == 0)
            # The retry goes through before the next break is armed.
            await daemon.wait_for_log("database writes work again", after=mark, timeout=30)
            assert proxy.commits_broken == i + 1
    finally:
        stop.set()
        await sender
    assert await daemon.stop() == 0, daemon.transcript()
    assert_totals(mysql_url, ["commit"], load.totals())
    assert proxy.commits_broken == 10
    # The 5 commits the server did apply were each found applied on retry.
    assert daemon.count_log("was applied before; not applied again") == 5


# -- 3. SIGTERM under load -------------------------------------------------------------


async def test_sigterm_under_load_stores_every_line_received(
    mysql_url: str, tmp_path: Path, daemons: list[DaemonProcess], udp: socket.socket
) -> None:
    """50k UDP lines and 4 x 25k TCP lines as fast as they go, SIGTERM the moment the
    last byte is in the daemon's kernel buffers: all of it is stored, exit status 0."""
    daemon = await start_collector(mysql_url, tmp_path, "--flush-interval", "1")
    daemons.append(daemon)
    udp_load, tcp_load = Load("term.udp", seed=2), Load("term.tcp", names=40, seed=3)
    for _ in range(2500):
        udp.sendto(udp_load.datagram(20), daemon.udp)
    writers = []
    for _ in range(4):
        _reader, writer = await asyncio.open_connection(*daemon.tcp)
        writer.transport.set_write_buffer_limits(0)  # drain() = all handed to the kernel
        writers.append(writer)
    for _ in range(25):
        for writer in writers:
            writer.write(b"".join(tcp_load.line() + b"\n" for _ in range(1000)))
    await asyncio.gather(*(writer.drain() for writer in writers))
    # "Received": in the daemon's socket buffers, not in our send queues.
    socks = [writer.get_extra_info("socket") for writer in writers]
    deadline = time.monotonic() + 30
    while any(tcp_unsent(sock) for sock in socks):
        assert time.monotonic() < deadline, daemon.transcript()
        await asyncio.sleep(0.001)
    drops = udp_kernel_drops(daemon.ports["UDP"])
    status = await daemon.stop(signal.SIGTERM)
    for writer in writers:
        writer.close()
    assert status == 0, daemon.transcript()
    assert drops == 0
    assert_totals(mysql_url, ["term"], merged(udp_load, tcp_load))
    assert udp_load.lines == 50_000 and tcp_load.lines == 100_000


# -- 4. SIGKILL during an outage, then restart -----------------------------------------


async def test_sigkill_during_outage_then_restart_drains_the_spool(
    mysql_url: str, proxy: FaultProxy, tmp_path: Path, daemons: list[DaemonProcess],
    udp: socket.socket,
) -> None:
    """Before: 10k lines flushed. Outage: 10k lines spooled (fsync'd), then SIGKILL.
    Restart while the database is still down (it must start: bind, accept, spool),
    5k more lines, database back: the spool drains; totals are exactly the three loads."""
    url = proxy.url(mysql_url)
    first = await start_collector(url, tmp_path, "--spool-after", "0.5")
    daemons.append(first)
    before, during, after = Load("kill.a", seed=4), Load("kill.b", seed=5), Load("kill.c", seed=6)
    for _ in range(500):
        udp.sendto(before.datagram(20), first.udp)
    await wait_for_totals(mysql_url, before.totals(), ["kill.a"])

    proxy.cut()
    for _ in range(500):
        udp.sendto(during.datagram(20), first.udp)
    spool = tmp_path / "spool-collector.sqlite"
    deadline = time.monotonic() + 30
    while (await asyncio.to_thread(spooled_totals, spool)) != during.totals():
        assert time.monotonic() < deadline, first.transcript()
        await asyncio.sleep(0.1)
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = await start_collector(url, tmp_path, "--spool-after", "0.5")
    daemons.append(second)
    assert second.count_log("unreachable .* starting anyway")
    assert second.count_log(r"spool .* holds \d+ batch")
    for _ in range(250):
        udp.sendto(after.datagram(20), second.udp)
    await asyncio.sleep(1)
    proxy.restore()
    await second.wait_for_log(r"spool .* drained", timeout=60)
    assert await second.stop() == 0, second.transcript()
    assert_totals(mysql_url, ["kill"], merged(before, during, after))
    assert not spool.exists()  # an empty spool is removed at a clean exit


# -- 5. garbage ------------------------------------------------------------------------


async def test_garbage_never_disturbs_good_lines(
    mysql_url: str, tmp_path: Path, daemons: list[DaemonProcess], udp: socket.socket
) -> None:
    """Random bytes, 1 MB lines, slowloris connections, invalid UTF-8, NaN and Inf, over
    UDP and TCP, each beside good lines: the daemon stays up, good lines are exact."""
    daemon = await start_collector(mysql_url, tmp_path, "--tcp-idle-timeout", "1",
                                "--max-tcp-connections", "20")
    daemons.append(daemon)
    good = Load("good", seed=7)
    rng = random.Random(8)
    bad_lines = [
        b"bad.nan:nan|ms", b"bad.inf:inf|c", b"bad.ninf:-inf|ms", b"bad.big:1e400|ms",
        b"bad.utf8.\xc3\x28:1|c", b"\xff\xfe\xfd:1|c", b"bad.name\x00:1|c",
        b"bad:1|zz", b"bad:1|c|@0", b"bad:1|c|@nan", b"bad:1|c|Tnan", b":1|c", b"|||",
        b"bad:" + b"9" * 400 + b"|c",
    ]
    for _ in range(300):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        lines = [good.line() for _ in range(5)] + [rng.choice(bad_lines), junk]
        rng.shuffle(lines)
        # A good line glued after random bytes would not be good: keep them apart.
        udp.sendto(b"\n".join(lines).replace(junk, junk.replace(b"\n", b"")) + b"\n",
                   daemon.udp)
    # The largest datagram: one 60 KB line, then good lines.
    udp.sendto(b"long:" + b"1" * 60_000 + b"|c\n" + good.line() + b"\n" + good.line(),
               daemon.udp)

    # Slowloris: open, send half a line, go quiet; the idle timeout closes them.
    loris = [await asyncio.open_connection(*daemon.tcp) for _ in range(10)]
    for _reader, writer in loris:
        writer.write(b"slow.loris:1")
        await writer.drain()

    # TCP: junk, invalid UTF-8, NaN between good lines; then a 1 MB line, which breaks
    # framing: that connection is closed, the good lines before it are kept.
    for _ in range(3):
        reader, writer = await asyncio.open_connection(*daemon.tcp)
        writer.write(rng.choice(bad_lines) + b"\n" + good.line() + b"\n")
        junk = bytes(rng.randrange(256) for _ in range(2000)).replace(b"\n", b"")
        writer.write(junk + b"\n" + good.line() + b"\n")
        writer.write(good.line() + b"\n" + b"x" * (1 << 20) + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    for reader, _writer in loris:  # each is closed by the daemon within its timeout
        assert await asyncio.wait_for(reader.read(), 10) == b""
    # Still up, still taking good lines.
    reader, writer = await asyncio.open_connection(*daemon.tcp)
    writer.write(good.line() + b"\n" + good.line())  # the last one ends with EOF
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the daemon took the EOF
    writer.close()
    udp.sendto(good.line(), daemon.udp)

    assert await daemon.stop() == 0, daemon.transcript()
    for _reader, loris_writer in loris:
        loris_writer.close()
    assert_totals(mysql_url, None, good.totals())
    for reason in ("bad_value", "too_long", "parse_error", "bad_name"):
        assert daemon.count_log(f"dropped .*: {reason}"), reason
    assert daemon.count_log("closed a TCP connection idle")
    assert daemon.count_log("closed a TCP connection that sent a line over")


# -- 6. retention on 10M rows while ingesting --------------------------------------------


class TimedStore:
    """The real store, with each write_batch timed (monotonic end, seconds taken)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def write_batch(self, batch: Batch) -> WriteResult:
        started = time.perf_counter()
        result = await self.store.write_batch(batch)
        self.writes.append((time.monotonic(), time.perf_counter() - started))
        return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def seed_points(mysql_url: str, metrics: int, seconds: int, first_ts: int) -> None:
    """``metrics`` x ``seconds`` rows (cnt = sum = mn = mx = 1) at first_ts + 0.. ."""
    conn = connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO metrics (name, kind, created_at) VALUES (%s, 'counter', %s)",
                [(f"seed.m{i}", first_ts) for i in range(metrics)],
            )
            cursor.execute("SELECT id FROM metrics WHERE name LIKE 'seed.%%'")
            for (metric_id,) in cursor.fetchall():
                # One statement per metric: 100k rows, a short transaction each.
                cursor.execute(
                    f"INSERT INTO points_1s (metric_id, ts, cnt, `sum`, mn, mx) "
                    f"SELECT {int(metric_id)}, {first_ts} + seq, 1, 1, 1, 1 "
                    f"FROM seq_0_to_{seconds - 1}"
                )
    finally:
        conn.close()


def seed_counts(mysql_url: str, cutoff: int) -> tuple[int, int, float]:
    """(rows before the cutoff, rows from it on, their SUM(cnt)) of the seed metrics."""
    conn = connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT SUM(p.ts < %s), SUM(p.ts >= %s), SUM(IF(p.ts >= %s, p.cnt, 0)) "
                "FROM points_1s p JOIN metrics m ON m.id = p.metric_id "
                "WHERE m.name LIKE 'seed.%%'",
                (cutoff, cutoff, cutoff),
            )
            old, young, total = cursor.fetchone()
    finally:
        conn.close()
    return int(old or 0), int(young or 0), float(total or 0)


@pytest.mark.slow
async def test_retention_on_10m_rows_while_ingesting(mysql_url: str, tmp_path: Path) -> None:
    """10M rows (100 metrics x 100k seconds), half of them past the 7-day retention.
    The collector ingests 5k lines/s over 1,000 names (flush every 100 ms) while the
    retention pass it runs (collector.retention.retention_pass, its chunks and pacing)
    deletes the expired half. Rows older than the cutoff are gone, younger ones intact,
    ingest exact. Flush latency is printed, never asserted (run with -s to see it)."""
    metrics, seconds = 100, 100_000
    retention = 7 * 86400
    raw = open_store(mysql_url)
    await raw.migrate()
    store = TimedStore(raw)
    cutoff = int(time.time()) - retention
    seeded_at = time.monotonic()
    await asyncio.to_thread(seed_points, mysql_url, metrics, seconds, cutoff - seconds // 2)
    seed_seconds = time.monotonic() - seeded_at

    config = CollectorConfig(udp_port=0, tcp_port=None, flush_interval=0.1,
                             retention_raw=retention, retention_interval=0,
                             state_dir=tmp_path)
    collector = Collector(config, store)  # type: ignore[arg-type]
    await collector.startup()
    assert collector.udp_address is not None
    load = Load("ingest", names=1000, seed=9)
    stop = asyncio.Event()
    sender = asyncio.create_task(
        steady_udp(collector.udp_address, load, stop, per_second=5000))
    try:
        await asyncio.sleep(5)  # the baseline: ingest alone
        pass_started = time.monotonic()
        deleted = await retention_pass(raw, cutoff, config.retention_chunk,
                                       flush_records_before=cutoff, stats=collector.stats)
        pass_ended = time.monotonic()
        await asyncio.sleep(1)
    finally:
        stop.set()
        await sender
        await collector.shutdown()
        await raw.close()

    baseline = [s for at, s in store.writes if at < pass_started]
    during = [s for at, s in store.writes if pass_started <= at <= pass_ended]
    old, young, young_cnt = await asyncio.to_thread(seed_counts, mysql_url, cutoff)
    assert (old, young, young_cnt) == (0, metrics * seconds // 2, metrics * seconds / 2)
    assert deleted == metrics * seconds // 2
    assert_totals(mysql_url, ["ingest"], load.totals())
    print(
        f"\nretention: seeded {metrics * seconds:,} rows in {seed_seconds:.1f}s; deleted "
        f"{deleted:,} in {pass_ended - pass_started:.1f}s "
        f"({deleted / (pass_ended - pass_started):,.0f} rows/s, paced)\n"
        f"flush latency, ingest alone: n={len(baseline)} "
        f"p50={percentile(baseline, .5) * 1e3:.1f}ms "
        f"p99={percentile(baseline, .99) * 1e3:.1f}ms max={max(baseline) * 1e3:.1f}ms\n"
        f"flush latency, during retention: n={len(during)} "
        f"p50={percentile(during, .5) * 1e3:.1f}ms p99={percentile(during, .99) * 1e3:.1f}ms "
        f"max={max(during) * 1e3:.1f}ms"
    )
