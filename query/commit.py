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
- The group is written as one ``Batch(writer_id, seq, rows, sketches)``. Requests'
  sketches for the same (name, minute) are merged into one (``protocol.summary.merge``)
  when the group is written, so a batch holds each key once whatever the requests.
  Every request of the group is answered from that one result: success, with the kind
  conflicts that concern its own points, or the failure.

The group is then handed to the process's durable writer (``store.durable``), which
writes it, or spools it when the database is down (acknowledged once fsync'd), or sets
aside the rows the store refuses for good: retries, the spool, the quarantine and their
one error policy live there. Every request of the group is answered from that one
outcome: success, with the kind conflicts that concern its own points; 503 when the
points could be neither written nor spooled; an error naming the refused points when
some of its rows went to the quarantine.

Kind conflicts of a spooled batch are found only when it is replayed: the requests
were answered 200 already, so the store drops the points of the other kind then, and
they are logged and counted (``WriterStats.replay_conflicts``), never answered 409.
Requests are checked against known kinds first (``query.ingest``), so only a name
created with the other kind by another process during the outage can get there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.buckets import merge
from protocol.names import Kind
from protocol.summary import merge as merge_summaries
from store.base import PointRow, SketchRow, StoreError, StoreUnavailable
from store.durable import DurableWriter, Outcome

log = logging.getLogger(__name__)


class Quarantined(StoreError):
    """The store refused some of the request's points for good (the rest of its points
    are written); they are set aside in the quarantine (``glowing-fiesta quarantine
    list``) where the process has one."""

    def __init__(self, points: int) -> None:
        super().__init__(
            f"the database refused {points} of these points for good; the other points "
            "were recorded, the refused ones set aside for an operator (see the log)")
        self.points = points


@dataclass
class CommitStats:
    batches: int = 0  # groups written (one batch each)
    requests: int = 0  # requests acknowledged (written or spooled)
    rows: int = 0  # rows in the groups written
    failures: int = 0  # groups neither written nor spooled (answered 503)
    spooled: int = 0  # groups acknowledged once spooled (the store was down)
    spooled_rows: int = 0
    quarantined: int = 0  # groups some of whose rows the store refused for good


@dataclass(eq=False)
class _Group:
    # (name, kind, ts) -> [cnt, sum, mn, mx]: the requests' rows, merged
    buckets: dict[tuple[str, Kind, int], list[float]] = field(default_factory=dict)
    # (name, kind, minute) -> the requests' summaries of it, merged when written
    summaries: dict[tuple[str, Kind, int], list[bytes]] = field(default_factory=dict)
    requests: int = 0
    # loop.time() when the first request opened it: the window runs from here. (Not
    # from when _run first runs: under load that is after every request already in
    # the loop's queue has been handled, and a window counted from there made the
    # group wait for nothing while the CPU sat idle: 4.6k single POSTs/s, 7k after.)
    opened: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    closed: bool = False  # writing (or full): new requests open the next group
    full: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def add(self, rows: Iterable[PointRow], sketches: Iterable[SketchRow] = ()) -> None:
        buckets = self.buckets
        for name, kind, ts, cnt, total, mn, mx in rows:
            bucket = buckets.get((name, kind, ts))
            if bucket is None:
                buckets[(name, kind, ts)] = [cnt, total, mn, mx]
            else:
                merge(bucket, cnt, total, mn, mx)
        summaries = self.summaries
        for name, kind, ts, data in sketches:
            summaries.setdefault((name, kind, ts), []).append(data)
        self.requests += 1

    def points(self) -> list[PointRow]:
        return [(name, kind, ts, b[0], b[1], b[2], b[3])
                for (name, kind, ts), b in self.buckets.items()]

    def sketches(self) -> list[SketchRow]:
        """One summary per key: the requests' merged (they were validated when made)."""
        return [(name, kind, ts, blobs[0] if len(blobs) == 1 else merge_summaries(kind, blobs))
                for (name, kind, ts), blobs in self.summaries.items()]


class GroupCommitter:
    def __init__(self, writer: DurableWriter, *, window: float, max_rows: int = 50_000) -> None:
        """``writer``: the process's durable writer (its owner starts and closes it)."""
        self.writer = writer
        self.window = window
        self.max_rows = max_rows
        self.stats = CommitStats()
        self._group: _Group | None = None
        self._write_slot = asyncio.Lock()  # FIFO: groups commit in the order they opened
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._company = False  # did the last group hold more than one request?

    @property
    def pending(self) -> int:
        """Groups opened and not yet answered."""
        return len(self._tasks)

    async def commit(
        self, rows: list[PointRow], sketches: list[SketchRow] | None = None
    ) -> dict[str, Kind]:
        """Commit ``rows`` (and the summaries ``sketches``, of the same points) with
        whatever else arrives in the window.

        Returns the kind conflicts among *these* rows (name -> stored kind; such rows
        were not written). Raises StoreUnavailable if the batch could be neither
        committed nor spooled, Quarantined if the store refused some of these rows for
        good. A spooled batch reports no conflicts (they are found at replay).
        """
        if self._closing:
            raise StoreUnavailable("the HTTP service is shutting down")
        group = self._group
        if group is None or group.closed:
            group = self._group = _Group()
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        group.add(rows, sketches or ())
        if len(group.buckets) >= self.max_rows:
            group.closed = True
            group.full.set()
        # shield: a client that disconnects must not cancel the others' commit
        outcome = await asyncio.shield(group.done)
        if outcome.refused:
            refused = sum((name, ts) in outcome.refused for name, _kind, ts, *_ in rows)
            if refused:
                raise Quarantined(refused)
        conflicts = outcome.result.conflicts
        if not conflicts:
            return {}
        return {
            name: stored for name, kind, *_ in rows
            if (stored := conflicts.get(name)) is not None and stored != kind
        }

    async def close(self) -> None:
        """Refuse new requests and wait until every open group is answered (written,
        spooled or failed); the writer's owner closes the writer after this."""
        self._closing = True
        group = self._group
        if group is not None:
            group.full.set()  # no point waiting out the window
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, group: _Group) -> None:
        try:
            remaining = group.opened + self.window - asyncio.get_running_loop().time()
            if self._company and remaining > 0 and not group.full.is_set():
                with contextlib.suppress(TimeoutError):  # the window passed: go
                    await asyncio.wait_for(group.full.wait(), remaining)
            # One group in the writer at a time: the next one keeps gathering requests
            # meanwhile, so the slower the store, the larger the groups.
            async with self._write_slot:
                group.closed = True
                points = group.points()
                outcome = await self.writer.commit(points, group.sketches())
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
        if outcome.spooled:
            self.stats.spooled += 1
            self.stats.spooled_rows += len(points)
        else:
            self.stats.batches += 1
            self.stats.rows += len(points)
        if outcome.refused:
            self.stats.quarantined += 1
        group.done.set_result(outcome)
