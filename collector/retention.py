"""Retention: delete expired points in small chunks while ingest goes on.

Every ``retention_interval`` the collector runs one pass over each level (points_1s
for ``retention_raw``, the rollups points_1m and points_1h for theirs, and the
summaries sketch_1m and sketch_1h for those of the point level of their step):
``delete_points_before`` (at most ``retention_chunk`` rows per metric per statement,
each statement its own short transaction) until it finds nothing more, resting after
each call as long as the call took, so retention takes at most about half of one
database connection and a flush never queues behind more than one chunk. Then flush
records past their use are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from collector.config import CollectorConfig
from collector.stats import CollectorStats
from store.base import Store, StoreError
from store.rollups import SKETCH_LEVELS, SKETCH_RETENTION

log = logging.getLogger(__name__)

MIN_PAUSE: Final = 0.01  # seconds between two chunk calls, at least
# A flush record guards its batch against a second application. Batches only come back
# from memory (seconds) or the spool; a spooled batch older than the raw retention holds
# expired points anyway, so records are kept for the retention plus this slack.
FLUSH_RECORD_SLACK: Final = 86_400


def retention_levels(config: CollectorConfig) -> list[tuple[str, int]]:
    """(table, seconds kept) for each level, raw first. A minute's (hour's) summary is
    kept as long as its points_1m (points_1h) row: a percentile answers wherever the
    count does."""
    points = [
        ("points_1s", config.retention_raw),
        ("points_1m", config.retention_1m),
        ("points_1h", config.retention_1h),
    ]
    keep = dict(points)
    return points + [(table, keep[SKETCH_RETENTION[table]]) for table, _ in SKETCH_LEVELS]


async def retention_pass(
    store: Store,
    before: int,
    chunk: int,
    *,
    table: str = "points_1s",
    flush_records_before: int | None = None,
    stats: CollectorStats | None = None,
    stopping: asyncio.Event | None = None,
    pace: bool = True,
) -> int:
    """Delete rows of ``table`` older than ``before`` until none is left; return how many.

    Raises StoreError (rows deleted so far stay deleted; the next pass goes on).
    """
    total = 0
    while stopping is None or not stopping.is_set():
        started = time.monotonic()
        deleted = await store.delete_points_before(before, chunk, table=table)
        total += deleted
        if stats is not None:
            stats.retention_rows_deleted += deleted
        if not deleted:
            break
        if pace:
            # Rest as long as we worked: at most half of one connection's time.
            await _sleep(max(MIN_PAUSE, time.monotonic() - started), stopping)
    if flush_records_before is not None and (stopping is None or not stopping.is_set()):
        records = await store.delete_flush_records_before(flush_records_before)
        if stats is not None:
            stats.retention_flush_records_deleted += records
    return total


async def run_retention(
    store: Store,
    config: CollectorConfig,
    stats: CollectorStats,
    ready: asyncio.Event,
    stopping: asyncio.Event,
) -> None:
    """One pass now (after the store is ready), then one every ``retention_interval``."""
    interval = config.retention_interval
    while not stopping.is_set():
        await ready.wait()
        now = int(time.time())
        started = time.monotonic()
        deleted = 0
        try:
            for table, keep in retention_levels(config):
                raw = table == "points_1s"
                deleted += await retention_pass(
                    store, now - keep, config.retention_chunk, table=table,
                    flush_records_before=now - keep - FLUSH_RECORD_SLACK if raw else None,
                    stats=stats, stopping=stopping,
                )
        except StoreError as exc:
            stats.retention_failures += 1
            log.warning("retention pass failed (%s); next pass in %.0fs", exc, interval)
        else:
            stats.retention_passes += 1
            stats.retention_last_seconds = time.monotonic() - started
            if deleted:
                log.info("retention: deleted %d expired rows in %.1fs",
                         deleted, stats.retention_last_seconds)
        await _sleep(interval, stopping)


async def _sleep(seconds: float, stopping: asyncio.Event | None) -> None:
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
