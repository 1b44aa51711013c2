"""Graphite's plaintext protocol (protocol.carbon, collector.carbon): one table of edge
cases, held against the pure parser line by line, then sent over real TCP and UDP
sockets to a real collector on SQLite and MariaDB, totals and drop counts checked
exactly. Shutdown drains the sockets and flushes, so after ``shutdown()`` everything
sent is either stored or counted as dropped."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.carbon import CarbonParser
from protocol.lines import Reason, Sample
from protocol.names import COUNTER, VALUE
from store import Store, open_store
from tests.daemon import DaemonProcess, run_cli
from tests.http_support import new_key, stored_points

NOW = int(time.time())
TS = NOW - 60  # the explicit timestamp of the table's lines
COUNTERS = r"^stats_counts\."
MAX_LINE = 1024


@dataclass(frozen=True)
class Case:
    id: str
    line: bytes
    expect: Sample | Reason | None  # None: not a line at all (blank), nothing counted


def line(text: str) -> bytes:
    return text.format(ts=TS, future=NOW + 3600).encode()


CASES = [
    Case("plain", line("carbon.a 1 {ts}"), Sample("carbon.a", VALUE, 1.0, 1.0, TS, None)),
    Case("tabs", line("carbon.a\t2\t{ts}"), Sample("carbon.a", VALUE, 2.0, 1.0, TS, None)),
    Case("repeated spaces", line("carbon.a   3 \t  {ts}"),
         Sample("carbon.a", VALUE, 3.0, 1.0, TS, None)),
    Case("leading and trailing blanks", line("  carbon.a 4 {ts}  "),
         Sample("carbon.a", VALUE, 4.0, 1.0, TS, None)),
    Case("crlf", line("carbon.a 5 {ts}\r"), Sample("carbon.a", VALUE, 5.0, 1.0, TS, None)),
    Case("decimal timestamp, truncated", line("carbon.a 6.5 {ts}.75"),
         Sample("carbon.a", VALUE, 6.5, 1.0, TS, None)),
    Case("negative value", line("carbon.a -2 {ts}"),
         Sample("carbon.a", VALUE, -2.0, 1.0, TS, None)),
    Case("exponent", line("carbon.a 1e3 {ts}"),
         Sample("carbon.a", VALUE, 1000.0, 1.0, TS, None)),
    Case("-1 is now", line("carbon.now 7 -1"), Sample("carbon.now", VALUE, 7.0, 1.0, None, None)),
    Case("N is now", line("carbon.now 8 N"), Sample("carbon.now", VALUE, 8.0, 1.0, None, None)),
    Case("graphite tags ignored", line("carbon.tagged;host=a;dc=b 9 {ts}"),
         Sample("carbon.tagged", VALUE, 9.0, 1.0, TS, None)),
    Case("counter pattern", line("stats_counts.hits 10 {ts}"),
         Sample("stats_counts.hits", COUNTER, 10.0, 1.0, TS, None)),
    Case("counter pattern again", line("stats_counts.hits 5 {ts}"),
         Sample("stats_counts.hits", COUNTER, 5.0, 1.0, TS, None)),
    Case("blank line", b"   \t ", None),
    Case("nan", line("carbon.a nan {ts}"), Reason.BAD_VALUE),
    Case("NaN", line("carbon.a NaN {ts}"), Reason.BAD_VALUE),
    Case("inf", line("carbon.a inf {ts}"), Reason.BAD_VALUE),
    Case("overflow", line("carbon.a 1e999 {ts}"), Reason.BAD_VALUE),
    Case("not a number", line("carbon.a abc {ts}"), Reason.BAD_VALUE),
    Case("no timestamp", line("carbon.a 1"), Reason.PARSE_ERROR),
    Case("a fourth field", line("carbon.a 1 {ts} extra"), Reason.PARSE_ERROR),
    Case("name only", line("carbon.a"), Reason.PARSE_ERROR),
    Case("statsd line", line("carbon.a:1|c"), Reason.PARSE_ERROR),
    Case("timestamp not a number", line("carbon.a 1 abc"), Reason.BAD_TIMESTAMP),
    Case("negative timestamp", line("carbon.a 1 -5"), Reason.BAD_TIMESTAMP),
    Case("exponent timestamp", line("carbon.a 1 1e9"), Reason.BAD_TIMESTAMP),
    Case("timestamp older than retention", line("carbon.a 1 100"), Reason.BAD_TIMESTAMP),
    Case("timestamp an hour ahead", line("carbon.a 1 {future}"), Reason.BAD_TIMESTAMP),
    Case("doubled dot", line("carbon..a 1 {ts}"), Reason.BAD_NAME),
    Case("slash in name", line("carbon/a 1 {ts}"), Reason.BAD_NAME),
    Case("colon in name", line("carbon:a 1 {ts}"), Reason.BAD_NAME),
    Case("a key without its dot", line("gf_" + "k" * 32 + "carbon.a 1 {ts}"), Reason.BAD_KEY),
    Case("a key inside the name", line("carbon.gf_" + "k" * 32 + ".a 1 {ts}"),
         Reason.BAD_KEY),
    Case("over-long line", b"carbon.long 1 " + b"1" * 2000, Reason.TOO_LONG),
]

# What the good lines add up to in the store: (cnt, sum, min, max) per name at TS.
STORED_AT_TS = {
    "carbon.a": (8.0, 1019.5, -2.0, 1000.0),
    "carbon.tagged": (1.0, 9.0, 9.0, 9.0),
    "stats_counts.hits": (2.0, 15.0, 5.0, 10.0),
}
NOW_SUM = {"carbon.now": (2.0, 15.0)}  # lines at "now": their second is not known here


def expected_drops() -> Counter[Reason]:
    return Counter(c.expect for c in CASES if isinstance(c.expect, Reason))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parser_table(case: Case) -> None:
    parser = CarbonParser(max_line_length=MAX_LINE, counter_pattern=COUNTERS)
    parsed = parser.parse(case.line, NOW)
    if case.expect is None:
        assert parsed.samples == [] and parsed.errors == []
    elif isinstance(case.expect, Reason):
        assert parsed.samples == []
        assert [e.reason for e in parsed.errors] == [case.expect]
        assert parsed.errors[0].detail
    else:
        assert parsed.errors == []
        assert parsed.samples == [case.expect]
        assert parsed.tags_ignored == (1 if b";" in case.line else 0)


def test_parser_whole_input_equals_line_by_line() -> None:
    """The table as one datagram: the same samples and errors, in order; a bad line
    never touches its neighbours."""
    parser = CarbonParser(max_line_length=MAX_LINE, counter_pattern=COUNTERS)
    whole = parser.parse(b"\n".join(c.line for c in CASES) + b"\n", NOW)
    one_by_one = [parser.parse(c.line, NOW) for c in CASES]
    assert whole.samples == [s for p in one_by_one for s in p.samples]
    assert whole.errors == [e for p in one_by_one for e in p.errors]


def test_key_prefix_is_split_off_and_kept() -> None:
    token = "gf_" + "a" * 32
    parsed = CarbonParser().parse(f"{token}.app.load 0.5 N".encode(), NOW)
    assert parsed.samples == [Sample("app.load", VALUE, 0.5, 1.0, None, token)]


@given(st.lists(st.one_of(
    st.binary(max_size=60),
    st.sampled_from([c.line for c in CASES]),
    st.builds(lambda n, v, t: b"%s %s %s" % (n, v, t),
              st.sampled_from([b"a.b", b"gf_" + b"x" * 32 + b".k", b"a;t=1", b"\xff"]),
              st.sampled_from([b"1", b"-0.5", b"nan", b"1e308", b"1e309", b"", b"+1"]),
              st.sampled_from([b"N", b"-1", b"%d" % TS, b"%d.9" % TS, b"0", b"x"])),
), max_size=20))
def test_parser_never_raises_and_keeps_only_finite_samples(lines: list[bytes]) -> None:
    parsed = CarbonParser(max_line_length=MAX_LINE).parse(b"\n".join(lines), NOW)
    for sample in parsed.samples:
        assert math.isfinite(sample.value)
        assert sample.timestamp is None or NOW - 7 * 86400 <= sample.timestamp <= NOW + 300
    assert len(parsed.samples) + len(parsed.errors) <= sum(
        1 for chunk in b"\n".join(lines).split(b"\n") if chunk.strip())


# -- over real sockets --------------------------------------------------------------

CONFIG = CollectorConfig(
    host="127.0.0.1", udp_port=None, tcp_port=None, carbon_port=0, flush_interval=0.1,
    max_line_length=MAX_LINE, carbon_counter_pattern=COUNTERS,
)


@asynccontextmanager
async def carbon_collector(
    store: Store, tmp_path: Path, **changes: object
) -> AsyncIterator[Collector]:
    daemon = Collector(replace(CONFIG, state_dir=tmp_path, **changes), store)  # type: ignore[arg-type]
    await daemon.startup()
    try:
        yield daemon
    finally:
        await daemon.shutdown()


async def send_tcp(address: tuple[str, int], data: bytes, rng: random.Random, *,
                   closed_by_peer: bool = False) -> None:
    """``data`` in random chunks (single bytes among them), then a clean close.
    ``closed_by_peer``: the data breaks framing (an over-long line), so the collector
    closes the connection: wait for that instead."""
    reader, writer = await asyncio.open_connection(*address)
    position = 0
    try:
        while position < len(data):
            step = rng.choice([1, 2, 7, 64, 900])
            writer.write(data[position : position + step])
            position += step
            await writer.drain()
            await asyncio.sleep(0)
        if closed_by_peer:
            assert await asyncio.wait_for(reader.read(), 10) == b""
    except (ConnectionResetError, BrokenPipeError):
        assert closed_by_peer, "the collector closed a connection that kept framing"
    writer.close()
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await writer.wait_closed()


async def send_udp(address: tuple[str, int], datagrams: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for datagram in datagrams:
            sock.sendto(datagram, address)
            await asyncio.sleep(0)  # the collector shares this loop
    finally:
        sock.close()


async def stored_now_sums(store: Store, names: set[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for name in names:
        info = await store.get_metric(name)
        assert info is not None, name
        rows = await store.read_buckets(info.id, NOW - 3600, NOW + 3600, 7200)
        out[name] = (sum(r.cnt for r in rows), sum(r.sum for r in rows))
    return out


@pytest.mark.parametrize("transport", ["tcp", "udp-one-line-each", "udp-one-datagram"])
async def test_table_over_real_sockets_stored_exactly(
    database_url: str, tmp_path: Path, transport: str
) -> None:
    store = open_store(database_url)
    await store.migrate()
    try:
        async with carbon_collector(store, tmp_path) as daemon:
            assert daemon.carbon is not None
            assert daemon.carbon.tcp_address is not None
            assert daemon.carbon.udp_address is not None
            lines = [c.line for c in CASES]
            if transport == "tcp":  # the over-long line (the last) closes its connection
                await send_tcp(daemon.carbon.tcp_address, b"\n".join(lines[:-1]) + b"\n",
                               random.Random(12))
                await send_tcp(daemon.carbon.tcp_address, lines[-1] + b"\n",
                               random.Random(13), closed_by_peer=True)
            elif transport == "udp-one-line-each":
                await send_udp(daemon.carbon.udp_address, lines)
            else:  # the long line would not fit a sane datagram budget: on its own
                await send_udp(daemon.carbon.udp_address,
                               [b"\n".join(lines[:-1]), lines[-1]])
        assert daemon.stats.drops == expected_drops()
        assert daemon.stats.samples == sum(isinstance(c.expect, Sample) for c in CASES)
        assert daemon.stats.tags_ignored == 1
        stored = await stored_points(store)
        for name, (cnt, total, mn, mx) in STORED_AT_TS.items():
            assert stored[name] == [(TS, cnt, total, mn, mx)], name
        assert await stored_now_sums(store, set(NOW_SUM)) == NOW_SUM
        assert set(stored) == set(STORED_AT_TS) | set(NOW_SUM)
        kinds = {name: (await store.get_metric(name)).kind  # type: ignore[union-attr]
                 for name in stored}
        assert kinds == {"carbon.a": VALUE, "carbon.tagged": VALUE, "carbon.now": VALUE,
                         "stats_counts.hits": COUNTER}
    finally:
        await store.close()


async def test_stream_cut_mid_line(sqlite_store: Store, tmp_path: Path) -> None:
    """A peer that closes in the middle of a line: the lines before are stored; the
    fragment is parsed as a last line and, being no complete carbon line, dropped and
    counted (a cut timestamp falls out of the window, a cut value leaves two fields)."""
    async with carbon_collector(sqlite_store, tmp_path) as daemon:
        assert daemon.carbon is not None and daemon.carbon.tcp_address is not None
        address = daemon.carbon.tcp_address
        rng = random.Random(5)
        await send_tcp(address, line("cut.a 1 {ts}\ncut.a 2 {ts}\ncut.a 3 17"), rng)
        await send_tcp(address, line("cut.a 4 {ts}\ncut.a 5"), rng)
        await send_tcp(address, line("cut.b 6 {ts}"), rng)  # complete, only no "\n"
    assert await stored_points(sqlite_store) == {
        "cut.a": [(TS, 3.0, 7.0, 1.0, 4.0)],
        "cut.b": [(TS, 1.0, 6.0, 6.0, 6.0)],
    }
    assert daemon.stats.drops == Counter({Reason.BAD_TIMESTAMP: 1, Reason.PARSE_ERROR: 1})


async def test_over_long_line_split_across_reads(sqlite_store: Store, tmp_path: Path) -> None:
    """Framing bound: an over-long line arriving in many reads is dropped and closes
    the connection, as for StatsD lines; the lines before it are intact."""
    async with carbon_collector(sqlite_store, tmp_path) as daemon:
        assert daemon.carbon is not None and daemon.carbon.tcp_address is not None
        data = (line("long.a 1 {ts}\nlong.a 2 {ts}\n") + b"long.a " + b"9" * 5000
                + line(" {ts}\n") + line("long.a 4 {ts}\n"))
        await send_tcp(daemon.carbon.tcp_address, data, random.Random(8), closed_by_peer=True)
    assert await stored_points(sqlite_store) == {"long.a": [(TS, 2.0, 3.0, 1.0, 2.0)]}
    assert daemon.stats.drops == Counter({Reason.TOO_LONG: 1})
    assert daemon.stats.tcp_closed_too_long == 1


async def test_key_prefix_and_require_key(store: Store, tmp_path: Path) -> None:
    token = await new_key(store, scopes=("write",))
    read_only = await new_key(store, scopes=("read",))
    async with carbon_collector(store, tmp_path, require_key=True) as daemon:
        assert daemon.carbon is not None and daemon.carbon.tcp_address is not None
        data = line(f"{token}.keyed.a 5 {{ts}}\nkeyed.a 1 {{ts}}\n"
                    f"{read_only}.keyed.a 2 {{ts}}\n{token}.keyed.a 6 {{ts}}\n")
        await send_tcp(daemon.carbon.tcp_address, data, random.Random(1))
    assert await stored_points(store) == {"keyed.a": [(TS, 2.0, 11.0, 5.0, 6.0)]}
    assert daemon.stats.drops == Counter({Reason.NO_KEY: 1, Reason.BAD_KEY: 1})


async def test_carbon_and_statsd_share_the_kind_of_a_name(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """One aggregator: a carbon value for a name StatsD made a counter is a kind
    conflict, counted like any other."""
    async with carbon_collector(sqlite_store, tmp_path, udp_port=0) as daemon:
        assert daemon.udp_address is not None and daemon.carbon is not None
        assert daemon.carbon.udp_address is not None
        await send_udp(daemon.udp_address, [f"shared.n:3|c|T{TS}".encode()])
        await send_udp(daemon.carbon.udp_address, [line("shared.n 4 {ts}")])
    assert await stored_points(sqlite_store) == {"shared.n": [(TS, 1.0, 3.0, 3.0, 3.0)]}
    assert daemon.stats.drops == Counter({Reason.KIND_CONFLICT: 1})


async def test_connection_cap_is_shared_with_statsd(sqlite_store: Store, tmp_path: Path) -> None:
    async with carbon_collector(sqlite_store, tmp_path, tcp_port=0,
                                max_tcp_connections=1) as daemon:
        assert daemon.tcp_address is not None and daemon.carbon is not None
        assert daemon.carbon.tcp_address is not None
        _r, statsd = await asyncio.open_connection(*daemon.tcp_address)
        statsd.write(f"cap.n:1|c|T{TS}\n".encode())
        await statsd.drain()
        deadline = time.monotonic() + 10
        while daemon.open_tcp_connections < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        reader, carbon = await asyncio.open_connection(*daemon.carbon.tcp_address)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the collector
        carbon.close()
        statsd.close()
        await statsd.wait_closed()
    assert daemon.stats.tcp_refused == 1
    assert await stored_points(sqlite_store) == {"cap.n": [(TS, 1.0, 1.0, 1.0, 1.0)]}


async def test_idle_carbon_connection_is_closed(sqlite_store: Store, tmp_path: Path) -> None:
    async with carbon_collector(sqlite_store, tmp_path, tcp_idle_timeout=1.0) as daemon:
        assert daemon.carbon is not None and daemon.carbon.tcp_address is not None
        reader, writer = await asyncio.open_connection(*daemon.carbon.tcp_address)
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
    assert daemon.stats.tcp_idle_closed == 1


def test_cached_lines_are_rechecked_when_the_clock_moves() -> None:
    """The parser remembers "value timestamp" tails it accepted, for the second it
    accepted them in: a timestamp at the edge of the window is refused a second later."""
    parser = CarbonParser(max_age=100)
    edge = b"edge.a 1 %d\nedge.a 1 %d" % (NOW - 100, NOW - 100)
    assert [s.timestamp for s in parser.parse(edge, NOW).samples] == [NOW - 100] * 2
    later = parser.parse(edge, NOW + 1)
    assert later.samples == []
    assert [e.reason for e in later.errors] == [Reason.BAD_TIMESTAMP] * 2


# -- the installed CLI -----------------------------------------------------------------


async def test_cli_carbon_port_and_counter_pattern(tmp_path: Path) -> None:
    """`glowing-fiesta run --carbon-port 0 --carbon-counter-pattern ...` as a real
    process: a value over TCP, a counter over UDP, stored with their kinds; an invalid
    pattern is a usage error."""
    daemon = await DaemonProcess.start(
        "run", "--udp-port", "0", "--tcp-port", "0", "--http-port", "0",
        "--carbon-port", "0", "--carbon-counter-pattern", r"\.hits$", cwd=tmp_path,
    )
    try:
        index = await daemon.wait_for_log(r"listening on carbon TCP")
        port = int(daemon.log[index].rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line("cli.load 0.5 {ts}\n"))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await send_udp(("127.0.0.1", port), [line("cli.hits 3 {ts}\ncli.hits 4 {ts}")])
    finally:
        status = await daemon.stop(signal.SIGTERM)
    assert status == 0, daemon.transcript()
    store = open_store(f"sqlite:///{tmp_path / 'var' / 'glowing-fiesta.db'}")
    try:
        assert await stored_points(store) == {"cli.load": [(TS, 1.0, 0.5, 0.5, 0.5)],
                                              "cli.hits": [(TS, 2.0, 7.0, 3.0, 4.0)]}
        hits = await store.get_metric("cli.hits")
        assert hits is not None and hits.kind == COUNTER
    finally:
        await store.close()
    status, _out, err = await run_cli("collector", "--carbon-port", "0",
                                      "--carbon-counter-pattern", "(", cwd=tmp_path)
    assert status == 2 and "--carbon-counter-pattern" in err
