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

Layout: ``batches(id, writer_id, seq, rows, bytes, spooled_at)`` in spool order (``rows``:
points and sketches), ``chunks(batch_id, n, data)``: the points of a batch in runs of
``CHUNK_POINTS``, each ``zlib(orjson([[name, kind, ts, cnt, sum, mn, mx], ...]))``, and
``sketch_chunks(batch_id, n, data)``: its SketchRows in runs of ``CHUNK_SKETCHES``
(``encode_sketches``). Chunks bound the time any one encode or decode call holds the GIL
(a 100k-point batch in one orjson call held it for ~30 ms, stalling the event loop), and
zlib shrinks the repetitive names ~5x. Format 1 files (before sketches: no
sketch_chunks) are read as batches without sketches, and upgraded in place.

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
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, NamedTuple, TypeVar, cast

import orjson

from protocol.names import Kind
from store.base import Batch, PointRow, SketchRow, batch_rows

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT_VERSION: Final = 2  # PRAGMA user_version of a spool file; 2 added sketch_chunks
READABLE_VERSIONS: Final = (0, 1, FORMAT_VERSION)  # 0: a new file
CHUNK_POINTS: Final = 2_000  # points per stored chunk (~0.5 ms of encoding each)
CHUNK_SKETCHES: Final = 500  # sketches per stored chunk (~1 KB each: ~0.5 MB)
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
    """CREATE TABLE IF NOT EXISTS sketch_chunks (
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


_HEAD: Final = struct.Struct("<I")


def encode_sketches(sketches: Sequence[SketchRow], per_chunk: int = CHUNK_SKETCHES
                    ) -> list[bytes]:
    """The stored chunks of a batch's SketchRows: each ``zlib(u32 n, orjson([[name, kind,
    ts, len(data)], ...]) of n bytes, the data one after the other)`` (JSON has no
    bytes; base64 would cost a third more before compression)."""
    chunks = []
    for start in range(0, len(sketches), per_chunk):
        run = sketches[start : start + per_chunk]
        meta = orjson.dumps([[name, kind, ts, len(data)] for name, kind, ts, data in run])
        chunks.append(zlib.compress(
            b"".join([_HEAD.pack(len(meta)), meta, *(row[3] for row in run)]), 1))
    return chunks


def decode_sketches(chunks: Sequence[bytes]) -> list[SketchRow]:
    """Raises ValueError (or zlib.error) on a damaged chunk."""
    sketches: list[SketchRow] = []
    for chunk in chunks:
        raw = zlib.decompress(chunk)
        if len(raw) < _HEAD.size:
            raise ValueError("a sketch chunk without its header")
        (size,) = _HEAD.unpack_from(raw)
        at = _HEAD.size + size
        for name, kind, ts, length in orjson.loads(raw[_HEAD.size : at]):
            if not isinstance(length, int) or length < 0 or at + length > len(raw):
                raise ValueError("a sketch chunk shorter than its header says")
            sketches.append((name, cast(Kind, kind), ts, raw[at : at + length]))
            at += length
        if at != len(raw):
            raise ValueError("trailing bytes after a sketch chunk")
    return sketches


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
        rows = batch_rows(spooled.batch)
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
        if version not in READABLE_VERSIONS:
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
        encoded: list[tuple[Batch, list[bytes], list[bytes], int]] = []
        budget = self.max_bytes - self.bytes if self.max_bytes else None
        for batch in batches:
            chunks = encode_points(batch.points)
            sketch_chunks = encode_sketches(batch.sketches)
            size = sum(map(len, chunks)) + sum(map(len, sketch_chunks))
            if budget is not None:
                if size > budget:
                    break
                budget -= size
            encoded.append((batch, chunks, sketch_chunks, size))
        if not encoded:
            return 0
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        for batch, chunks, sketch_chunks, size in encoded:
            cursor = conn.execute(
                "INSERT INTO batches (writer_id, seq, rows, bytes, spooled_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (batch.writer_id, batch.seq, batch_rows(batch), size, now),
            )
            batch_id = cursor.lastrowid
            conn.executemany(
                "INSERT INTO chunks (batch_id, n, data) VALUES (?, ?, ?)",
                [(batch_id, n, chunk) for n, chunk in enumerate(chunks)],
            )
            conn.executemany(
                "INSERT INTO sketch_chunks (batch_id, n, data) VALUES (?, ?, ?)",
                [(batch_id, n, chunk) for n, chunk in enumerate(sketch_chunks)],
            )
        conn.execute("COMMIT")
        self.batches += len(encoded)
        self.rows += sum(batch_rows(batch) for batch, *_ in encoded)
        self.bytes += sum(size for *_, size in encoded)
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
            sketch_chunks = [
                chunk
                for (chunk,) in conn.execute(
                    "SELECT data FROM sketch_chunks WHERE batch_id = ? ORDER BY n", (row[0],)
                )
            ]
            try:
                points = decode_points(chunks)
                sketches = decode_sketches(sketch_chunks)
            except (zlib.error, ValueError, TypeError) as exc:
                # A damaged batch must not block the ones behind it forever.
                log.error("spool %s: batch %s/%s (%d rows) is damaged (%s); discarded",
                          self.path, row[1], row[2], row[3], exc)
                self.corrupt_rows += int(row[3])
                self._remove(conn, int(row[0]), int(row[3]), int(row[4]))
                continue
            return SpooledBatch(int(row[0]), Batch(row[1], int(row[2]), points,
                                                   tuple(sketches)), int(row[4]))

    def _remove(self, conn: sqlite3.Connection, spool_id: int, rows: int, size: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM chunks WHERE batch_id = ?", (spool_id,))
        conn.execute("DELETE FROM sketch_chunks WHERE batch_id = ?", (spool_id,))
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


def _quarantine_schema(conn: sqlite3.Connection) -> None:
    conn.execute(_QUARANTINE_SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(quarantine)")}
    if "sketches" not in columns:  # a file from before sketches
        try:
            conn.execute("ALTER TABLE quarantine ADD COLUMN sketches BLOB")
        except sqlite3.OperationalError as exc:  # another process added it just now
            if "duplicate column" not in str(exc):
                raise


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


# -- the quarantine -------------------------------------------------------------------

QUARANTINE_FILE: Final = "quarantine.sqlite"

# ``rows``: points and sketches; ``data``: the points (one encode_points chunk);
# ``sketches``: the SketchRows (one encode_sketches chunk), NULL in rows set aside before
# sketches existed (the column is added to such a file when it is opened).
_QUARANTINE_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    writer_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    error TEXT NOT NULL,
    quarantined_at REAL NOT NULL,
    data BLOB NOT NULL,
    sketches BLOB)"""


