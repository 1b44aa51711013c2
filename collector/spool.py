"""A local, fsync'd spool of whole Batches: where flushes wait while the database is down.

One SQLite file per process in the state directory (``spool-<role>.sqlite``; a second
process of the same role takes ``spool-<role>.1.sqlite`` and so on), held with an
exclusive ``flock`` so two processes never drain the same file. The lock dies with its
process, so a restart after SIGKILL takes the same file back and drains what is left.
The collector claims a left-over file at start-up (``create=False``) and creates one
only when it first has to spool, so a healthy run writes nothing to the state directory.

A batch keeps its ORIGINAL ``(writer_id, seq)`` in the spool: a batch whose COMMIT did
reach the database before the connection died is found in the ``flushes`` table when it
is replayed and is not applied twice.

Layout: ``batches(id, writer_id, seq, rows, bytes, spooled_at)`` in spool order, and
``chunks(batch_id, n, data)``: the points of a batch in runs of ``CHUNK_POINTS``, each
``zlib(orjson([[name, kind, ts, cnt, sum, mn, mx], ...]))``. Chunks bound the time any one
encode or decode call holds the GIL (a 100k-point batch in one orjson call held it for
~30 ms, stalling the event loop), and zlib shrinks the repetitive names ~5x.

All SQLite work, encoding and decoding run in one worker thread per spool; the event
loop only awaits. ``synchronous = FULL`` in WAL mode: a ``put`` returns once the batch is
on disk (fsync'd), so an HTTP ingest may acknowledge a spooled batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, NamedTuple, TypeVar, cast

import orjson

from protocol.names import Kind
from store.base import Batch, PointRow, StoreError, WriteResult

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT_VERSION: Final = 1  # PRAGMA user_version of a spool file
CHUNK_POINTS: Final = 2_000  # points per stored chunk (~0.5 ms of encoding each)
MAX_FILES_PER_ROLE: Final = 64

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS batches (
        id INTEGER PRIMARY KEY,
        writer_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        spooled_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS chunks (
        batch_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (batch_id, n))""",
)


class SpoolError(OSError):
    """The spool cannot take or give back a batch (disk full, I/O error, locked)."""


class SpoolFull(SpoolError):
    """Taking the batch would pass the spool's byte budget (``--spool-max-bytes``)."""


class SpooledBatch(NamedTuple):
    id: int  # spool order
    batch: Batch
    bytes: int


def encode_points(points: Sequence[PointRow]) -> list[bytes]:
    """The stored chunks of a batch's points."""
    return [
        zlib.compress(orjson.dumps(points[start : start + CHUNK_POINTS]), 1)
        for start in range(0, len(points), CHUNK_POINTS)
    ]


def decode_points(chunks: Sequence[bytes]) -> list[PointRow]:
    points: list[PointRow] = []
    for chunk in chunks:
        for name, kind, ts, cnt, total, mn, mx in orjson.loads(zlib.decompress(chunk)):
            points.append((name, cast(Kind, kind), ts, cnt, total, mn, mx))
    return points


