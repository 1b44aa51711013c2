"""Group commit: concurrent ingest requests share one batch, one transaction.

An HTTP ingest may answer 200 only once its points are committed, or durably spooled
when the database is down (DESIGN §4), and a commit costs about the same for 1 point as
for 1,000 (one transaction, one fsync). So requests are not written one by one:

- The first request to arrive opens a *group* and a timer of ``window`` seconds;
  requests arriving meanwhile join the group. Their rows are merged per (name, kind,
  second) as they join, so a group is one batch however many requests it holds.
  The window is skipped when the previous group had no company (a lone client, or
  the first request of a burst): waiting would only add latency, and the rest of a
  burst still gathers behind that request's commit.
- When the window ends, the group waits for the single write slot (one batch in
  flight at a time) and keeps accepting requests while it waits: the slower the
  store, the larger the groups, which is what keeps a slow store from falling behind.
  A group that reaches ``max_rows`` closes early; the next request opens a new one.
- The group is written as one ``Batch(writer_id, seq, rows)``. Every request of the
  group is answered from that one result: success, with the kind conflicts that
  concern its own points, or the failure.

The write itself is ``write``, any ``async (Batch) -> WriteResult``: usually
``store.write_batch``.

Without a spool, a write that fails with ``StoreUnavailable`` is retried with the
*same* (writer_id, seq), so a commit that succeeded but whose acknowledgement was lost
is applied once (the store's flush-idempotency table). Past ``retry_delays`` the
requests get the error (the HTTP layer answers 503).

With a ``spool`` (``collector.spool.Spool``) the store is down only for the store:

- One bounded attempt: ``write`` for at most ``write_timeout`` seconds. When it fails
  with ``StoreUnavailable`` (the database unreachable, the connection lost, including
  during COMMIT, where the transaction may or may not have been applied) or times out
  (a hung database; the abandoned write may still commit), the *same* batch, with the
  same (writer_id, seq), goes to the spool, and the group is answered success once
  ``Spool.put`` returned, that is once the batch is fsync'd.
- After a failed attempt the store counts as down for ``probe_interval`` seconds:
  groups meanwhile go straight to the spool instead of each waiting out a timeout.
- When the spool cannot take the batch either (``SpoolFull``, ``SpoolError``), the
  batch is retried in the store as without a spool (``retry_delays``, each attempt
  bounded by ``write_timeout``) and, failing that, the requests get the error: a batch
  is acknowledged only once it is written or spooled. (An ambiguous first attempt may
  have committed after all: a retry then finds its (writer_id, seq) applied and the
  requests get 200. Only if every retry fails as well can a 503 cover points that did
  get stored, exactly as without a spool.)
- A spooled batch is replayed later with its original (writer_id, seq): if its first
  COMMIT did reach the database, the flushes table finds it and it is not applied
  twice. The replay is ``drain``'s job when this committer owns the spool
  (``glowing-fiesta serve``); in ``glowing-fiesta run`` the spool is the collector's,
  and its flusher drains it.

Kind conflicts of a spooled batch are found only when it is replayed: the requests
were answered 200 already, so the store drops the points of the other kind then, and
they are logged and counted (``CommitStats.replay_conflicts``), never answered 409.
Requests checked against known kinds first (``query.ingest``), so only a name created
with the other kind by another process during the outage can get there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from collector.spool import BatchWriter, Spool, SpoolError, drain_forever
from protocol.buckets import merge
from protocol.names import Kind
from store.base import Batch, PointRow, StoreUnavailable, WriteResult

log = logging.getLogger(__name__)

RETRY_DELAYS: Final = (0.05, 0.2, 0.5)  # seconds before the 2nd, 3rd, 4th attempt
WRITE_TIMEOUT: Final = 2.0  # seconds one write may take, with a spool, before spooling
PROBE_INTERVAL: Final = 0.5  # seconds the store counts as down after a failed write
REPLAY_TIMEOUT: Final = 10.0  # seconds one replay of a spooled batch may take
DRAIN_INTERVAL: Final = 1.0  # seconds between looks at an empty spool; first backoff
DRAIN_MAX_DELAY: Final = 5.0  # seconds between replay attempts, at most


@dataclass
class CommitStats:
    batches: int = 0  # batches written (one per group)
    requests: int = 0  # requests acknowledged (written or spooled)
    rows: int = 0  # rows in the batches written
    failures: int = 0  # groups whose write failed for good (neither written nor spooled)
    retries: int = 0  # write attempts after StoreUnavailable
    spooled: int = 0  # groups acknowledged once spooled (the store was down)
    spooled_rows: int = 0
    spool_failures: int = 0  # spool puts that failed (spool full, I/O error)
    replayed: int = 0  # spooled batches replayed into the store by ``drain``
    replayed_rows: int = 0
    replay_conflicts: int = 0  # metrics whose replayed points were dropped: kind conflict


@dataclass(eq=False)
class _Group:
    # (name, kind, ts) -> [cnt, sum, mn, mx]: the requests' rows, merged
    buckets: dict[tuple[str, Kind, int], list[float]] = field(default_factory=dict)
    requests: int = 0
    # loop.time() when the first request opened it: the window runs from here. (Not
    # from when _run first runs: under load that is after every request already in
    # the loop's queue has been handled, and a window counted from there made the
    # group wait for nothing while the CPU sat idle: 4.6k single POSTs/s, 7k after.)
    opened: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    closed: bool = False  # writing (or full): new requests open the next group
    full: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[WriteResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def add(self, rows: Iterable[PointRow]) -> None:
        buckets = self.buckets
        for name, kind, ts, cnt, total, mn, mx in rows:
            bucket = buckets.get((name, kind, ts))
            if bucket is None:
                buckets[(name, kind, ts)] = [cnt, total, mn, mx]
            else:
                merge(bucket, cnt, total, mn, mx)
        self.requests += 1

    def points(self) -> list[PointRow]:
        return [(name, kind, ts, b[0], b[1], b[2], b[3])
                for (name, kind, ts), b in self.buckets.items()]


class GroupCommitter:
    def __init__(
        self,
        write: BatchWriter,
        writer_id: str,
        *,
        window: float,
        max_rows: int = 50_000,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        spool: Spool | None = None,
        drain: bool = False,
        write_timeout: float = WRITE_TIMEOUT,
        probe_interval: float = PROBE_INTERVAL,
        replay_timeout: float = REPLAY_TIMEOUT,
    ) -> None:
        """``spool``: where a batch goes when the store cannot take it (see the module
        docstring); its owner opens and closes it. ``drain``: replay that spool into
        the store with ``write`` in a background task, from now until ``close`` (only
        with a spool no one else drains). Needs a running event loop when ``drain``."""
        self.write = write
        self.writer_id = writer_id
        self.window = window
        self.max_rows = max_rows
        self.retry_delays = retry_delays
        self.spool = spool
        self.write_timeout = write_timeout
        self.probe_interval = probe_interval
        self.replay_timeout = replay_timeout
        self.stats = CommitStats()
        self._seq = 0
        self._group: _Group | None = None
        self._write_slot = asyncio.Lock()  # FIFO: groups commit in the order they opened
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._company = False  # did the last group hold more than one request?
        self._down_until = 0.0  # monotonic time before which writes go to the spool
        self._store_back = asyncio.Event()  # a write worked: replay now, not after backoff
        self._drainer: asyncio.Task[None] | None = None
        if drain and spool is not None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain(spool))

    @property
    def pending(self) -> int:
        """Groups opened and not yet answered."""
        return len(self._tasks)

    async def commit(self, rows: list[PointRow]) -> dict[str, Kind]:
        """Commit ``rows`` with whatever else arrives in the window.

        Returns the kind conflicts among *these* rows (name -> stored kind; such rows
        were not written). Raises StoreError if the batch could be neither committed
        nor spooled. A spooled batch reports no conflicts (they are found at replay).
        """
        if self._closing:
            raise StoreUnavailable("the HTTP service is shutting down")
        group = self._group
        if group is None or group.closed:
            group = self._group = _Group()
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        group.add(rows)
        if len(group.buckets) >= self.max_rows:
            group.closed = True
            group.full.set()
        # shield: a client that disconnects must not cancel the others' commit
        result = await asyncio.shield(group.done)
        if not result.conflicts:
            return {}
        return {
            name: stored for name, kind, *_ in rows
            if (stored := result.conflicts.get(name)) is not None and stored != kind
        }

    async def close(self) -> None:
        """Refuse new requests, wait until every open group is answered (written or
        spooled), then stop draining the spool (what it holds waits for the next start)."""
        self._closing = True
        group = self._group
        if group is not None:
            group.full.set()  # no point waiting out the window
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._drainer is not None:
            # Cancelling mid-replay is safe: the batch stays in the spool until removed,
            # and a replay that did commit is found in the flushes table next time.
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
            self._drainer = None

    async def _run(self, group: _Group) -> None:
        try:
            remaining = group.opened + self.window - asyncio.get_running_loop().time()
            if self._company and remaining > 0 and not group.full.is_set():
                with contextlib.suppress(TimeoutError):  # the window passed: go
                    await asyncio.wait_for(group.full.wait(), remaining)
            async with self._write_slot:
                group.closed = True
                points = group.points()
                self._seq += 1
                batch = Batch(self.writer_id, self._seq, points)
                if self.spool is None:
                    result = await self._write_with_retries(batch)
                    spooled = False
                else:
                    result, spooled = await self._write_or_spool(batch, self.spool)
        except asyncio.CancelledError:
            group.done.cancel()
            raise
        except Exception as exc:
            self.stats.failures += 1
            group.done.set_exception(exc)
            group.done.exception()  # retrieved: every waiter may have gone
            return
        self._company = group.requests > 1
        self.stats.requests += group.requests
        if spooled:
            self.stats.spooled += 1
            self.stats.spooled_rows += len(points)
        else:
            self.stats.batches += 1
            self.stats.rows += len(points)
        group.done.set_result(result)

    async def _write_with_retries(
        self, batch: Batch, *, limit: float | None = None
    ) -> WriteResult:
        for delay in (*self.retry_delays, None):
            try:
                if limit is None:
                    return await self.write(batch)
                return await asyncio.wait_for(self.write(batch), limit)
            except (StoreUnavailable, TimeoutError) as exc:
                if delay is None:
                    log.warning("commit of %d rows failed for good: %s", len(batch.points),
                                _describe(exc))
                    if isinstance(exc, TimeoutError):
                        raise StoreUnavailable(
                            f"the database did not answer within {limit}s") from exc
                    raise
                self.stats.retries += 1
                log.info("commit of %d rows failed (%s); retrying in %.2fs",
                         len(batch.points), _describe(exc), delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _write_or_spool(self, batch: Batch, spool: Spool) -> tuple[WriteResult, bool]:
        """Write ``batch`` (one bounded attempt), else spool it; (result, spooled)."""
        if time.monotonic() >= self._down_until:
            try:
                result = await asyncio.wait_for(self.write(batch), self.write_timeout)
            except (StoreUnavailable, TimeoutError) as exc:
                # Possibly committed (lost during COMMIT, or abandoned at the timeout):
                # the spool keeps (writer_id, seq), so a replay applies it at most once.
                self._down_until = time.monotonic() + self.probe_interval
                log.info("commit of %d rows failed (%s); spooling it",
                         len(batch.points), _describe(exc))
            else:
                self._down_until = 0.0
                if spool.batches:
                    self._store_back.set()
                return result, False
        try:
            await spool.put(batch)
        except SpoolError as exc:
            self.stats.spool_failures += 1
            log.error("cannot spool a batch of %d rows (%s): trying the database again",
                      len(batch.points), exc)
            return await self._write_with_retries(batch, limit=self.write_timeout), False
        return WriteResult(True, len(batch.points), {}), True

    async def _drain(self, spool: Spool) -> None:
        """Replay the spool, oldest batch first, each under its original (writer_id,
        seq); back off while the store fails, at once when a write worked again. Runs
        until ``close`` cancels it."""
        await drain_forever(
            spool, self.write, asyncio.Event(), interval=DRAIN_INTERVAL,
            max_delay=DRAIN_MAX_DELAY, write_timeout=self.replay_timeout,
            wake=self._store_back, on_written=self._replayed,
        )

    def _replayed(self, batch: Batch, result: WriteResult) -> None:
        self._down_until = 0.0  # the store answers again
        self.stats.replayed += 1
        self.stats.replayed_rows += len(batch.points)
        if not result.applied:
            log.info("spooled batch %s/%d was applied before; not applied again",
                     batch.writer_id, batch.seq)
        if result.conflicts:
            self.stats.replay_conflicts += len(result.conflicts)
            log.warning("spooled batch %s/%d: points of %d metric(s) dropped, stored with "
                        "the other kind: %s", batch.writer_id, batch.seq,
                        len(result.conflicts),
                        ", ".join(f"{n} ({k})" for n, k in sorted(result.conflicts.items())[:10]))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