class QuarantinedBatch(NamedTuple):
    id: int
    writer_id: str
    seq: int
    rows: int
    error: str  # what the store said when it refused the rows
    quarantined_at: float  # epoch seconds


class Quarantine:
    """Batches the store refused for good (``store.durable``: a permanent error), kept
    with the error and the time until an operator replays or discards them
    (``glowing-fiesta quarantine``).

    One SQLite file, ``quarantine.sqlite`` in the state directory, shared by every
    process of the host (SQLite's own locking, WAL, a busy timeout: no flock, so the CLI
    can list, replay and discard while the daemon runs). The file is created by the
    first batch set aside: a healthy host never has one. Each process uses one worker
    thread for it; the event loop only awaits.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / QUARANTINE_FILE
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gf-quarantine")

    async def put(self, batch: Batch, error: str) -> None:
        """Keep ``batch`` (fsync'd before returning). Raises SpoolError."""
        data = zlib.compress(orjson.dumps(batch.points), 1)
        sketches = (encode_sketches(batch.sketches, len(batch.sketches))[0]
                    if batch.sketches else None)

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO quarantine (writer_id, seq, rows, error, quarantined_at, data, "
                "sketches) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (batch.writer_id, batch.seq, batch_rows(batch), error, time.time(), data,
                 sketches),
            )

        await self._call(put, create=True)

    async def count(self) -> tuple[int, int]:
        """(batches, rows) held now; (0, 0) without a file."""

        def count(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM quarantine")
            batches, rows = row.fetchone()
            return int(batches), int(rows)

        return await self._call(count, empty=(0, 0))

    async def list(self) -> list[QuarantinedBatch]:
        def select(conn: sqlite3.Connection) -> list[QuarantinedBatch]:
            return [
                QuarantinedBatch(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], float(r[5]))
                for r in conn.execute(
                    "SELECT id, writer_id, seq, rows, error, quarantined_at FROM quarantine "
                    "ORDER BY id")
            ]

        return await self._call(select, empty=[])

    async def get(self, quarantine_id: int) -> Batch | None:
        def get(conn: sqlite3.Connection) -> Batch | None:
            row = conn.execute(
                "SELECT writer_id, seq, data, sketches FROM quarantine WHERE id = ?",
                (quarantine_id,)).fetchone()
            if row is None:
                return None
            return Batch(row[0], int(row[1]), decode_points([row[2]]),
                         tuple(decode_sketches([row[3]])) if row[3] is not None else ())

        return await self._call(get, empty=None)

    async def remove(self, quarantine_id: int) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
            return bool(gone.rowcount)

        return await self._call(remove, empty=False)

    async def note_error(self, quarantine_id: int, error: str) -> None:
        """A replay failed again: keep the newest error."""

        def note(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE quarantine SET error = ? WHERE id = ?", (error, quarantine_id))

        await self._call(note, empty=None)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with contextlib.suppress(RuntimeError):  # already shut down
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        await asyncio.to_thread(self._thread.shutdown)

    async def _call(
        self, fn: Callable[[sqlite3.Connection], T], *, create: bool = False,
        empty: T | None = None,
    ) -> T:
        """``fn`` on the file's connection in the worker thread. Without ``create``, a
        file that does not exist answers ``empty`` (and is not created)."""

        def call() -> T:
            if self._conn is None:
                if not create and not self.path.exists():
                    return cast(T, empty)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = _connect(self.path)
                try:
                    _quarantine_schema(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            try:
                return fn(self._conn)
            except (sqlite3.Error, zlib.error, ValueError) as exc:
                raise SpoolError(f"quarantine {self.path}: {exc}") from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except OSError as exc:
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(f"quarantine {self.path}: {exc}") from exc
        except RuntimeError as exc:  # executor shut down
            raise SpoolError(f"quarantine {self.path} is closed") from exc
