"""Cuts the aggregator's buckets into batches for the durable writer, every interval.

A batch carries the per-second points and, beside them, one SketchRow per
metric-minute: that minute's summary since the last cut (store.base.SketchRow), which
the store merges into what it holds.

The ticker runs whatever the database does; everything after the cut (writing, retries,
the spool, the quarantine) is ``store.durable.DurableWriter``'s. While the writer holds
``max_pending_rows`` rows in memory (the spool cannot take more: disk full,
``--spool-max-bytes``; or a slow write), the ticker stops cutting: the buckets stay in
the aggregator, whose ``max_pending_buckets`` cap drops new samples, counted as
overload. So memory is bounded by about those two caps, whatever the database and the
spool do.

A write costs about as much per metric whether it holds one second of it or several
(a B-tree page per metric and level, the minute and hour rollup rows, one sketch merge
per metric-minute). So with many active series, the flusher writes fewer, larger
batches rather than falling behind (a group commit). A tick does not cut while the
last write took more than ``--flush-write-share`` of the time since the last cut, nor
while the last batch is still being written. Meanwhile the samples keep merging in the
aggregator's buckets, and the next batch holds every second since (up to MAX_MERGED
buckets: a batch must stay a write well inside --flush-timeout). A quick database still
gets a batch every interval; a failing one too (the batches must reach the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Final

from collector.aggregator import Aggregator, Buckets, Sketches
from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.hll import DistinctCount
from protocol.lines import Reason
from protocol.names import GAUGE, SET, VALUE, Kind
from protocol.summary import encode_last
from store.base import Batch, PointRow, SketchRow
from store.durable import DurableWriter

log = logging.getLogger(__name__)

# The longest a slow write stretches the interval, in intervals (a one-off slow write,
# such as the first one, which creates every metric, must not hold the next for long).
MAX_STRETCH: Final = 10
# Nor past this many buckets and summaries in the aggregator: a merged batch must stay a
# write that ends well inside --flush-timeout (MariaDB upserts ~150k rows/s here, plus
# the rollups and the sketch merges), or it would time out and be retried whole.
MAX_MERGED: Final = 200_000
# How often a tick waiting for the previous batch's write looks again.
WRITER_POLL: Final = 0.02
INLINE_POINTS: Final = 5_000  # build larger batches in a thread, off the event loop
# A summary costs more than a point to encode (a sketch of many bins, an HLL of up to
# 8 KB): this many count as one INLINE_POINTS budget.
SUMMARY_COST: Final = 10


def buckets_to_points(buckets: Buckets) -> list[PointRow]:
    return [
        (name, bucket[4], ts, bucket[0], bucket[1], bucket[2], bucket[3])
        for ts, table in buckets.items()
        for name, bucket in table.items()
    ]


def sketches_to_rows(sketches: Sketches) -> list[SketchRow]:
    """The SketchRows of taken summaries: value, the sketch's bytes; set, the HLL's;
    gauge, the minute's last value (protocol.summary.encode_last)."""
    rows: list[SketchRow] = []
    for minute, table in sketches.items():
        for name, summary in table.items():
            if type(summary) is float:
                rows.append((name, GAUGE, minute, encode_last(summary)))
            elif isinstance(summary, DistinctCount):
                rows.append((name, SET, minute, summary.to_bytes()))
            else:  # protocol.sketch.Sketch, or the C sketch of the same bytes
                rows.append((name, VALUE, minute, summary.to_bytes()))
    return rows


def to_batch(buckets: Buckets, sketches: Sketches) -> tuple[list[PointRow], list[SketchRow]]:
    return buckets_to_points(buckets), sketches_to_rows(sketches)