class Spool:
    """A durable FIFO of Batches in one SQLite file. Open with ``await Spool.open(...)``.

    ``batches``, ``rows`` and ``bytes`` describe what the spool holds right now (written
    only by the worker thread; read them from anywhere).
    """

    def __init__(self, path: Path, lock_fd: int, *, max_bytes: int = 0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.batches = 0
        self.rows = 0
        self.bytes = 0
        self.corrupt_rows = 0  # rows of damaged batches discarded (never seen in practice)
        self._loaded = False  # the file opened and read fine (else close never deletes it)
        self._lock_fd: int | None = lock_fd
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gf-spool")

    @classmethod
    async def open(cls, state_dir: Path, role: str, *, max_bytes: int = 0) -> Spool:
        """Take the first spool file of ``role`` in ``state_dir`` no live process holds,
        creating the directory and the file if needed.

        Raises SpoolError when the directory is not writable or every file is taken.
        """
        claimed = await asyncio.to_thread(_claim_file, Path(state_dir), role, True)
        assert claimed is not None
        return await cls._opened(*claimed, max_bytes=max_bytes)

    @classmethod
    async def open_existing(
        cls, state_dir: Path, role: str, *, max_bytes: int = 0
    ) -> Spool | None:
        """Take a spool file of ``role`` that exists and no live process holds (one left
        by a process that died), or return None. Creates nothing."""
        claimed = await asyncio.to_thread(_claim_file, Path(state_dir), role, False)
        if claimed is None:
            return None
        return await cls._opened(*claimed, max_bytes=max_bytes)

    @classmethod
    async def _opened(cls, path: Path, lock_fd: int, *, max_bytes: int) -> Spool:
        spool = cls(path, lock_fd, max_bytes=max_bytes)
        try:
            await spool._call(spool._open)
        except BaseException:
            await spool.close()
            raise
        return spool

    # -- the API ---------------------------------------------------------------

    async def put(self, batch: Batch) -> None:
        """Append ``batch``; returns once it is fsync'd. Raises SpoolFull or SpoolError."""
        if await self.put_many([batch]) != 1:
            raise SpoolFull(
                f"spool {self.path} is full ({self.bytes} bytes, budget {self.max_bytes})"
            )

    async def put_many(self, batches: Sequence[Batch]) -> int:
        """Append ``batches`` in order, in one transaction (one fsync).

        Returns how many went in: fewer than given when the byte budget ran out (the
        ones that fit are a prefix). Raises SpoolError on I/O errors (nothing went in).
        """
        if not batches:
            return 0
        return await self._call(lambda conn: self._put_many(conn, batches))

    async def head(self) -> SpooledBatch | None:
        """The oldest batch, or None when the spool is empty."""
        if not self.batches:
            return None
        return await self._call(self._head)

    async def remove(self, spooled: SpooledBatch) -> None:
        """Forget a batch the database has applied (fsync'd before returning)."""
        rows = len(spooled.batch.points)
        await self._call(lambda conn: self._remove(conn, spooled.id, rows, spooled.bytes))

    async def close(self) -> None:
        """Close the file and release it; an empty spool file is deleted (the lock file
        stays: deleting it could let two processes hold "the" lock at once)."""

        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._loaded and self.batches == 0 and self._lock_fd is not None:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")

        with contextlib.suppress(RuntimeError):  # already shut down
            await asyncio.get_running_loop().run_in_executor(self._thread, close_connection)
        await asyncio.to_thread(self._thread.shutdown)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- worker thread ---------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                if self._conn is None:
                    self._conn = _connect(self.path)
                return fn(self._conn)
            except (sqlite3.Error, zlib.error, ValueError) as exc:
                if self._conn is not None and self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise SpoolError(f"spool {self.path}: {exc}") from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except RuntimeError as exc:  # executor shut down
            raise SpoolError(f"spool {self.path} is closed") from exc

    def _open(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, FORMAT_VERSION):
            raise sqlite3.DatabaseError(f"unknown spool format {version}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        row = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(bytes), 0) FROM batches"
        ).fetchone()
        self.batches, self.rows, self.bytes = int(row[0]), int(row[1]), int(row[2])
        self._loaded = True

    def _put_many(self, conn: sqlite3.Connection, batches: Sequence[Batch]) -> int:
        encoded: list[tuple[Batch, list[bytes], int]] = []
        budget = self.max_bytes - self.bytes if self.max_bytes else None
        for batch in batches:
            chunks = encode_points(batch.points)
            size = sum(map(len, chunks))
            if budget is not None:
                if size > budget:
                    break
                budget -= size
            encoded.append((batch, chunks, size))
        if not encoded:
            return 0
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        for batch, chunks, size in encoded:
            cursor = conn.execute(
                "INSERT INTO batches (writer_id, seq, rows, bytes, spooled_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (batch.writer_id, batch.seq, len(batch.points), size, now),
            )
            batch_id = cursor.lastrowid
            conn.executemany(
                "INSERT INTO chunks (batch_id, n, data) VALUES (?, ?, ?)",
                [(batch_id, n, chunk) for n, chunk in enumerate(chunks)],
            )
        conn.execute("COMMIT")
        self.batches += len(encoded)
        self.rows += sum(len(batch.points) for batch, _, _ in encoded)
        self.bytes += sum(size for _, _, size in encoded)
        return len(encoded)

    def _head(self, conn: sqlite3.Connection) -> SpooledBatch | None:
        while True:
            row = conn.execute(
                "SELECT id, writer_id, seq, rows, bytes FROM batches ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            chunks = [
                chunk
                for (chunk,) in conn.execute(
                    "SELECT data FROM chunks WHERE batch_id = ? ORDER BY n", (row[0],)
                )
            ]
            try:
                points = decode_points(chunks)
            except (zlib.error, ValueError, TypeError) as exc:
                # A damaged batch must not block the ones behind it forever.
                log.error("spool %s: batch %s/%s (%d rows) is damaged (%s); discarded",
                          self.path, row[1], row[2], row[3], exc)
                self.corrupt_rows += int(row[3])
                self._remove(conn, int(row[0]), int(row[3]), int(row[4]))
                continue
            return SpooledBatch(int(row[0]), Batch(row[1], int(row[2]), points), int(row[4]))

    def _remove(self, conn: sqlite3.Connection, spool_id: int, rows: int, size: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM chunks WHERE batch_id = ?", (spool_id,))
        gone = conn.execute("DELETE FROM batches WHERE id = ?", (spool_id,)).rowcount
        conn.execute("COMMIT")
        if gone:
            self.batches -= 1
            self.rows -= rows
            self.bytes -= size
        if self.batches == 0:
            # Give the disk back after an outage: an empty database vacuums instantly.
            self.rows = self.bytes = 0
            with contextlib.suppress(sqlite3.Error):  # only disk space is at stake
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _claim_file(state_dir: Path, role: str, create: bool) -> tuple[Path, int] | None:
    if create:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the state directory {state_dir}: {exc}") from exc
    for n in range(MAX_FILES_PER_ROLE):
        path = state_dir / (f"spool-{role}.sqlite" if n == 0 else f"spool-{role}.{n}.sqlite")
        if not create and not path.exists():
            continue
        try:
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot open {path}.lock: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return path, fd
    if not create:
        return None
    raise SpoolError(f"all {MAX_FILES_PER_ROLE} spool files of {role!r} in {state_dir} are taken")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: the WAL is fsync'd at every COMMIT, so a batch is on disk when put returns.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


BatchWriter = Callable[[Batch], Awaitable[WriteResult]]  # Store.write_batch or a stand-in


async def replay_one(
    spool: Spool, write: BatchWriter, *, write_timeout: float
) -> tuple[Batch, WriteResult] | None:
    """Write the oldest spooled batch under its original (writer_id, seq), then drop it.

    Returns None when the spool is empty. Raises StoreError or TimeoutError when the
    write failed (the batch stays first in the spool) and SpoolError on spool I/O.
    """
    spooled = await spool.head()
    if spooled is None:
        return None
    result = await asyncio.wait_for(write(spooled.batch), write_timeout)
    # A crash here replays the batch once more at start-up: the flushes table makes
    # that second write a no-op (applied=False).
    await spool.remove(spooled)
    return spooled.batch, result


async def drain_forever(
    spool: Spool,
    write: BatchWriter,
    stop: asyncio.Event,
    *,
    interval: float = 1.0,
    max_delay: float = 30.0,
    write_timeout: float = 10.0,
    wake: asyncio.Event | None = None,
    on_written: Callable[[Batch, WriteResult], None] | None = None,
) -> None:
    """Replay the spool, oldest batch first, whenever it holds batches, until ``stop``.

    For a process that spools but runs no Flusher (the HTTP committer of ``serve``); the
    collector's Flusher drains its own spool. Failures back off from ``interval`` up to
    ``max_delay``; setting ``wake`` (a write worked again) ends a wait at once.
    """
    delay = interval
    replayed = 0
    while not stop.is_set():
        wait = interval
        if spool.batches:  # an in-memory count: an idle spool costs no query
            try:
                done = await replay_one(spool, write, write_timeout=write_timeout)
            except (StoreError, TimeoutError, SpoolError) as exc:
                log.warning("spool %s: replay failed (%s); %d batch(es) wait, retry in %.0fs",
                            spool.path, str(exc) or type(exc).__name__, spool.batches, delay)
                wait = delay
                delay = min(max_delay, delay * 2)
            else:
                if done is not None:
                    delay = interval
                    replayed += 1
                    if on_written is not None:
                        on_written(*done)
                    if not spool.batches:
                        log.info("spool %s drained: %d batch(es) replayed", spool.path,
                                 replayed)
                        replayed = 0
                continue
        event = wake if wake is not None else stop
        if wake is not None:
            wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait)
