"""The one durable writer: every batch of points (and of the sketches of their
metric-minutes), the collector's flushes and the HTTP service's group commits alike,
reaches the database through a DurableWriter, once. "Rows" below are both.

One error policy (``is_transient``), applied to every write and every replay:

- **transient** (``StoreUnavailable``: the database unreachable, a connection lost, even
  during COMMIT, a deadlock or lock wait timeout that outlived the store's own retries
  (MySQL 1213, 1205: store.mysql maps them to StoreUnavailable); or a write past its
  timeout): the database may take the batch later.
  It is retried with capped, jittered exponential backoff. Once writes have failed for
  ``spool_after`` seconds, or memory holds ``max_pending_rows`` rows, or someone waits
  for the batch (an HTTP request: it is acknowledged once durable, and must not wait out
  an outage), the batches in memory move to the spool, oldest first. The spool is
  replayed, in order, when the database answers again.
- **permanent** (any other error: a value the database refuses, MySQL's 1690 overflow,
  a constraint): retrying can never help, and a batch retried forever would hold up
  every batch behind it. The batch is split in halves, recursively and within a bounded
  number of writes, so that only the rows at fault are set aside; those go to the
  quarantine (``store.spool.Quarantine``) with the error and the time, logged once and
  counted, until an operator replays or discards them (``glowing-fiesta quarantine``).
  Everything else keeps flowing.

A batch stays where it is (memory, then spool) until the store has applied it or
reports it applied before: its ``(writer_id, seq)`` goes into the store's flushes table
in the same transaction, so a write retried after an ambiguous failure is applied
exactly once. The parts of a split batch get ids derived from the batch's own
(``split_id``), so a split retried after a crash applies each part once too.

One writer per process: ``glowing-fiesta run`` hands the same writer to its collector
and its HTTP service. Whoever creates it calls ``start`` and, once every producer has
stopped, ``close``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from protocol.names import Kind
from store.base import (
    Batch,
    PointRow,
    SketchRow,
    StoreError,
    StoreUnavailable,
    WriteResult,
    batch_rows,
)
from store.spool import Quarantine, Spool, SpoolError

log = logging.getLogger(__name__)

MAX_BACKOFF: Final = 10.0  # seconds; an outage ends at most this long before we notice
SPOOL_RETRY: Final = 5.0  # seconds before using a spool that failed again
ACK_TIMEOUT: Final = 2.0  # seconds a write someone waits for may take before it is spooled
ACK_ATTEMPTS: Final = 4  # without a spool: attempts before a waiter gets StoreUnavailable
SPLIT_WRITES: Final = 64  # writes one refused batch may take to isolate its bad rows

BatchWrite = Callable[[Batch], Awaitable[WriteResult]]


def new_writer_id(role: str) -> str:
    """Unique per process start: host, role, pid and randomness (<= 64 chars)."""
    host = socket.gethostname()[:24]
    return f"{host}:{role}:{os.getpid()}:{secrets.token_hex(4)}"


def split_id(batch: Batch) -> str:
    """The writer id of the parts of ``batch`` once it is split (part n is seq n >= 2):
    derived from the batch, so the same split after a restart gets the same ids."""
    digest = hashlib.sha256(f"{batch.writer_id}\0{batch.seq}".encode()).hexdigest()
    return "split:" + digest[:40]


def is_transient(exc: BaseException) -> bool:
    """The one error policy: True when retrying the same write may succeed."""
    return isinstance(exc, StoreUnavailable | TimeoutError | SpoolError)


def describe(exc: BaseException) -> str:
    """An exception for a log line: TimeoutError() has no message of its own."""
    text = str(exc)
    return text if text and isinstance(exc, StoreError) else type(exc).__name__ + (
        f": {text}" if text else "")


# Upper bounds in seconds: a flush is a few ms on SQLite and tens of ms on a remote
# MySQL; the top buckets catch lock waits and retries.
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Observations counted per bucket, exported at scrape time.

    ``counts[i]`` holds the observations in ``(bounds[i-1], bounds[i]]``; the last slot
    holds those above every bound (+Inf). Not cumulative: the exporter sums them.
    """

    bounds: tuple[float, ...] = FLUSH_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class WriterStats:
    """What a DurableWriter did. The collector's stats extend it (one set of counters
    for its /metrics); the HTTP service exports it from the writer."""

    flushes: int = 0  # batches written to the store
    flush_failures: int = 0  # writes that failed (transient: retried)
    flush_duplicates: int = 0  # batches found already applied on retry
    rows_flushed: int = 0  # point rows (WriteResult.rows)
    sketches_flushed: int = 0  # sketch rows merged (WriteResult.sketches)
    last_flush_seconds: float = 0.0
    flush_seconds_max: float = 0.0  # slowest successful write since start
    flush_timeouts: int = 0  # writes abandoned after their timeout (then retried)
    pending_batches: int = 0  # gauge: batches in memory waiting for the database
    pending_rows: int = 0  # gauge: their rows (here and below: points and sketches)
    spooled_batches: int = 0  # batches written to the local spool
    spooled_rows: int = 0
    spool_replayed_batches: int = 0  # spooled batches written to the database since
    spool_replayed_rows: int = 0
    spool_batches: int = 0  # gauge: batches in the spool now
    spool_rows: int = 0  # gauge
    spool_bytes: int = 0  # gauge: compressed size
    spool_failures: int = 0  # spool writes or reads that failed (full, disk error)
    replay_conflicts: int = 0  # metrics whose replayed points were dropped: kind conflict
    quarantined_batches: int = 0  # parts of refused batches set aside (permanent errors)
    quarantined_rows: int = 0
    quarantine_failures: int = 0  # refused rows the quarantine could not take (retried)
    rows_lost: int = 0  # rows neither written nor spooled at shutdown (logged as errors)
    flush_durations: Histogram = field(default_factory=Histogram)  # seconds


