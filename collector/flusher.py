"""Moves buckets from the aggregator to the store, once per flush interval.

Each flush becomes one Batch with the next sequence number of this writer; a batch
stays at the head of the queue until the store has applied it (or reports it applied
before), so a failure in the middle of COMMIT is retried with the same (writer, seq)
and counted once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from typing import Final

from collector.aggregator import Aggregator, Buckets
from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.lines import Reason
from protocol.names import Kind
from store.base import Batch, PointRow, Store, StoreError

log = logging.getLogger(__name__)

INLINE_POINTS: Final = 5_000  # build larger batches in a thread, off the event loop
MAX_BACKOFF: Final = 30.0


def new_writer_id(role: str) -> str:
    """Unique per process start: host, role, pid and randomness (<= 64 chars)."""
    host = socket.gethostname()[:24]
    return f"{host}:{role}:{os.getpid()}:{secrets.token_hex(4)}"


def buckets_to_points(buckets: Buckets) -> list[PointRow]:
    return [
        (name, bucket[4], ts, bucket[0], bucket[1], bucket[2], bucket[3])
        for (name, ts), bucket in buckets.items()
    ]


class Flusher:
    def __init__(
        self,
        store: Store,
        aggregator: Aggregator,
        config: CollectorConfig,
        stats: CollectorStats,
        writer_id: str,
    ) -> None:
        self.store = store
        self.aggregator = aggregator
        self.config = config
        self.stats = stats
        self.writer_id = writer_id
        self.pending: deque[Batch] = deque()
        self._seq = 0
        self._failures = 0  # consecutive
        self._retry_at = 0.0

    @property
    def pending_rows(self) -> int:
        return sum(len(batch.points) for batch in self.pending)

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every interval until ``stopping`` is set (the final flush is separate)."""
        interval = self.config.flush_interval
        next_tick = time.monotonic()
        while not stopping.is_set():
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # a slow flush: skip the missed ticks, don't burst
                next_tick = time.monotonic()
                delay = 0
            try:
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
            else:
                return
            try:
                await self.flush()
            except Exception:  # never let one bad flush end the flushing task
                log.exception("flush failed unexpectedly; will retry")

    async def flush(self, *, force: bool = False) -> bool:
        """Queue the aggregator's buckets as a batch and write what is queued.

        Returns True when nothing is left pending. Unless ``force``, a flush during
        backoff only queues.
        """
        buckets = self.aggregator.take()
        if buckets:
            if len(buckets) > INLINE_POINTS:
                points = await asyncio.to_thread(buckets_to_points, buckets)
            else:
                points = buckets_to_points(buckets)
            self._seq += 1
            self.pending.append(Batch(self.writer_id, self._seq, points))
        if not force and time.monotonic() < self._retry_at:
            return not self.pending
        return await self._write_pending()

    async def _write_pending(self) -> bool:
        while self.pending:
            batch = self.pending[0]
            started = time.perf_counter()
            try:
                result = await self.store.write_batch(batch)
            except StoreError as exc:
                self._failures += 1
                self.stats.flush_failures += 1
                backoff = min(MAX_BACKOFF, 0.25 * 2 ** min(self._failures, 10))
                self._retry_at = time.monotonic() + backoff
                log.warning(
                    "flush of %d rows failed (%s); %d batch(es) pending, retry in %.1fs",
                    len(batch.points), exc, len(self.pending), backoff,
                )
                return False
            self.pending.popleft()
            self._failures = 0
            self._retry_at = 0.0
            self.stats.flushes += 1
            self.stats.last_flush_seconds = time.perf_counter() - started
            if result.applied:
                self.stats.rows_flushed += result.rows
            else:
                self.stats.flush_duplicates += 1
                log.info("batch %s/%d was applied before; not applied again",
                         batch.writer_id, batch.seq)
            if result.conflicts:
                self._count_conflicts(batch, result.conflicts)
        return True

    def _count_conflicts(self, batch: Batch, conflicts: dict[str, Kind]) -> None:
        """Another process fixed these names with the other kind first."""
        self.aggregator.learn_kinds(conflicts)
        for name, kind, _ts, cnt, *_rest in batch.points:
            stored = conflicts.get(name)
            if stored is not None and stored != kind:
                self.stats.drop(
                    Reason.KIND_CONFLICT, round(cnt), f"{name}: {kind} samples for a {stored}"
                )
