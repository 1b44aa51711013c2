"""Reading UDP with recvmmsg (collector/_fastfeed.c recv_datagrams, listeners.UdpReader)
gives exactly what reading one datagram per callback gives (listeners.UdpProtocol): the
same lines, the same drops, the same stored totals. Real sockets, real collector."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from collector import listeners
from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.lines import Reason
from store import open_store
from tests.conftest import _BUILT_RECV, REQUIRE_SERVICES

CONFIG = CollectorConfig(host="127.0.0.1", udp_port=0, tcp_port=None, flush_interval=0.2)

# Datagram edges: no trailing newline, a trailing newline, "\r\n", a lone "\r" at the
# end, empty lines, an empty datagram, a bad line between good ones, and the largest
# datagram UDP carries.
MAX_UDP = 65_507
_BIG_LINE = b"edge.big:1|c\n"
EDGE_DATAGRAMS = [
    b"edge.a:1|c",
    b"edge.a:2|c\n",
    b"edge.b:1.5|ms\r\nedge.b:2.5|ms\r\n",
    b"edge.a:4|c\r",
    b"\n\nedge.a:8|c\n\n",
    b"",
    b"edge.a:16|c\nedge.a:x|c\nedge.a:32|c",
    _BIG_LINE * (MAX_UDP // len(_BIG_LINE)) + b"\n" * (MAX_UDP % len(_BIG_LINE)),
]
BIG_LINES = MAX_UDP // len(_BIG_LINE)


Recv = Callable[[Any, Any, int], tuple[bytes, int, int]]


@pytest.fixture
def recv() -> Iterator[Recv]:
    if _BUILT_RECV is None:
        message = "collector._fastfeed.recv_datagrams is not built"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    yield _BUILT_RECV


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender.connect(receiver.getsockname())
    try:
        yield receiver, sender
    finally:
        receiver.close()
        sender.close()


def test_recv_datagrams_joins_each_datagram_with_a_newline(
    recv: Recv,
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    buffer = bytearray(listeners.UDP_SLOT_BYTES * 4)
    assert recv(receiver, buffer, listeners.UDP_SLOT_BYTES) == (b"", 0, 0)  # none waiting
    for datagram in EDGE_DATAGRAMS:
        sender.send(datagram)
    first = recv(receiver, buffer, listeners.UDP_SLOT_BYTES)  # four slots: four datagrams
    second = recv(receiver, buffer, listeners.UDP_SLOT_BYTES)
    assert first == (b"".join(d + b"\n" for d in EDGE_DATAGRAMS[:4]), 4, 0)
    assert second == (b"".join(d + b"\n" for d in EDGE_DATAGRAMS[4:]), 4, 0)
    assert recv(receiver.fileno(), buffer, listeners.UDP_SLOT_BYTES) == (b"", 0, 0)


def test_recv_datagrams_leaves_out_and_counts_datagrams_longer_than_a_slot(
    recv: Recv,
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    for datagram in (b"fits:1|c", b"too.long.for.a.slot:1|c", b"fits:2|c"):
        sender.send(datagram)
    assert recv(receiver, bytearray(16 * 8), 16) == (b"fits:1|c\nfits:2|c\n", 3, 1)


def test_recv_datagrams_rejects_what_it_cannot_use(
    recv: Recv,
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, _sender = pair
    with pytest.raises(ValueError, match="at least one slot"):
        recv(receiver, bytearray(100), 200)
    with pytest.raises(BufferError):
        recv(receiver, b"read-only", 4)
    read_end, write_end = os.pipe()
    try:  # not a socket: the kernel's error, as OSError
        with pytest.raises(OSError):
            recv(read_end, bytearray(64), 64)
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_both_readers_store_the_same(sqlite_url: str, udp_reader: str) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    collector = Collector(replace(CONFIG, max_line_length=1024), store)
    await collector.startup()
    assert collector.udp_address is not None
    expected_reader = listeners.UdpReader if udp_reader == "recvmmsg" else asyncio.BaseTransport
    assert isinstance(collector._udp_listener, expected_reader)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    try:
        for _ in range(3):  # three rounds: the first teaches the names
            for datagram in EDGE_DATAGRAMS:
                sender.sendto(datagram, collector.udp_address)
            await asyncio.sleep(0.05)
    finally:
        sender.close()
        await collector.shutdown()
    try:
        assert collector.stats.datagrams == 3 * len(EDGE_DATAGRAMS)
        assert collector.stats.drops == {Reason.BAD_VALUE: 3}
        now = int(time.time())
        for name, count, total in (("edge.a", 6, 63), ("edge.b", 2, 4.0),
                                   ("edge.big", BIG_LINES, BIG_LINES)):
            info = await store.get_metric(name)
            assert info is not None, name
            rows = await store.read_buckets(info.id, now - 3600, now + 3600, 3600)
            assert (sum(r.cnt for r in rows), sum(r.sum for r in rows)) == (
                3 * count, 3 * total), name
    finally:
        await store.close()