class Outcome(NamedTuple):
    """How a batch someone waited for became durable."""

    result: WriteResult  # a spooled batch: applied, all rows, no conflicts (found later)
    spooled: bool
    # (name, ts) of points refused for good: quarantined, or dropped without a quarantine
    refused: frozenset[tuple[str, int]]
    # (name, ts) of SketchRows refused for good (ts: their minute), the same way
    refused_sketches: frozenset[tuple[str, int]] = frozenset()


Refused = tuple[frozenset[tuple[str, int]], frozenset[tuple[str, int]]]  # points, sketches
NOTHING_REFUSED: Final[Refused] = (frozenset(), frozenset())


@dataclass(eq=False)
class _Pending:
    batch: Batch
    # Set for a batch someone waits for (HTTP ingest): resolved once written, spooled
    # or quarantined; None for the collector's flushes, which nobody awaits.
    done: asyncio.Future[Outcome] | None = None
    attempts: int = 0
    # Queued while writes were failing already (it went in as the next attempt): one
    # more failure is enough to give up on it, rather than waiting out the backoff.
    late: bool = False


class DurableWriter:
    def __init__(
        self,
        write: BatchWrite,
        writer_id: str,
        *,
        stats: WriterStats | None = None,
        spool: Spool | None = None,
        open_spool: Callable[[], Awaitable[Spool]] | None = None,
        quarantine: Quarantine | None = None,
        write_timeout: float = 10.0,
        ack_timeout: float = ACK_TIMEOUT,
        spool_after: float = 10.0,
        max_pending_rows: int = 500_000,
        store_ready: bool = True,
        on_conflicts: Callable[[Batch, dict[str, Kind]], None] | None = None,
    ) -> None:
        """``write``: the store's ``write_batch`` (tests pass stand-ins). ``spool``: one
        that is open already (it may hold batches from an earlier
        run; its owner closes it); ``open_spool``: how to open one when first needed.
        ``quarantine``: where refused rows go; without one they are logged and dropped
        (counted as lost). ``write_timeout``: seconds one write may take before it is
        abandoned (a stalled connection must not hold the writer); ``ack_timeout``: the
        same for a batch someone waits for (it is spooled then). ``on_conflicts``:
        told of points the store dropped because their name has the other kind, for
        batches nobody waits for (a waiter gets them in its Outcome)."""
        self.write = write
        self.writer_id = writer_id
        self.stats = stats if stats is not None else WriterStats()
        self.spool = spool
        self.open_spool = open_spool
        self.quarantine = quarantine
        self.write_timeout = write_timeout
        self.ack_timeout = ack_timeout
        self.spool_after = spool_after
        self.max_pending_rows = max_pending_rows
        self.on_conflicts = on_conflicts
        self.pending: deque[_Pending] = deque()  # newer than everything in the spool
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
        self._task: asyncio.Task[None] | None = None
        self._last_spool_log = -SPOOL_RETRY

    # -- producers ---------------------------------------------------------------

    def submit(
        self, points: list[PointRow], sketches: Sequence[SketchRow] = ()
    ) -> Batch | None:
        """Queue a batch nobody waits for (a collector flush): its points and the
        summaries of its metric-minutes (store.base.SketchRow). Returns the batch
        (see holds), None if there was nothing to queue."""
        if not points and not sketches:
            return None
        batch = self._next_batch(points, sketches)
        self._queue(_Pending(batch))
        return batch

    def holds(self, batch: Batch) -> bool:
        """Whether ``batch`` is still in memory here: queued or being written (not yet
        written, spooled or set aside)."""
        return any(entry.batch is batch for entry in self.pending)

    async def commit(
        self, points: list[PointRow], sketches: Sequence[SketchRow] = ()
    ) -> Outcome:
        """Queue a batch and wait until it is durable: written, spooled (when the store
        is down) or, for rows the store refuses for good, quarantined.

        Raises StoreUnavailable when it could be neither written nor spooled (no spool,
        or the spool failed too, past ``ACK_ATTEMPTS`` attempts): then it is not written
        later either (barring an ambiguous attempt that did commit).
        """
        if self._closing:
            raise StoreUnavailable("shutting down")
        batch = self._next_batch(points, sketches)
        if (self._failing_since is not None and not self._spool_usable()
                and time.monotonic() < self._retry_at):
            # The database is failing and the spool cannot take more (full, broken,
            # none): say so now rather than after a backoff that may be seconds long.
            # Past the backoff a request goes in as the next attempt, so recovery shows.
            raise StoreUnavailable("the database is unavailable and the spool cannot "
                                   "take the points")
        if self._failing_since is not None and self.spool is not None and self._spool_usable():
            # Writes are failing: straight to the spool, not behind a write in progress
            # that may take until its timeout (a hung database).
            try:
                await self.spool.put(batch)
            except SpoolError as exc:
                self._spool_failed(exc)
                # Neither the database nor the spool can take it now: say so at once.
                raise StoreUnavailable("the database is unavailable and the spool cannot "
                                       f"take the points ({exc})") from exc
            else:
                self.stats.spooled_batches += 1
                self.stats.spooled_rows += batch_rows(batch)
                self.update_gauges()
                return Outcome(WriteResult(True, len(points), {}, len(sketches)), True,
                               frozenset())
        entry = _Pending(batch, asyncio.get_running_loop().create_future(),
                         late=self._failing_since is not None)
        self._queue(entry)
        assert entry.done is not None
        # shield: a client that disconnects must not cancel the batch it shares
        return await asyncio.shield(entry.done)

    def _next_batch(self, points: list[PointRow], sketches: Sequence[SketchRow]) -> Batch:
        self._seq += 1
        return Batch(self.writer_id, self._seq, points, tuple(sketches))

    def _queue(self, entry: _Pending) -> None:
        self.pending.append(entry)
        self.pending_rows += batch_rows(entry.batch)
        self.update_gauges()
        self._wake.set()

    @property
    def can_spool(self) -> bool:
        """A batch the store cannot take now can be kept in a spool."""
        return self.spool is not None or self.open_spool is not None

    @property
    def failing_for(self) -> float | None:
        """Seconds writes have been failing (None: the last one worked)."""
        since = self._failing_since
        return None if since is None else time.monotonic() - since

    async def health(self) -> dict[str, object]:
        """What /healthz says of writing: ``status`` is "degraded" while the quarantine
        holds rows the store refused, or while writes fail (the data waits in memory or
        the spool), else "ok"; with the backlog either way."""
        body: dict[str, object] = {"status": "ok"}
        problems = []
        failing = self.failing_for
        if failing is not None:
            problems.append(f"database writes failing for {failing:.0f}s")
        if self.quarantine is not None:
            try:
                batches, rows = await self.quarantine.count()
            except SpoolError as exc:
                problems.append(str(exc))
                batches = rows = 0
            if batches:
                problems.append(f"{rows} refused row(s) in quarantine: see "
                                "`glowing-fiesta quarantine list`")
            body["quarantine_batches"] = batches
        if problems:
            body["status"] = "degraded"
            body["problems"] = problems
        body["pending_batches"] = len(self.pending)
        body["spool_batches"] = 0 if self.spool is None else self.spool.batches
        return body

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Write in the background until ``close``."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop())

    def mark_store_ready(self) -> None:
        """The schema is migrated (it was not at start-up): writing may begin."""
        self.store_ready.set()
        self._retry_at = 0.0
        self._wake.set()

    async def close(self, within: float) -> None:
        """Shutdown, once every producer has stopped: write what is pending, or spool
        it, ``within`` seconds; then stop.

        With a spool: when the database is failing (or the spool holds batches, which
        stay first) everything goes to the spool at once; else a write that fails sends
        the rest to the spool. What neither takes is logged as lost (and counted).
        """
        deadline = time.monotonic() + within
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task  # returns after the write in progress
            self._task = None
        can_spool = self.can_spool
        spool_first = self.spool is not None and self.spool.batches > 0
        healthy = self.store_ready.is_set() and self._failing_since is None
        if self.pending and (not can_spool or (healthy and not spool_first)):
            await self._write_all(deadline=deadline, memory_only=True, persist=not can_spool)
        if self.pending and can_spool:
            self._spool_retry_at = 0.0
            await self._spool_pending()
        if self.pending:  # the spool could not take them: the database is the last chance
            await self._write_all(deadline=deadline, memory_only=True, persist=True)
        if self.pending:
            self.stats.rows_lost += self.pending_rows
            log.error(
                "shutdown: %d batch(es) (%d rows) could not be written or spooled: lost",
                len(self.pending), self.pending_rows,
            )
            for entry in self.pending:
                if entry.done is not None and not entry.done.done():
                    entry.done.set_exception(StoreUnavailable("shutting down"))
                    entry.done.exception()  # retrieved: the waiter may have gone
        elif self.spool is not None and self.spool.batches:
            log.info("shutdown: the spool %s holds %d batch(es) (%d rows) for the next start",
                     self.spool.path, self.spool.batches, self.spool.rows)
        else:
            log.info("final flush done: %d rows flushed in total", self.stats.rows_flushed)
        if self.quarantine is not None:
            await self.quarantine.close()

    # -- the loop ----------------------------------------------------------------

    async def _write_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                now = time.monotonic()
                if not self.store_ready.is_set():
                    if self._failing_since is None:
                        self._failing_since = now  # an outage since start-up
                elif now >= self._retry_at:
                    await self._write_all(deadline=None)
                await self._maybe_spool()
            except Exception as exc:  # never let one bad step end the writer
                log.exception("writing failed unexpectedly; will retry")
                self._note_failure(exc)
            if self._closing:
                return
            delay = None  # until a producer (or mark_store_ready) wakes us
            if self._has_work() and self.store_ready.is_set():
                delay = self._retry_at - time.monotonic()
                if delay <= 0:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _has_work(self) -> bool:
        return bool(self.pending) or self._spool_has_work()

    def _spool_has_work(self) -> bool:
        spool = self.spool
        return spool is not None and spool.batches > 0 and time.monotonic() >= self._spool_retry_at

    def _spool_usable(self) -> bool:
        return self.can_spool and time.monotonic() >= self._spool_retry_at

    async def _write_all(
        self, *, deadline: float | None, memory_only: bool = False, persist: bool = False
    ) -> None:
        """Write until nothing is left or a write fails: the spool first (oldest data),
        except that a batch someone waits for goes before a spool backlog.

        At shutdown (a ``deadline``), ``persist`` retries a failed write until the
        deadline instead of returning.
        """
        while True:
            if deadline is None:
                if self._closing:
                    return
                limit = self.write_timeout
            else:
                limit = min(self.write_timeout, deadline - time.monotonic())
                if limit <= 0:
                    return
            waited_for = bool(self.pending) and self.pending[0].done is not None
            if not memory_only and not waited_for and self._spool_has_work():
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
        entry = self.pending[0]
        if entry.done is not None:
            limit = min(limit, self.ack_timeout)
        try:
            result, (points, sketches) = await self._apply(entry.batch, limit)
        except Exception as exc:
            self._note_failure(exc, entry.batch)
            self._give_up_waiters(exc)
            return False
        self._pop_head()
        if entry.done is not None:
            if not entry.done.done():
                entry.done.set_result(Outcome(result, False, points, sketches))
        elif result.conflicts and self.on_conflicts is not None:
            self.on_conflicts(entry.batch, result.conflicts)
        return True

    def _give_up_waiters(self, exc: BaseException) -> None:
        """After a failed write, when the spool cannot take batches either: a batch
        someone waits for that has seen ``ACK_ATTEMPTS`` failures (one, if writes were
        failing when it came) is given up (neither written nor spooled; the waiter is
        told, and it is not written later)."""
        if self._spool_usable():
            return
        kept: deque[_Pending] = deque()
        for entry in self.pending:
            if entry.done is not None:
                entry.attempts += 1
                if entry.attempts >= (1 if entry.late else ACK_ATTEMPTS) or self._closing:
                    self.pending_rows -= batch_rows(entry.batch)
                    if not entry.done.done():
                        entry.done.set_exception(StoreUnavailable(
                            f"the database cannot take the points now ({describe(exc)})"))
                        entry.done.exception()  # retrieved: the waiter may have gone
                    continue
            kept.append(entry)
        self.pending = kept
        self.update_gauges()

    def _pop_head(self) -> None:
        entry = self.pending.popleft()  # only the writer pops: the head is still ``entry``
        self.pending_rows -= batch_rows(entry.batch)
        self.update_gauges()

    async def _replay_one(self, limit: float) -> bool:
        assert self.spool is not None
        try:
            spooled = await self.spool.head()
        except SpoolError as exc:
            self._spool_failed(exc)
            return True  # go on with memory; the spool is retried later
        if spooled is None:
            return True
        batch = spooled.batch
        try:
            result, _ = await self._apply(batch, limit)
        except Exception as exc:
            self._note_failure(exc, batch)
            self._give_up_waiters(exc)
            return False
        try:
            # A crash before this replays the batch once more at start-up: the flushes
            # table makes that second write a no-op (applied=False).
            await self.spool.remove(spooled)
        except SpoolError as exc:
            self._spool_failed(exc)
            return True
        self.stats.spool_replayed_batches += 1
        self.stats.spool_replayed_rows += batch_rows(batch)
        if result.conflicts:
            self.stats.replay_conflicts += len(result.conflicts)
            log.warning("spooled batch %s/%d: points of %d metric(s) dropped, stored with "
                        "the other kind: %s", batch.writer_id, batch.seq, len(result.conflicts),
                        ", ".join(f"{n} ({k})" for n, k in sorted(result.conflicts.items())[:10]))
            if self.on_conflicts is not None:
                self.on_conflicts(batch, result.conflicts)
        if self.spool.batches == 0:
            log.info("spool %s drained: %d batch(es) (%d rows) replayed since start",
                     self.spool.path, self.stats.spool_replayed_batches,
                     self.stats.spool_replayed_rows)
        self.update_gauges()
        return True

    # -- one write, and the policy -------------------------------------------------

    async def _apply(self, batch: Batch, limit: float) -> tuple[WriteResult, Refused]:
        """Write ``batch``; on a permanent error, write what can be written and set the
        rest aside. Returns (result, the (name, ts) of the points and of the sketches
        quarantined); raises on a transient error (the batch stays where it is)."""
        try:
            result = await self._write(batch, limit)
        except Exception as exc:
            if is_transient(exc):
                raise
            return await self._set_aside(batch, exc, limit)
        return result, NOTHING_REFUSED

    async def _write(self, batch: Batch, limit: float) -> WriteResult:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.write(batch), limit)
        except TimeoutError:
            self.stats.flush_timeouts += 1
            raise
        self._note_success(batch, result, time.perf_counter() - started)
        return result

    async def _set_aside(
        self, batch: Batch, error: BaseException, limit: float
    ) -> tuple[WriteResult, Refused]:
        """The store refused ``batch`` for good: halve it until the refused parts are
        single rows (or ``SPLIT_WRITES`` writes are spent), write the rest, quarantine
        the refused parts. A transient error meanwhile raises: the whole batch is tried
        again later, and the parts written already are found in the flushes table.

        The halves split the batch's rows as one list, its points then its sketches, so
        a bad sketch is isolated like a bad point (and a part may hold both). Each
        row of a part merges into the store as it would have in the whole batch (adding
        is adding, in any grouping), but for one thing: a gauge with two rows for one
        minute in a refused batch may keep the earlier one (parts are not written in
        row order). One row per gauge-minute, as the collector sends, is not affected.
        """
        part_id = split_id(batch)
        points, sketches = batch.points, list(batch.sketches)
        boundary = len(points)

        def part(n: int, low: int, high: int) -> Batch:
            """Rows [low, high) of the combined list, as a batch of its own."""
            return Batch(part_id, n, points[low:min(high, boundary)],
                         tuple(sketches[max(low, boundary) - boundary:
                                        max(high, boundary) - boundary]))

        conflicts: dict[str, Kind] = {}
        written = written_sketches = 0
        refused: list[tuple[Batch, str]] = []
        parts: list[tuple[int, int, int, BaseException]] = [
            (1, 0, boundary + len(sketches), error)]
        writes = 0
        while parts:
            index, low, high, exc = parts.pop()
            if high - low <= 1 or writes >= SPLIT_WRITES:
                refused.append((part(index, low, high), describe(exc)))
                continue
            middle = (low + high) // 2
            for n, half_low, half_high in ((2 * index + 1, middle, high),
                                           (2 * index, low, middle)):
                writes += 1
                try:
                    result = await self._write(part(n, half_low, half_high), limit)
                except Exception as part_exc:
                    if is_transient(part_exc):
                        raise
                    parts.append((n, half_low, half_high, part_exc))
                    continue
                written += result.rows
                written_sketches += result.sketches
                conflicts.update(result.conflicts)
        quarantined: set[tuple[str, int]] = set()
        quarantined_sketches: set[tuple[str, int]] = set()
        for part_batch, reason in refused:
            await self._quarantine(batch, part_batch, reason)
            quarantined.update((name, ts) for name, _kind, ts, *_ in part_batch.points)
            quarantined_sketches.update((name, ts) for name, _kind, ts, _data
                                        in part_batch.sketches)
        return (WriteResult(True, written, conflicts, written_sketches),
                (frozenset(quarantined), frozenset(quarantined_sketches)))

    async def _quarantine(self, original: Batch, part: Batch, reason: str) -> None:
        rows = batch_rows(part)
        if self.quarantine is None:
            self.stats.rows_lost += rows
            log.error("the store refused %d row(s) of batch %s/%d for good (%s); no "
                      "quarantine: dropped", rows, original.writer_id, original.seq, reason)
            return
        try:
            await self.quarantine.put(part, reason)
        except SpoolError as exc:
            self.stats.quarantine_failures += 1
            log.error("cannot quarantine %d refused row(s): %s", rows, exc)
            raise
        self.stats.quarantined_batches += 1
        self.stats.quarantined_rows += rows
        log.error(
            "the store refused %d row(s) of batch %s/%d for good (%s): set aside in %s as "
            "%s/%d; every other row is written. `glowing-fiesta quarantine list` shows "
            "them, `quarantine replay` or `discard` ends it",
            rows, original.writer_id, original.seq, reason, self.quarantine.path,
            part.writer_id, part.seq,
        )

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
            stats.sketches_flushed += result.sketches
        else:
            stats.flush_duplicates += 1
            log.info("batch %s/%d was applied before; not applied again",
                     batch.writer_id, batch.seq)

    def _note_failure(self, exc: BaseException, batch: Batch | None = None) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        self.stats.flush_failures += 1
        backoff = min(MAX_BACKOFF, 0.05 * 2 ** min(self._failures, 10))
        backoff *= random.uniform(0.8, 1.0)  # many writers must not retry in step
        self._retry_at = now + backoff
        log.warning(
            "write of %s failed (%s); %d batch(es) (%d rows) in memory, %d spooled; "
            "retry in %.1fs",
            f"{batch_rows(batch)} rows" if batch is not None else "a batch",
            describe(exc), len(self.pending), self.pending_rows,
            self.spool.batches if self.spool is not None else 0, backoff,
        )

    # -- spooling ----------------------------------------------------------------

    async def _maybe_spool(self) -> None:
        """Move the batches in memory to the spool once the bound is passed."""
        if not self.pending or not self._spool_usable():
            return
        failing = self._failing_since
        failing_long = failing is not None and (
            time.monotonic() - failing >= self.spool_after
            or any(entry.done is not None for entry in self.pending)  # someone waits
        )
        if failing_long or self.pending_rows >= self.max_pending_rows:
            await self._spool_pending()

    async def _spool_pending(self) -> None:
        entries = list(self.pending)
        try:
            if self.spool is None:
                if self.open_spool is None:
                    return
                self.spool = await self.open_spool()
                log.info("opened the spool %s", self.spool.path)
            count = await self.spool.put_many([entry.batch for entry in entries])
        except SpoolError as exc:
            self._spool_failed(exc)
            return
        rows = 0
        for entry in entries[:count]:  # producers only append: the left end is unchanged
            self.pending.popleft()
            rows += batch_rows(entry.batch)
            if entry.done is not None and not entry.done.done():
                result = WriteResult(True, len(entry.batch.points), {},
                                     len(entry.batch.sketches))
                entry.done.set_result(Outcome(result, True, frozenset()))
        self.pending_rows -= rows
        self.stats.spooled_batches += count
        self.stats.spooled_rows += rows
        self.update_gauges()
        now = time.monotonic()
        if count and now - self._last_spool_log >= SPOOL_RETRY * 2:  # one line per 10 s
            self._last_spool_log = now
            log.info("spooled %d batch(es) (%d rows); the spool holds %d (%d rows, %d bytes)",
                     count, rows, self.spool.batches, self.spool.rows, self.spool.bytes)
        if count < len(entries):
            self._spool_failed(SpoolError(
                f"spool full ({self.spool.bytes} bytes of --spool-max-bytes "
                f"{self.spool.max_bytes}); {len(entries) - count} batch(es) wait in memory"
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
