"""Moves buckets from the aggregator to the store, through the spool when it must.

Two tasks. The ticker cuts the aggregator's buckets into the next Batch of this writer
every flush interval, whatever the database does. The writer owns everything after:
it writes the oldest batch first (the spool, then memory), and a batch stays where it
is until the store has applied it or reports it applied before, so a failure in the
middle of COMMIT is retried with the same (writer_id, seq) and counted once.

While writes fail, they are retried with capped exponential backoff; once they have
failed for ``spool_after`` seconds (or memory holds more than ``max_pending_rows``
rows) the batches in memory move to the local spool, oldest first, so memory stays
bounded however long the outage lasts. When the database answers again the spool is
drained in order before anything newer. While memory holds ``max_pending_rows`` rows
(the spool cannot take more: disk full, ``--spool-max-bytes``; or the writer is inside
a slow write), the ticker stops cutting batches: the buckets stay in the aggregator,
whose ``max_pending_buckets`` cap drops new samples, counted as overload. So memory is
bounded by about those two caps, whatever the database and the spool do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from collector.aggregator import Aggregator, Buckets
from collector.config import CollectorConfig
from collector.spool import Spool, SpoolError, replay_one
from collector.stats import CollectorStats, LogLimiter
from protocol.lines import Reason
from protocol.names import Kind
from store.base import Batch, PointRow, Store, StoreError, WriteResult

log = logging.getLogger(__name__)

INLINE_POINTS: Final = 5_000  # build larger batches in a thread, off the event loop
MAX_BACKOFF: Final = 10.0  # seconds; an outage ends at most this long before we notice
SPOOL_RETRY: Final = 5.0  # seconds before using a spool that failed again


def new_writer_id(role: str) -> str:
    """Unique per process start: host, role, pid and randomness (<= 64 chars)."""
    host = socket.gethostname()[:24]
    return f"{host}:{role}:{os.getpid()}:{secrets.token_hex(4)}"


def describe(exc: BaseException) -> str:
    """An exception for a log line: TimeoutError() has no message of its own."""
    text = str(exc)
    return text if text and isinstance(exc, StoreError) else type(exc).__name__ + (
        f": {text}" if text else "")


def buckets_to_points(buckets: Buckets) -> list[PointRow]:
    return [
        (name, bucket[4], ts, bucket[0], bucket[1], bucket[2], bucket[3])
        for ts, table in buckets.items()
        for name, bucket in table.items()
    ]


class Flusher:
    def __init__(
        self,
        store: Store,
        aggregator: Aggregator,
        config: CollectorConfig,
        stats: CollectorStats,
        writer_id: str,
        *,
        spool: Spool | None = None,
        open_spool: Callable[[], Awaitable[Spool]] | None = None,
        store_ready: bool = True,
    ) -> None:
        """``spool``: one that is open already (it may hold batches from an earlier
        run); ``open_spool``: how to open one when first needed, if ``spool`` is None."""
        self.store = store
        self.aggregator = aggregator
        self.config = config
        self.stats = stats
        self.writer_id = writer_id
        self.spool = spool
        self.open_spool = open_spool
        self.pending: deque[Batch] = deque()  # newer than everything in the spool
        self.pending_rows = 0
        # Set once the schema is known to be migrated; until then nothing is written.
        self.store_ready = asyncio.Event()
        if store_ready:
            self.store_ready.set()
        self._seq = 0
        self._failures = 0  # consecutive
        self._failing_since: float | None = None  # monotonic time of the first failure
        self._retry_at = 0.0
        self._spool_retry_at = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        self._limited_log = LogLimiter(log)  # one "spooled" line per 10 s in an outage

    # -- tasks -----------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Cut a batch every interval and write in the background until ``stopping``.

        Returns after the write in progress (bounded by ``flush_timeout``); ``finish``
        then does the final flush.
        """
        writer = asyncio.create_task(self._write_loop())
        interval = self.config.flush_interval
        next_tick = time.monotonic()
        try:
            while not stopping.is_set():
                next_tick += interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # a slow tick: skip the missed ones, don't burst
                    next_tick = time.monotonic()
                    delay = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                if stopping.is_set():
                    break
                try:
                    await self.cut()
                except Exception:  # never let one bad tick end the flushing task
                    log.exception("cutting a batch failed unexpectedly")
                self._wake.set()
        finally:
            self._closing = True
            self._wake.set()
            await writer

    async def cut(self, *, force: bool = False) -> None:
        """Turn the aggregator's buckets into the next batch of this writer.

        Skipped (unless ``force``) while memory holds ``max_pending_rows`` rows (until
        the writer spools or writes them): the buckets wait in the aggregator, which
        caps them.
        """
        if not force and self.pending_rows >= self.config.max_pending_rows:
            self.stats.backpressure_skips += 1
            return
        buckets = self.aggregator.take()
        rows = sum(map(len, buckets.values()))  # one table per second: a short sum
        if not rows:
            return
        if rows > INLINE_POINTS:
            points = await asyncio.to_thread(buckets_to_points, buckets)
        else:
            points = buckets_to_points(buckets)
        self._seq += 1
        self.pending.append(Batch(self.writer_id, self._seq, points))
        self.pending_rows += len(points)
        self.update_gauges()

    def mark_store_ready(self) -> None:
        """The schema is migrated (it was not at start-up): writing may begin."""
        self.store_ready.set()
        self._retry_at = 0.0
        self._wake.set()

    async def _write_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._step()
            except Exception as exc:
                log.exception("flush failed unexpectedly; will retry")
                self._note_failure(exc)
            if self._closing:
                return
            delay = None  # until the ticker (or mark_store_ready) wakes us
            if self._has_work() and self.store_ready.is_set():
                delay = self._retry_at - time.monotonic()
                if delay <= 0:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _step(self) -> None:
        now = time.monotonic()
        if not self.store_ready.is_set():
            if self._failing_since is None:
                self._failing_since = now  # an outage since start-up
        elif now >= self._retry_at:
            await self._write_all(deadline=None)
        await self._maybe_spool()

    async def finish(self, within: float) -> None:
        """Shutdown: cut the last batch, then write it, or spool it, ``within`` seconds.

        Call after ``run`` returned. With a spool: when the database is failing (or the
        spool already holds batches, which must stay first) everything goes to the
        spool at once; else a write that fails sends the rest to the spool.
        """
        deadline = time.monotonic() + within
        await self.cut(force=True)
        can_spool = self.spool is not None or self.open_spool is not None
        spool_first = self.spool is not None and self.spool.batches > 0
        healthy = self.store_ready.is_set() and self._failing_since is None
        if self.pending and (not can_spool or (healthy and not spool_first)):
            await self._write_all(deadline=deadline, memory_only=True, persist=not can_spool)
        if self.pending and can_spool:
            self._spool_retry_at = 0.0
            await self._spool_pending()
        if self.pending:  # the spool could not take them: the database is the last chance
            await self._write_all(deadline=deadline, memory_only=True, persist=True)
        spool = self.spool
        if self.pending:
            self.stats.rows_lost += self.pending_rows
            log.error(
                "shutdown: %d batch(es) (%d rows) could not be flushed or spooled: lost",
                len(self.pending), self.pending_rows,
            )
        elif spool is not None and spool.batches:
            log.info("shutdown: the spool %s holds %d batch(es) (%d rows) for the next start",
                     spool.path, spool.batches, spool.rows)
        else:
            log.info("final flush done: %d rows flushed in total", self.stats.rows_flushed)

    # -- writing ---------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self.pending) or self._spool_has_work()

    def _spool_has_work(self) -> bool:
        spool = self.spool
        return spool is not None and spool.batches > 0 and time.monotonic() >= self._spool_retry_at

    def _spool_usable(self) -> bool:
        return (self.spool is not None or self.open_spool is not None) and (
            time.monotonic() >= self._spool_retry_at
        )

    async def _write_all(
        self, *, deadline: float | None, memory_only: bool = False, persist: bool = False
    ) -> None:
        """Write the oldest batches first until none is left or one fails.

        At shutdown (a ``deadline``), ``persist`` retries a failed write until the
        deadline instead of returning.
        """
        while True:
            if deadline is None:
                if self._closing:
                    return
                limit = self.config.flush_timeout
            else:
                limit = min(self.config.flush_timeout, deadline - time.monotonic())
                if limit <= 0:
                    return
            if not memory_only and self._spool_has_work():
                ok = await self._replay_one(limit)
            elif self.pending:
                ok = await self._write_head(limit)
            else:
                return
            if not ok:
                if deadline is None or not persist:
                    return
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            elif deadline is None:
                # Draining a long spool: what arrives meanwhile must not pile up in memory.
                await self._maybe_spool()

    async def _write_head(self, limit: float) -> bool:
        batch = self.pending[0]
        if await self._write(batch, limit) is None:
            return False
        self.pending.popleft()  # only this task pops: the head is still ``batch``
        self.pending_rows -= len(batch.points)
        self.update_gauges()
        return True

    async def _replay_one(self, limit: float) -> bool:
        assert self.spool is not None
        started = time.perf_counter()
        try:
            done = await replay_one(self.spool, self.store.write_batch, write_timeout=limit)
        except SpoolError as exc:
            self._spool_failed(exc)
            return True  # go on with memory; the spool is retried later
        except (StoreError, TimeoutError) as exc:
            self._note_failure(exc)
            return False
        if done is not None:
            batch, result = done
            self.stats.spool_replayed_batches += 1
            self.stats.spool_replayed_rows += len(batch.points)
            self._note_success(batch, result, time.perf_counter() - started)
            if self.spool.batches == 0:
                log.info("spool drained: %d batch(es) (%d rows) replayed since start",
                         self.stats.spool_replayed_batches, self.stats.spool_replayed_rows)
        self.update_gauges()
        return True

    async def _write(self, batch: Batch, limit: float) -> WriteResult | None:
        """One write of ``batch``, abandoned after ``limit`` seconds (a stalled
        connection must not hold the flusher: aiomysql closes a cancelled connection)."""
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.store.write_batch(batch), limit)
        except (StoreError, TimeoutError) as exc:
            self._note_failure(exc, batch)
            return None
        self._note_success(batch, result, time.perf_counter() - started)
        return result

    def _note_success(self, batch: Batch, result: WriteResult, seconds: float) -> None:
        if self._failing_since is not None:
            log.info("database writes work again after %.1fs",
                     time.monotonic() - self._failing_since)
        self._failures = 0
        self._failing_since = None
        self._retry_at = 0.0
        stats = self.stats
        stats.flushes += 1
        stats.last_flush_seconds = seconds
        stats.flush_seconds_max = max(stats.flush_seconds_max, seconds)
        stats.flush_durations.observe(seconds)
        if result.applied:
            stats.rows_flushed += result.rows
        else:
            stats.flush_duplicates += 1
            log.info("batch %s/%d was applied before; not applied again",
                     batch.writer_id, batch.seq)
        if result.conflicts:
            self._count_conflicts(batch, result.conflicts)

    def _note_failure(self, exc: BaseException, batch: Batch | None = None) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        self.stats.flush_failures += 1
        if isinstance(exc, TimeoutError):
            self.stats.flush_timeouts += 1
        backoff = min(MAX_BACKOFF, 0.25 * 2 ** min(self._failures, 10))
        backoff *= random.uniform(0.8, 1.0)  # many collectors must not retry in step
        self._retry_at = now + backoff
        log.warning(
            "flush of %s failed (%s); %d batch(es) (%d rows) in memory, %d spooled; "
            "retry in %.1fs",
            f"{len(batch.points)} rows" if batch is not None else "a spooled batch",
            describe(exc), len(self.pending), self.pending_rows,
            self.spool.batches if self.spool is not None else 0, backoff,
        )

    # -- spooling --------------------------------------------------------------

    async def _maybe_spool(self) -> None:
        """Move the batches in memory to the spool once the bound is passed."""
        if not self.pending or not self._spool_usable():
            return
        failing = self._failing_since
        if (
            failing is not None and time.monotonic() - failing >= self.config.spool_after
        ) or self.pending_rows >= self.config.max_pending_rows:
            await self._spool_pending()

    async def _spool_pending(self) -> None:
        try:
            if self.spool is None:
                if self.open_spool is None:
                    return
                self.spool = await self.open_spool()
                log.info("opened the spool %s", self.spool.path)
            batches = list(self.pending)
            count = await self.spool.put_many(batches)
        except SpoolError as exc:
            self._spool_failed(exc)
            return
        rows = 0
        for _ in range(count):  # the ticker only appends: the left end is unchanged
            rows += len(self.pending.popleft().points)
        self.pending_rows -= rows
        self.stats.spooled_batches += count
        self.stats.spooled_rows += rows
        self.update_gauges()
        if count:
            self._limited_log.log(
                "spooled", logging.INFO,
                "spooled %d batch(es) (%d rows); the spool holds %d (%d rows, %d bytes)",
                count, rows, self.spool.batches, self.spool.rows, self.spool.bytes,
            )
        if count < len(batches):
            self._spool_failed(SpoolError(
                f"spool full ({self.spool.bytes} bytes of --spool-max-bytes "
                f"{self.spool.max_bytes}); {len(batches) - count} batch(es) wait in memory"
            ))

    def _spool_failed(self, exc: OSError) -> None:
        self.stats.spool_failures += 1
        self._spool_retry_at = time.monotonic() + SPOOL_RETRY
        log.error("spool: %s; retry in %.0fs", exc, SPOOL_RETRY)

    def update_gauges(self) -> None:
        stats = self.stats
        stats.pending_batches = len(self.pending)
        stats.pending_rows = self.pending_rows
        if self.spool is not None:
            stats.spool_batches = self.spool.batches
            stats.spool_rows = self.spool.rows
            stats.spool_bytes = self.spool.bytes

    def _count_conflicts(self, batch: Batch, conflicts: dict[str, Kind]) -> None:
        """Another process fixed these names with the other kind first."""
        self.aggregator.learn_kinds(conflicts)
        for name, kind, _ts, cnt, *_rest in batch.points:
            stored = conflicts.get(name)
            if stored is not None and stored != kind:
                self.stats.drop(
                    Reason.KIND_CONFLICT, round(cnt), f"{name}: {kind} samples for a {stored}"
                )
