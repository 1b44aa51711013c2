"""Group commit: concurrent ingest requests share one batch, one transaction.

An HTTP ingest may answer 200 only once its points are committed (DESIGN §4), and a
commit costs about the same for 1 point as for 1,000 (one transaction, one fsync).
So requests are not written one by one:

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

A write that fails with ``StoreUnavailable`` is retried with the *same* (writer_id,
seq), so a commit that succeeded but whose acknowledgement was lost is applied once
(the store's flush-idempotency table). Past ``retry_delays`` the requests get the
error (the HTTP layer answers 503).

The write itself is ``write``, any ``async (Batch) -> WriteResult``: today
``store.write_batch``. A durable spool slots in there: a writer that appends the batch
to the local spool when the store is down and returns success once the spool has
fsynced it, draining the spool in ``seq`` order later. Nothing in this class changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from protocol.names import Kind
from store.base import Batch, PointRow, StoreUnavailable, WriteResult

log = logging.getLogger(__name__)

BatchWriter = Callable[[Batch], Awaitable[WriteResult]]
RETRY_DELAYS: Final = (0.05, 0.2, 0.5)  # seconds before the 2nd, 3rd, 4th attempt


@dataclass
class CommitStats:
    batches: int = 0  # batches written (one per group)
    requests: int = 0  # requests acknowledged by those batches
    rows: int = 0  # rows in those batches
    failures: int = 0  # groups whose write failed for good
    retries: int = 0  # write attempts after StoreUnavailable


@dataclass(eq=False)
class _Group:
    # (name, kind, ts) -> [cnt, sum, mn, mx]: the requests' rows, merged
    buckets: dict[tuple[str, Kind, int], list[float]] = field(default_factory=dict)
    requests: int = 0
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
                bucket[0] += cnt
                bucket[1] += total
                if mn < bucket[2]:
                    bucket[2] = mn
                if mx > bucket[3]:
                    bucket[3] = mx
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
    ) -> None:
        self.write = write
        self.writer_id = writer_id
        self.window = window
        self.max_rows = max_rows
        self.retry_delays = retry_delays
        self.stats = CommitStats()
        self._seq = 0
        self._group: _Group | None = None
        self._write_slot = asyncio.Lock()  # FIFO: groups commit in the order they opened
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._company = False  # did the last group hold more than one request?

    @property
    def pending(self) -> int:
        """Groups opened and not yet answered."""
        return len(self._tasks)

    async def commit(self, rows: list[PointRow]) -> dict[str, Kind]:
        """Commit ``rows`` with whatever else arrives in the window.

        Returns the kind conflicts among *these* rows (name -> stored kind; such rows
        were not written). Raises StoreError if the batch could not be committed.
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
        """Refuse new requests and wait until every open group is answered."""
        self._closing = True
        group = self._group
        if group is not None:
            group.full.set()  # no point waiting out the window
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, group: _Group) -> None:
        try:
            if self._company and not group.full.is_set():
                with contextlib.suppress(TimeoutError):  # the window passed: go
                    await asyncio.wait_for(group.full.wait(), self.window)
            async with self._write_slot:
                group.closed = True
                points = group.points()
                self._seq += 1
                batch = Batch(self.writer_id, self._seq, points)
                result = await self._write_with_retries(batch)
        except asyncio.CancelledError:
            group.done.cancel()
            raise
        except Exception as exc:
            self.stats.failures += 1
            group.done.set_exception(exc)
            group.done.exception()  # retrieved: every waiter may have gone
            return
        self._company = group.requests > 1
        self.stats.batches += 1
        self.stats.requests += group.requests
        self.stats.rows += len(points)
        group.done.set_result(result)

    async def _write_with_retries(self, batch: Batch) -> WriteResult:
        for delay in (*self.retry_delays, None):
            try:
                return await self.write(batch)
            except StoreUnavailable as exc:
                if delay is None:
                    log.warning("commit of %d rows failed for good: %s", len(batch.points), exc)
                    raise
                self.stats.retries += 1
                log.info("commit of %d rows failed (%s); retrying in %.2fs",
                         len(batch.points), exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
