"""The flusher's ticks (collector.flusher): a busy database gets fewer, larger batches.

A tick whose last batch is still being written waits for that write, and the next batch
holds every second since; a write slower than --flush-write-share of the time stretches
the interval the same way; a failing database still gets a batch every tick (they go
to the spool). Real stores on both backends; the only stand-in is a gate in front of
``write_batch`` that holds the first write, as a slow database would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.flusher import Flusher
from collector.stats import CollectorStats
from store import Batch, Store, StoreUnavailable, WriteResult
from store.durable import DurableWriter
from tests.test_durable import until


def lines_at(second: int, count: int) -> bytes:
    return b"\n".join(b"busy.c:1|c|T%d" % second for _ in range(count))


async def stored(store: Store, name: str, start: int, end: int) -> dict[int, float]:
    info = await store.get_metric(name)
    assert info is not None
    return {row.ts: row.cnt for row in await store.read_buckets(info.id, start, end, 1)}


async def run_flusher(
    store: Store, write: Callable[[Batch], Awaitable[WriteResult]], body: Callable[
        [Aggregator, DurableWriter, CollectorStats], Awaitable[None]], share: float = 1.0,
) -> None:
    config = CollectorConfig(flush_interval=0.05, flush_write_share=share)
    stats = CollectorStats()
    agg = Aggregator(config, stats)
    writer = DurableWriter(write, "test-flusher-ticks", stats=stats)
    writer.start()
    stopping = asyncio.Event()
    flusher = Flusher(agg, config, stats, writer)
    ticking = asyncio.create_task(flusher.run(stopping))
    try:
        await body(agg, writer, stats)
    finally:
        stopping.set()
        await ticking
        await flusher.cut(force=True)
        await writer.close(10)
    assert stats.rows_lost == 0


async def test_a_tick_waits_for_the_last_write_and_the_next_batch_holds_every_second_since(
    store: Store,
) -> None:
    base = int(time.time()) - 100
    gate = asyncio.Event()
    written: list[Batch] = []

    async def slow_write(batch: Batch) -> WriteResult:
        written.append(batch)
        if len(written) == 1:
            await gate.wait()  # the first write is slow
        return await store.write_batch(batch)

    async def body(agg: Aggregator, writer: DurableWriter, stats: CollectorStats) -> None:
        agg.feed(lines_at(base, 3), base)
        await until(lambda: len(written) == 1)  # cut, and being written
        for second in range(base + 1, base + 6):
            agg.feed(lines_at(second, 2), second)
            await asyncio.sleep(0.06)  # more than a tick each
        assert len(written) == 1 and len(writer.pending) == 1  # nothing cut meanwhile
        assert stats.flush_ticks_merged == 0  # (counted when the wait ends)
        gate.set()
        await until(lambda: len(written) == 2 and not writer.pending)
        assert stats.flush_ticks_merged >= 1
        # the five seconds that came during the slow write, in one batch
        assert sorted({ts for _n, _k, ts, *_ in written[1].points}) == list(
            range(base + 1, base + 6))

    await run_flusher(store, slow_write, body)
    assert await stored(store, "busy.c", base, base + 6) == {
        base: 3.0, **{second: 2.0 for second in range(base + 1, base + 6)}}


async def test_a_write_slower_than_its_share_of_the_time_stretches_the_interval(
    store: Store,
) -> None:
    base = int(time.time()) - 100
    written: list[Batch] = []

    async def slow_write(batch: Batch) -> WriteResult:
        written.append(batch)
        await asyncio.sleep(0.1)  # two ticks' worth: at a share of 1/4, a cut every 0.4 s
        return await store.write_batch(batch)

    async def body(agg: Aggregator, writer: DurableWriter, stats: CollectorStats) -> None:
        for second in range(base, base + 30):  # a second of data every 0.05 s, for 1.5 s
            agg.feed(lines_at(second, 1), second)
            await asyncio.sleep(0.05)
        await until(lambda: not writer.pending and stats.flush_ticks_merged > 0)

    await run_flusher(store, slow_write, body, share=0.25)
    # without the share, a cut after every write: ~15 batches; with it, ~5 (+ the last)
    assert 2 <= len(written) <= 8
    assert await stored(store, "busy.c", base, base + 30) == {
        second: 1.0 for second in range(base, base + 30)}


async def test_a_failing_database_still_gets_a_batch_every_tick(store: Store) -> None:
    base = int(time.time()) - 100
    failures = 0
    down = True

    async def failing_write(batch: Batch) -> WriteResult:
        nonlocal failures
        if down:
            failures += 1
            raise StoreUnavailable("the database is down (test)")
        return await store.write_batch(batch)

    async def body(agg: Aggregator, writer: DurableWriter, stats: CollectorStats) -> None:
        nonlocal down
        agg.feed(lines_at(base, 1), base)
        await until(lambda: failures >= 1)
        for second in range(base + 1, base + 4):
            agg.feed(lines_at(second, 1), second)
            await until(lambda n=second - base + 1: len(writer.pending) >= n)  # cut anyway
        assert stats.flush_ticks_merged == 0
        down = False
        await until(lambda: not writer.pending)

    await run_flusher(store, failing_write, body)
    assert await stored(store, "busy.c", base, base + 4) == {
        second: 1.0 for second in range(base, base + 4)}


async def test_a_cut_made_a_batch_in_a_thread_stays_pending_until_the_writer_holds_it(
    store: Store,
) -> None:
    """What the pending_buckets gauge reads (aggregator + converting) and the writer's
    rows account for every metric-second at every moment of a large cut: an operator or
    scripts/bench waiting for "nothing pending" must not see 0 while it is converted."""
    base = int(time.time()) - 100
    names = 20_000  # well past INLINE_POINTS: converted in a thread, for some ms
    config = CollectorConfig(max_metrics=10 * names)
    stats = CollectorStats()
    agg = Aggregator(config, stats)
    gate = asyncio.Event()

    async def held_write(batch: Batch) -> WriteResult:
        await gate.wait()
        return await store.write_batch(batch)

    writer = DurableWriter(held_write, "test-flusher-converting", stats=stats)
    writer.start()
    flusher = Flusher(agg, config, stats, writer)
    agg.feed(b"\n".join(b"conv.m%d:1|c" % i for i in range(names)), base)
    agg.feed(b"\n".join(b"conv.m%d:1|c" % i for i in range(names)), base)
    assert agg.pending_buckets == names
    cutting = asyncio.create_task(flusher.cut(force=True))
    seen_converting = False
    while not cutting.done():
        await asyncio.sleep(0)
        accounted = agg.pending_buckets + flusher.converting + writer.pending_rows
        assert accounted == names, (agg.pending_buckets, flusher.converting)
        seen_converting |= flusher.converting == names
    await cutting
    assert seen_converting and flusher.converting == 0 and writer.pending_rows == names
    gate.set()
    await until(lambda: not writer.pending)
    await writer.close(10)
    assert len(await stored(store, "conv.m0", base, base + 1)) == 1
