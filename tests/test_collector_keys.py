"""Key-prefixed lines (DESIGN §2) sent as real datagrams to a real collector.

The collector binds ephemeral ports; its shutdown drains the socket and flushes, so
after ``shutdown()`` everything sent is either stored or counted as dropped — no
sleeping, no polling.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from collector.config import CollectorConfig
from collector.daemon import Collector
from protocol.lines import Reason
from store import Store
from tests.http_support import new_key, stored_points


@asynccontextmanager
async def collector(
    store: Store, tmp_path: Path, *, require_key: bool = False
) -> AsyncIterator[tuple[Collector, Callable[[bytes], None]]]:
    config = CollectorConfig(udp_port=0, tcp_port=None, flush_interval=0.05,
                             require_key=require_key, state_dir=tmp_path)
    daemon = Collector(config, store)
    await daemon.startup()
    assert daemon.udp_address is not None
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = daemon.udp_address

    def send(datagram: bytes) -> None:
        sender.sendto(datagram, address)

    try:
        yield daemon, send
    finally:
        sender.close()
        await daemon.shutdown()


async def test_valid_token_is_verified_and_stripped(store: Store, tmp_path: Path) -> None:
    token = await new_key(store, scopes=("write",))
    ts = int(time.time()) - 30
    async with collector(store, tmp_path) as (daemon, send):
        send(f"{token}.app.hits:3|c|T{ts}\n{token}.app.ms:12|ms|T{ts}".encode())
        send(f"{token}.app.hits:2|c|T{ts}".encode())
    assert await stored_points(store) == {
        "app.hits": [(ts, 2, 5, 2, 3)],
        "app.ms": [(ts, 1, 12, 12, 12)],
    }
    assert daemon.stats.drops[Reason.BAD_KEY] == 0


async def test_wrong_revoked_or_read_only_tokens_are_dropped_and_counted(
    store: Store, tmp_path: Path
) -> None:
    good = await new_key(store)
    revoked = await new_key(store, name="revoked")
    await store.revoke_key("revoked", int(time.time()))
    reader = await new_key(store, scopes=("read",))
    unknown = "gf_" + "Z" * 32
    ts = int(time.time()) - 30
    async with collector(store, tmp_path) as (daemon, send):
        # one datagram: a bad key costs only its own line
        send(b"\n".join(f"{t}.keyed:1|c|T{ts}".encode()
                        for t in (unknown, good, revoked, reader)))
        send(f"{unknown}.keyed:1|c|T{ts}".encode())
    assert await stored_points(store) == {"keyed": [(ts, 1, 1, 1, 1)]}
    assert daemon.stats.drops[Reason.BAD_KEY] == 4
    assert daemon.keys.misses == 4  # the second line with the unknown token: cached


async def test_require_key_drops_unkeyed_lines(store: Store, tmp_path: Path) -> None:
    token = await new_key(store)
    ts = int(time.time()) - 30
    async with collector(store, tmp_path, require_key=True) as (daemon, send):
        send(f"open:1|c|T{ts}\n{token}.closed:1|c|T{ts}\nalso.open:4|v|T{ts}".encode())
    assert await stored_points(store) == {"closed": [(ts, 1, 1, 1, 1)]}
    assert daemon.stats.drops[Reason.NO_KEY] == 2
    assert daemon.stats.drops[Reason.BAD_KEY] == 0


async def test_without_require_key_unkeyed_lines_are_accepted(
    store: Store, tmp_path: Path
) -> None:
    ts = int(time.time()) - 30
    async with collector(store, tmp_path) as (daemon, send):
        send(f"open:1|c|T{ts}".encode())
    assert await stored_points(store) == {"open": [(ts, 1, 1, 1, 1)]}
    assert daemon.stats.drops[Reason.NO_KEY] == 0
