"""Percentiles, distinct counts and gauges end to end: a stock StatsD client (pystatsd)
over UDP, real collector processes, real MariaDB, the real HTTP API.

Samples go out during known minutes (the collector stamps a sample with its arrival
second, and pystatsd sends no timestamp), so the exact quantiles of each minute, hour
and day bucket are numpy's over the samples sent in it; the answers must be within
alpha (1%) of them. Every test checks first that the stored count is exactly what was
sent: a sample lost on the way would make the comparison meaningless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import statsd

from tests.daemon import DaemonProcess, create_key

pytestmark = [pytest.mark.slow, pytest.mark.mysql]

ALPHA = 0.01
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
SEND_RATE = 50_000  # samples/s, well under what the collector takes (no kernel drops)
CHUNK = 2_000

Distribution = Callable[[np.random.Generator, int], np.ndarray]
DISTRIBUTIONS: dict[str, Distribution] = {
    "lognormal": lambda rng, n: rng.lognormal(3.0, 1.0, n),
    "uniform": lambda rng, n: rng.uniform(0.0, 1000.0, n),
    "bimodal": lambda rng, n: np.abs(np.where(rng.random(n) < 0.7, rng.normal(20.0, 3.0, n),
                                              rng.normal(400.0, 40.0, n))),
}


def as_sent(values: np.ndarray) -> np.ndarray:
    """The values as the collector sees them: pystatsd formats a timing as ``%0.6f``."""
    return np.array([float(f"{v:0.6f}") for v in values])


def send_paced(port: int, lines: Sequence[Callable[[statsd.client.base.PipelineBase], None]],
               rate: float) -> None:
    """Run pystatsd calls in pipelines of CHUNK (one datagram per ~512 bytes, as the
    client splits them) at about ``rate`` calls per second."""
    client = statsd.StatsClient("127.0.0.1", port)
    start = time.monotonic()
    for offset in range(0, len(lines), CHUNK):
        with client.pipeline() as pipe:
            for call in lines[offset:offset + CHUNK]:
                call(pipe)
        ahead = start + (offset + CHUNK) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    client.close()


async def at_next_minute() -> int:
    """Sleep until just after the next minute starts; that minute's epoch."""
    now = time.time()
    minute = int(now // 60 * 60) + 60
    await asyncio.sleep(minute - now + 0.2)
    return minute


async def query(session: aiohttp.ClientSession, base: str, key: str, name: str,
                **params: str | int) -> list[dict[str, object]]:
    async with session.get(f"{base}/api/metrics/{name}", params={"fill": "none", **params},
                           headers={"X-API-Key": key}) as response:
        body = await response.json()
        assert response.status == 200, body
        points: list[dict[str, object]] = body["points"]
        return points


def check_quantiles(got: float, exact: float, what: str) -> None:
    assert abs(got - exact) <= ALPHA * abs(exact) + 1e-9, (
        f"{what}: {got} vs exact {exact} ({abs(got - exact) / abs(exact):.4%} off)")


async def start_collector(mysql_url: str, command: str = "collector",
                          *extra: str) -> DaemonProcess:
    return await DaemonProcess.start(
        command, "--database-url", mysql_url, "--udp-port", "0", "--tcp-port", "0",
        "--flush-interval", "0.2", *extra)


async def assert_quantiles(session: aiohttp.ClientSession, base: str, key: str, name: str,
                           parts: dict[int, np.ndarray], start: int, end: int) -> None:
    """``parts``: minute -> the values sent in it. Per minute, hour and day bucket, each
    percentile within alpha of numpy's exact "lower" quantile of that bucket's values."""
    total = sum(len(v) for v in parts.values())
    counted = await query(session, base, key, name, **{"from": start, "to": end,
                          "interval": "1d", "aggregation": "count"})
    assert sum(float(p["value"]) for p in counted) == total  # type: ignore[arg-type]
    for interval, step in (("minute", 60), ("hour", 3600), ("1d", 86400)):
        expected: dict[int, list[np.ndarray]] = {}
        for minute, values in parts.items():
            expected.setdefault(minute // step * step, []).append(values)
        for label, q in QUANTILES.items():
            points = await query(session, base, key, name, **{
                "from": start, "to": end, "interval": interval, "aggregation": label})
            assert len(points) == len(expected), (interval, points)
            for point, (_bucket, arrays) in zip(points, sorted(expected.items()), strict=True):
                exact = float(np.quantile(np.concatenate(arrays), q, method="lower"))
                check_quantiles(float(point["value"]), exact,  # type: ignore[arg-type]
                                f"{name} {label} per {interval}")


async def test_percentiles_of_a_million_pystatsd_timings(mysql_url: str, tmp_path: Path) -> None:
    """1M timings of each of three distributions, half in one minute and half in the
    next, through `glowing-fiesta run` into MariaDB: p50/p90/p99/p999 per minute, per
    hour and per day within 1% of the exact quantiles."""
    key = await create_key(mysql_url, "reader")
    daemon = await start_collector(mysql_url, "run", "--http-port", "0",
                                   "--state-dir", str(tmp_path))
    rng = np.random.default_rng(11)
    sent: dict[str, dict[int, np.ndarray]] = {name: {} for name in DISTRIBUTIONS}
    try:
        start = await at_next_minute()
        for _part in range(2):
            minute = int(time.time() // 60 * 60)
            batch = {name: as_sent(draw(rng, 500_000)) for name, draw in DISTRIBUTIONS.items()}
            calls = [
                (lambda pipe, n=f"e2e.{name}.ms", v=v: pipe.timing(n, v))
                for i in range(500_000) for name, values in batch.items()
                for v in (values[i],)
            ]
            await asyncio.to_thread(send_paced, daemon.ports["UDP"], calls, SEND_RATE)
            assert int(time.time() // 60 * 60) == minute, "sending overran its minute"
            for name, values in batch.items():
                sent[name][minute] = values
            if _part == 0:
                await at_next_minute()
        await asyncio.sleep(1.5)  # two flush intervals and more
        end = int(time.time()) + 1
        async with aiohttp.ClientSession() as session:
            for name, parts in sent.items():
                await assert_quantiles(session, daemon.base_url, key, f"e2e.{name}.ms",
                                       parts, start, end)
    finally:
        assert await daemon.stop() == 0, daemon.transcript()


async def test_two_collectors_merge_into_one_sketch(mysql_url: str, tmp_path: Path) -> None:
    """1M lognormal timings of one metric, half sent to each of two collector processes
    in the same minute: the stored minute is the merge, within 1% of all samples'."""
    key = await create_key(mysql_url, "reader")
    first, second = await asyncio.gather(start_collector(mysql_url),
                                         start_collector(mysql_url))
    server = await DaemonProcess.start("serve", "--database-url", mysql_url,
                                       "--http-port", "0", "--state-dir", str(tmp_path))
    rng = np.random.default_rng(12)
    values = as_sent(rng.lognormal(2.0, 1.5, 1_000_000))
    try:
        start = await at_next_minute()
        halves = [[(lambda pipe, v=v: pipe.timing("e2e.merged.ms", v)) for v in part]
                  for part in (values[::2], values[1::2])]
        await asyncio.gather(
            asyncio.to_thread(send_paced, first.ports["UDP"], halves[0], SEND_RATE / 2),
            asyncio.to_thread(send_paced, second.ports["UDP"], halves[1], SEND_RATE / 2))
        assert int(time.time() // 60 * 60) == start, "sending overran its minute"
        await asyncio.sleep(1.5)
        async with aiohttp.ClientSession() as session:
            await assert_quantiles(session, server.base_url, key, "e2e.merged.ms",
                                   {start: values}, start, int(time.time()) + 1)
    finally:
        for daemon in (first, second, server):
            assert await daemon.stop() == 0, daemon.transcript()


async def test_a_million_distinct_members_across_two_collectors(
    mysql_url: str, tmp_path: Path
) -> None:
    """Members 0..599,999 to one collector and 400,000..999,999 to the other (pystatsd
    `set`): 1M distinct in all, counted within 2%; and the count of set lines exact."""
    key = await create_key(mysql_url, "reader")
    first, second = await asyncio.gather(start_collector(mysql_url),
                                         start_collector(mysql_url))
    server = await DaemonProcess.start("serve", "--database-url", mysql_url,
                                       "--http-port", "0", "--state-dir", str(tmp_path))
    try:
        start = await at_next_minute()
        parts = [range(0, 600_000), range(400_000, 1_000_000)]
        calls = [[(lambda pipe, m=m: pipe.set("e2e.users", f"user-{m}")) for m in part]
                 for part in parts]
        await asyncio.gather(
            asyncio.to_thread(send_paced, first.ports["UDP"], calls[0], SEND_RATE / 2),
            asyncio.to_thread(send_paced, second.ports["UDP"], calls[1], SEND_RATE / 2))
        await asyncio.sleep(1.5)
        end = int(time.time()) + 1
        async with aiohttp.ClientSession() as session:
            counted = await query(session, server.base_url, key, "e2e.users", **{
                "from": start, "to": end, "interval": "1d", "aggregation": "count"})
            assert sum(float(p["value"]) for p in counted) == 1_200_000  # type: ignore[arg-type]
            for interval in ("minute", "hour"):
                points = await query(session, server.base_url, key, "e2e.users", **{
                    "from": start, "to": start + 60, "interval": interval,
                    "aggregation": "unique"})
                assert len(points) == 1
                unique = float(points[0]["value"])  # type: ignore[arg-type]
                assert abs(unique - 1_000_000) <= 0.02 * 1_000_000, unique
    finally:
        for daemon in (first, second, server):
            assert await daemon.stop() == 0, daemon.transcript()


async def test_gauges_deltas_restart_and_last_per_bucket(mysql_url: str,
                                                         tmp_path: Path) -> None:
    """pystatsd gauges: absolute values, deltas, a negative absolute value (which the
    client sends as `0|g` then `-5|g`), Etsy's `-n|g` on an unseen gauge, and the
    current value surviving a collector restart."""
    key = await create_key(mysql_url, "reader")
    server = await DaemonProcess.start("serve", "--database-url", mysql_url,
                                       "--http-port", "0", "--state-dir", str(tmp_path))
    collector = await start_collector(mysql_url)
    client = statsd.StatsClient("127.0.0.1", collector.ports["UDP"])
    try:
        start = int(time.time())
        client.gauge("e2e.level", 10)
        client.gauge("e2e.level", 5, delta=True)
        client.gauge("e2e.level", -3, delta=True)  # 12
        client.gauge("e2e.negative", -5)  # sent as 0|g, -5|g: absolute -5
        client.gauge("e2e.unseen", -5, delta=True)  # Etsy: an unseen gauge is set to -5
        await asyncio.sleep(1.0)
        client.close()
        assert await collector.stop() == 0, collector.transcript()
        collector = await start_collector(mysql_url)
        client = statsd.StatsClient("127.0.0.1", collector.ports["UDP"])
        client.gauge("e2e.level", 1, delta=True)  # 13: the value read back from the store
        await asyncio.sleep(1.0)
        end = int(time.time()) + 1
        async with aiohttp.ClientSession() as session:
            for name, last in (("e2e.level", 13.0), ("e2e.negative", -5.0),
                               ("e2e.unseen", -5.0)):
                points = await query(session, server.base_url, key, name, **{
                    "from": start, "to": end, "interval": "1d", "aggregation": "last"})
                assert [p["value"] for p in points] == [last], name
    finally:
        client.close()
        for daemon in (collector, server):
            assert await daemon.stop() == 0, daemon.transcript()