class Flusher:
    def __init__(
        self,
        aggregator: Aggregator,
        config: CollectorConfig,
        stats: CollectorStats,
        writer: DurableWriter,
    ) -> None:
        self.aggregator = aggregator
        self.config = config
        self.stats = stats
        self.writer = writer
        self._last_batch: Batch | None = None  # the last batch cut, until it is written
        self._last_cut = -math.inf  # time.monotonic() of that cut
        # Metric-seconds taken from the aggregator and not yet handed to the writer (a
        # large cut is made a batch in a thread): pending, though in neither's count.
        self.converting = 0
        # past this many pending buckets a tick cuts, whatever the last write did
        self._merge_cap = min(MAX_MERGED, config.max_pending_buckets // 2)

    async def run(self, stopping: asyncio.Event) -> None:
        """Cut a batch every interval (unless the last write was slow or is unfinished:
        see the module docstring) until ``stopping``; ``cut(force=True)`` then takes
        the last one."""
        interval = self.config.flush_interval
        next_tick = time.monotonic()
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
            if self._stretched():
                self.stats.flush_ticks_merged += 1
                continue
            await self._while_writing(stopping)
            if stopping.is_set():
                break
            try:
                await self.cut()
            except Exception:  # never let one bad tick end the flushing task
                log.exception("cutting a batch failed unexpectedly")

    def _stretched(self) -> bool:
        """Whether the last write took more than --flush-write-share of the time since
        the last cut, for at most MAX_STRETCH intervals (a failing database, or an
        aggregator holding MAX_MERGED buckets or half its cap, is never waited for)."""
        writer = self.writer
        if writer.failing_for is not None or self.aggregator.pending_buckets >= self._merge_cap:
            return False
        since = time.monotonic() - self._last_cut
        if since >= MAX_STRETCH * self.config.flush_interval:
            return False
        return since * self.config.flush_write_share < writer.stats.last_flush_seconds

    async def _while_writing(self, stopping: asyncio.Event) -> None:
        """Wait while the last batch cut is still in the writer's memory (being written,
        or queued behind HTTP batches), the writes are succeeding, and the aggregator
        holds less than MAX_MERGED buckets and half its cap. A failing database (the
        batches must reach the spool), a full aggregator or shutdown cut at once."""
        writer = self.writer
        last = self._last_batch
        waited = False
        while (last is not None and writer.holds(last) and writer.failing_for is None
               and self.aggregator.pending_buckets < self._merge_cap
               and not stopping.is_set()):
            waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=WRITER_POLL)
        if waited:
            self.stats.flush_ticks_merged += 1

    async def cut(self, *, force: bool = False) -> None:
        """Hand the aggregator's buckets to the writer as the next batch.

        Skipped (unless ``force``) while the writer holds ``max_pending_rows`` rows:
        the buckets wait in the aggregator, which caps them.
        """
        if not force and self.writer.pending_rows >= self.config.max_pending_rows:
            self.stats.backpressure_skips += 1
            return
        buckets, sketches = self.aggregator.take()
        rows = sum(map(len, buckets.values()))  # one table per second: a short sum
        summaries = sum(map(len, sketches.values()))  # one per minute: shorter
        if not rows and not summaries:
            return
        if rows + SUMMARY_COST * summaries > INLINE_POINTS:
            self.converting = rows
            try:
                points, sketch_rows = await asyncio.to_thread(to_batch, buckets, sketches)
            finally:
                self.converting = 0
        else:
            points, sketch_rows = to_batch(buckets, sketches)
        self._last_batch = self.writer.submit(points, sketch_rows)
        self._last_cut = time.monotonic()

    def count_conflicts(self, batch: Batch, conflicts: dict[str, Kind]) -> None:
        """Another process fixed these names with the other kind first."""
        self.aggregator.learn_kinds(conflicts)
        for name, kind, _ts, cnt, *_rest in batch.points:
            stored = conflicts.get(name)
            if stored is not None and stored != kind:
                self.stats.drop(
                    Reason.KIND_CONFLICT, round(cnt), f"{name}: {kind} samples for a {stored}"
                )
