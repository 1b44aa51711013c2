"""SQLite backend: the embedded default.

All writes go through one writer thread with its own connection (SQLite has one writer
at a time anyway), reads through a small pool of reader threads; the event loop never
waits on a SQLite call. WAL mode lets readers run while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from protocol import summary
from protocol.buckets import BucketRow
from protocol.names import Kind
from store.base import (
    KEY_COLUMNS,
    METRIC_COLUMNS,
    OUTBOX_COLUMNS,
    RULE_COLUMNS,
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    AlertRuleRow,
    AlertStateRow,
    AlertTransitionRow,
    ApiKey,
    Batch,
    MetricInfo,
    MetricRef,
    OutboxRow,
    StoreError,
    StoreUnavailable,
    WindowTotal,
    WriteResult,
    api_key_from_row,
    metric_from_row,
    outbox_from_row,
    rule_from_row,
    state_from_row,
    transition_from_row,
)
from store.rollups import (
    FILL_PAGE,
    ROLLUPS,
    SCALED_SUM_SQL,
    SKETCH_LEVELS,
    SUMMARY_KINDS,
    HourFill,
    IdSketch,
    MinuteFill,
    SketchDataError,
    TotalColumn,
    check_table,
    check_total_column,
    exact_hours,
    exact_minutes,
    fill_groups_sql,
    group_sketches,
    merge_buckets,
    merge_into_stored,
    plan_reads,
    read_sum,
    rollup,
    scaled_sum_sql,
    sketch_plan,
    upsert_update_where,
    window_plan,
)
from store.schema import (
    FILL_OVERFLOWING_ROLLUPS,
    FILL_SKETCHES,
    SQLITE_MIGRATIONS,
    CreateTable,
    Step,
)

T = TypeVar("T")

_UPSERT_TABLE = (
    "INSERT INTO {table} (metric_id, ts, cnt, `sum`, mn, mx) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (metric_id, ts) DO UPDATE SET " + upsert_update_where("excluded.{}", "min", "max")
)
_UPSERT = _UPSERT_TABLE.format(table="points_1s")
_ROLLUP_UPSERTS = [(_UPSERT_TABLE.format(table=table), step) for table, step in ROLLUPS]
_SKETCH_UPSERT = (
    "INSERT INTO {table} (metric_id, ts, data) VALUES (?, ?, ?) "
    "ON CONFLICT (metric_id, ts) DO UPDATE SET data = excluded.data"
)
# A flush's summaries are merged into what is stored inside the upsert, by a function
# registered on each connection (_SummaryMerge), from IdSketch rows as they are:
# (metric_id, ts, kind, data). A gauge's new value simply wins, with no call (CASE
# evaluates only the branch it takes). A SELECT per key and a Python pass over the
# stored blobs took ~2x as long (20,000 series in 3-second batches, and 1,000 in
# 1-second batches).
_MERGE_FUNCTION = "gf_merge_summary"
_SKETCH_MERGE = (
    "INSERT INTO {table} (metric_id, ts, data) VALUES (?1, ?2, ?4) "
    "ON CONFLICT (metric_id, ts) DO UPDATE SET data = CASE WHEN ?3 = 'gauge' "
    f"THEN excluded.data ELSE {_MERGE_FUNCTION}(?3, metric_id, ts, data, excluded.data) END"
)


class _SummaryMerge:
    """The SQL function of _SKETCH_MERGE: store.rollups.merge_into_stored. sqlite3 turns
    what it raises into an OperationalError that names no row, so the SketchDataError,
    with its key, is kept here for the writer to raise instead."""

    def __init__(self) -> None:
        self.failure: SketchDataError | None = None

    def __call__(self, kind: Kind, metric_id: int, ts: int, old: bytes, data: bytes) -> bytes:
        try:
            return merge_into_stored(kind, metric_id, ts, old, data)
        except SketchDataError as exc:
            self.failure = exc
            raise


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.url_for_logs = f"sqlite:///{path}"
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gf-sqlite-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="gf-sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # name -> (id, kind); touched only by the writer thread.
        self._metric_ids: dict[str, tuple[int, Kind]] = {}

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.removeprefix("sqlite://")
        # sqlite:///var/db.sqlite is relative, sqlite:////var/db.sqlite absolute.
        path = path.removeprefix("/")
        if not path or path == ":memory:":
            raise ValueError("sqlite URL needs a file path: sqlite:///relative or sqlite:////abs")
        return cls(path)

    # -- threading -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk when it returns, so an acknowledged HTTP point
            # survives power loss too; group commit keeps the fsync count low.
            conn.execute("PRAGMA synchronous = FULL")
            merge = _SummaryMerge()
            conn.create_function(_MERGE_FUNCTION, 5, merge, deterministic=True)
            self._local.conn = conn
            self._local.merge = merge
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._readers, fn)

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._connection())
            except sqlite3.OperationalError as exc:  # locked, disk I/O, cannot open
                raise StoreUnavailable(f"sqlite: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except RuntimeError as exc:  # executor shut down
            raise StoreUnavailable(f"sqlite store closed: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------

    async def migrate(self) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            applied: list[int] = []
            conn.execute("BEGIN IMMEDIATE")  # serializes concurrent migrators
            try:
                done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
                for version, statements in SQLITE_MIGRATIONS:
                    if version in done:
                        continue
                    for statement in statements:
                        if statement == FILL_OVERFLOWING_ROLLUPS:
                            _fill_overflowing_rollups(conn)
                        elif isinstance(statement, Step):
                            assert statement == FILL_SKETCHES, statement
                            _fill_sketches(conn)
                        elif isinstance(statement, CreateTable):
                            conn.execute(statement.sql.replace(
                                "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
                        else:
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                        (version, int(time.time())),
                    )
                    applied.append(version)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return applied

        return await self._write(run)

    async def schema_version(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            try:
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except sqlite3.OperationalError:
                return 0
            return int(row[0] or 0)

        return await self._read(run)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for executor in (self._writer, self._readers):
            await loop.run_in_executor(None, executor.shutdown)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- points ----------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> WriteResult:
        return await self._write(lambda conn: self._write_batch(conn, batch))

    def _write_batch(self, conn: sqlite3.Connection, batch: Batch) -> WriteResult:
        now = int(time.time())
        conn.execute("BEGIN IMMEDIATE")
        created: dict[str, tuple[int, Kind]] = {}
        try:
            try:
                conn.execute(
                    "INSERT INTO flushes (writer_id, seq, applied_at) VALUES (?, ?, ?)",
                    (batch.writer_id, batch.seq, now),
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                return WriteResult(False, 0, {})
            ids = self._metric_ids
            conflicts: dict[str, Kind] = {}
            rows: list[tuple[int, int, float, float, float, float]] = []

            def metric_id(name: str, kind: Kind) -> int | None:
                """The id of ``name``, created if new; None for a kind conflict."""
                known = ids.get(name) or created.get(name)
                if known is None:
                    known = self._find_or_create_metric(conn, name, kind, now)
                    created[name] = known
                if known[1] != kind:
                    conflicts[name] = known[1]
                    return None
                return known[0]

            for name, kind, ts, cnt, total, mn, mx in batch.points:
                if (found := metric_id(name, kind)) is not None:
                    rows.append((found, ts, cnt, total, mn, mx))
            sketches: list[IdSketch] = []
            for name, kind, ts, data in batch.sketches:
                if kind not in SUMMARY_KINDS:
                    raise StoreError(f"sqlite: a sketch of {name} at {ts}: a {kind} has no "
                                     "summary")
                if (found := metric_id(name, kind)) is not None:
                    sketches.append((found, ts, kind, data))
            rows.sort()  # one lock order for every writer (matters on MySQL; cheap here)
            conn.executemany(_UPSERT, rows)
            level = rows
            for upsert, step in _ROLLUP_UPSERTS:  # same transaction: levels always agree
                level = rollup(level, step)  # minutes from seconds, hours from minutes
                conn.executemany(upsert, level)
            if sketches:
                try:
                    _merge_sketches(conn, sketches, self._local.merge)
                except SketchDataError as exc:
                    names = {known[0]: name for name, known in (*ids.items(), *created.items())}
                    raise StoreError(f"sqlite: a sketch of {exc.describe(names)}") from exc
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        ids.update(created)  # only after COMMIT: a rolled-back id must not be cached
        return WriteResult(True, len(rows), conflicts, len(sketches))

    @staticmethod
    def _find_or_create_metric(
        conn: sqlite3.Connection, name: str, kind: Kind, now: int
    ) -> tuple[int, Kind]:
        row = conn.execute("SELECT id, kind FROM metrics WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0]), cast(Kind, row[1])
        cursor = conn.execute(
            "INSERT INTO metrics (name, kind, created_at) VALUES (?, ?, ?)", (name, kind, now)
        )
        return int(cursor.lastrowid or 0), kind

    async def get_metric(self, name: str) -> MetricInfo | None:
        def run(conn: sqlite3.Connection) -> MetricInfo | None:
            row = conn.execute(
                f"SELECT {METRIC_COLUMNS} FROM metrics m WHERE m.name = ?", (name,)
            ).fetchone()
            return None if row is None else metric_from_row(row)

        return await self._read(run)

    async def list_metrics(self, prefix: str, limit: int, after: str | None) -> list[MetricInfo]:
        return [metric_from_row(row) for row in
                await self._names_from(METRIC_COLUMNS, prefix, limit, after)]

    async def list_metric_refs(
        self, prefix: str, limit: int, after: str | None
    ) -> list[MetricRef]:
        return [MetricRef(int(r[0]), r[1], r[2]) for r in
                await self._names_from("m.id, m.name, m.kind", prefix, limit, after)]

    async def _names_from(
        self, columns: str, prefix: str, limit: int, after: str | None
    ) -> list[tuple[Any, ...]]:
        """``columns`` of the metrics named ``prefix``..., after ``after``, in name order."""

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # A range on the unique index instead of LIKE ("_" is a LIKE wildcard and
            # a legal name character). Name characters all sort below "\x7f".
            low = max(prefix, after or "")
            op = ">" if after is not None and after >= prefix else ">="
            return conn.execute(
                f"SELECT {columns} FROM metrics m "
                f"WHERE m.name {op} ? AND m.name < ? ORDER BY m.name LIMIT ?",
                (low, prefix + "\x7f", limit),
            ).fetchall()

        return await self._read(run)

    async def read_buckets(
        self, metric_id: int, start: int, end: int, interval: int
    ) -> list[BucketRow]:
        start -= start % interval
        # The coarsest rollup that answers exactly, finer levels for the tail.
        reads = plan_reads(start, end, interval)

        def run(conn: sqlite3.Connection) -> list[BucketRow]:
            parts = [
                f"SELECT ts / {interval:d} * {interval:d} AS bucket, cnt, `sum`, mn, mx "
                f"FROM {table} WHERE metric_id = ? AND ts >= ? AND ts < ?"
                for table, _low, _high in reads
            ]
            if not parts:
                return []
            rows = conn.execute(
                f"SELECT bucket, SUM(cnt), SUM(`sum`), {SCALED_SUM_SQL}, MIN(mn), MAX(mx) "
                "FROM (" + " UNION ALL ".join(parts) + ") GROUP BY bucket ORDER BY bucket",
                [value for _table, low, high in reads for value in (metric_id, low, high)],
            ).fetchall()
            return [BucketRow(ts, c, read_sum(s, z), lo, hi) for ts, c, s, z, lo, hi in rows]

        return await self._read(run)

    async def read_totals_merged(
        self, metric_ids: Sequence[int], start: int, end: int, interval: int,
        column: TotalColumn,
    ) -> list[tuple[int, float]]:
        check_total_column(column)
        start -= start % interval
        reads = plan_reads(start, end, interval)
        ids = [int(metric_id) for metric_id in metric_ids]
        if not reads or not ids:
            return []
        marks = ", ".join("?" * len(ids))

        def run(conn: sqlite3.Connection) -> list[tuple[int, float]]:
            parts = [
                f"SELECT ts / {interval:d} * {interval:d} AS bucket, `{column}` "
                f"FROM {table} WHERE metric_id IN ({marks}) AND ts >= ? AND ts < ?"
                for table, _low, _high in reads
            ]
            rows = conn.execute(
                f"SELECT bucket, SUM(`{column}`), {scaled_sum_sql(column)} "
                "FROM (" + " UNION ALL ".join(parts) + ") GROUP BY bucket ORDER BY bucket",
                [value for _table, low, high in reads for value in (*ids, low, high)],
            ).fetchall()
            return [(ts, read_sum(total, scaled)) for ts, total, scaled in rows]

        return await self._read(run)

    # -- summaries -------------------------------------------------------------

    async def read_sketches(
        self, metric_id: int, kind: Kind, start: int, end: int, interval: int
    ) -> list[tuple[int, bytes]]:
        return await self.read_sketches_merged([metric_id], kind, start, end, interval)

    async def read_sketches_merged(
        self, metric_ids: Sequence[int], kind: Kind, start: int, end: int, interval: int
    ) -> list[tuple[int, bytes]]:
        reads = sketch_plan(start, end, interval)  # ValueError before any I/O
        ids = sorted({int(metric_id) for metric_id in metric_ids})

        def run(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows: list[tuple[int, int, bytes]] = []
            for table, low, high in reads:  # hours, then the minutes after them
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    rows.extend(conn.execute(
                        f"SELECT ts, metric_id, data FROM {table} WHERE metric_id IN ({marks}) "
                        "AND ts >= ? AND ts < ?", (*chunk, low, high)))
            rows.sort()  # ts order (a gauge's newest last), then metric
            try:
                return merge_buckets(kind, ((ts, data) for ts, _id, data in rows), interval)
            except ValueError as exc:
                raise StoreError(f"sqlite: a stored {kind} summary cannot be read: {exc}"
                                 ) from exc

        return await self._read(run) if reads and ids else []

    async def gauge_lasts(self) -> dict[str, float]:
        def run(conn: sqlite3.Connection) -> dict[str, float]:
            out: dict[str, float] = {}
            for name, data in conn.execute(
                "SELECT m.name, s.data FROM metrics m JOIN sketch_1m s ON s.metric_id = m.id "
                "WHERE m.kind = 'gauge' AND s.ts = "
                "(SELECT MAX(t.ts) FROM sketch_1m t WHERE t.metric_id = m.id)"
            ):
                with contextlib.suppress(ValueError):
                    out[name] = summary.decode_last(data)
            return out

        return await self._read(run)

    # -- keys ------------------------------------------------------------------

    async def create_key(
        self, name: str, key_hash: str, display_prefix: str, scopes: tuple[str, ...],
        rate_limit: str | None, now: int,
    ) -> ApiKey:
        def run(conn: sqlite3.Connection) -> ApiKey:
            cursor = conn.execute(
                "INSERT INTO api_keys (name, key_hash, display_prefix, scopes, rate_limit, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, key_hash, display_prefix, ",".join(scopes), rate_limit, now),
            )
            return ApiKey(
                int(cursor.lastrowid or 0), name, key_hash, display_prefix, scopes,
                rate_limit, now, None,
            )

        return await self._write(run)

    async def find_key(self, key_hash: str) -> ApiKey | None:
        def run(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
            ).fetchone()
            return None if row is None else api_key_from_row(row)

        return await self._read(run)

    async def list_keys(self) -> list[ApiKey]:
        def run(conn: sqlite3.Connection) -> list[ApiKey]:
            rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id").fetchall()
            return [api_key_from_row(row) for row in rows]

        return await self._read(run)

    async def revoke_key(self, name_or_prefix: str, now: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL "
                "AND (name = ? OR display_prefix = ?)",
                (now, name_or_prefix, name_or_prefix),
            )
            return int(cursor.rowcount)

        return await self._write(run)

    # -- retention -------------------------------------------------------------

    async def delete_points_before(
        self, before: int, chunk: int, *, table: str = "points_1s"
    ) -> int:
        table = check_table(table)

        def expired(conn: sqlite3.Connection) -> list[int]:
            # Only metrics that still hold expired rows (a primary-key probe each).
            return [
                int(row[0])
                for row in conn.execute(
                    f"SELECT m.id FROM metrics m WHERE EXISTS (SELECT 1 FROM {table} p "
                    "WHERE p.metric_id = m.id AND p.ts < ?) ORDER BY m.id",
                    (before,),
                )
            ]

        metric_ids = await self._read(expired)
        deleted = start = 0
        while start < len(metric_ids):
            # One short writer-thread job at a time: a flush queued on the writer thread
            # waits behind one slice, never behind the whole pass.
            count, start = await self._write(
                functools.partial(_delete_slice, ids=metric_ids, start=start,
                                  before=before, chunk=chunk, table=table)
            )
            deleted += count
        return deleted

    async def delete_flush_records_before(self, before: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM flushes WHERE applied_at < ?", (before,))
            return int(cursor.rowcount)

        return await self._write(run)

    # -- alerts ----------------------------------------------------------------

    async def metric_ids(self, names: Sequence[str]) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for chunk in _chunks(list(names)):
                marks = ",".join("?" * len(chunk))
                found.update((row[1], int(row[0])) for row in conn.execute(
                    f"SELECT id, name FROM metrics WHERE name IN ({marks})", chunk))
            return found

        return await self._read(run)

    async def read_windows(
        self, metric_ids: Sequence[int], start: int, end: int
    ) -> dict[int, WindowTotal]:
        reads = window_plan(start, end)

        def run(conn: sqlite3.Connection) -> dict[int, WindowTotal]:
            out: dict[int, WindowTotal] = {}
            for chunk in _chunks(list(metric_ids)):
                marks = ",".join("?" * len(chunk))
                parts = [f"SELECT metric_id, cnt, `sum`, mn, mx FROM {table} "
                         f"WHERE metric_id IN ({marks}) AND ts >= ? AND ts < ?"
                         for table, _low, _high in reads]
                params = [v for _t, low, high in reads for v in (*chunk, low, high)]
                for metric_id, c, s, z, lo, hi in conn.execute(
                    f"SELECT metric_id, SUM(cnt), SUM(`sum`), {SCALED_SUM_SQL}, MIN(mn), "
                    "MAX(mx) FROM (" + " UNION ALL ".join(parts) + ") GROUP BY metric_id",
                    params,
                ):
                    out[int(metric_id)] = WindowTotal(float(c), read_sum(s, z), float(lo),
                                                      float(hi))
            return out

        return await self._read(run) if reads else {}

    async def last_seen(self, metric_ids: Sequence[int]) -> dict[int, int]:
        def run(conn: sqlite3.Connection) -> dict[int, int]:
            out: dict[int, int] = {}
            for chunk in _chunks(list(metric_ids)):
                marks = ",".join("?" * len(chunk))
                out.update((int(row[0]), int(row[1])) for row in conn.execute(
                    f"SELECT metric_id, MAX(ts) FROM points_1s WHERE metric_id IN ({marks}) "
                    "GROUP BY metric_id", chunk))
            return out

        return await self._read(run)

    async def create_rule(
        self, name: str, metric: str, body: str, now: int, max_rules: int
    ) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            with _immediate(conn):
                (count,) = conn.execute("SELECT COUNT(*) FROM alert_rules").fetchone()
                if count >= max_rules:
                    return None
                cursor = conn.execute(
                    "INSERT INTO alert_rules (name, metric, body, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)", (name, metric, body, now, now))
            return int(cursor.lastrowid or 0)

        return await self._write(run)

    async def get_rule(self, rule_id: int) -> AlertRuleRow | None:
        def run(conn: sqlite3.Connection) -> AlertRuleRow | None:
            row = conn.execute(f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = ?",
                               (rule_id,)).fetchone()
            return None if row is None else rule_from_row(row)

        return await self._read(run)

    async def list_rules(self, limit: int, after_id: int = 0) -> list[AlertRuleRow]:
        def run(conn: sqlite3.Connection) -> list[AlertRuleRow]:
            return [rule_from_row(row) for row in conn.execute(
                f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit))]

        return await self._read(run)

    async def update_rule(
        self, rule_id: int, name: str, metric: str, body: str, now: int
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                row = conn.execute("SELECT metric FROM alert_rules WHERE id = ?",
                                   (rule_id,)).fetchone()
                if row is None:
                    return False
                conn.execute("UPDATE alert_rules SET name = ?, metric = ?, body = ?, "
                             "updated_at = ? WHERE id = ?", (name, metric, body, now, rule_id))
                if row[0] != metric:
                    conn.execute("DELETE FROM alert_states WHERE rule_id = ?", (rule_id,))
            return True

        return await self._write(run)

    async def delete_rule(self, rule_id: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                deleted = conn.execute("DELETE FROM alert_rules WHERE id = ?",
                                       (rule_id,)).rowcount
                for table in ("alert_states", "alert_transitions"):
                    conn.execute(f"DELETE FROM {table} WHERE rule_id = ?", (rule_id,))
            return bool(deleted)

        return await self._write(run)

    async def alert_states(self, rule_ids: Sequence[int] | None = None) -> list[AlertStateRow]:
        def run(conn: sqlite3.Connection) -> list[AlertStateRow]:
            if rule_ids is None:
                return [state_from_row(row) for row in conn.execute(
                    f"SELECT {STATE_COLUMNS} FROM alert_states ORDER BY rule_id, metric")]
            out: list[AlertStateRow] = []
            for chunk in _chunks(list(rule_ids)):
                marks = ",".join("?" * len(chunk))
                out.extend(state_from_row(row) for row in conn.execute(
                    f"SELECT {STATE_COLUMNS} FROM alert_states WHERE rule_id IN ({marks}) "
                    "ORDER BY rule_id, metric", chunk))
            return out

        return await self._read(run)

    async def rule_history(
        self, rule_id: int, limit: int, before_id: int | None = None
    ) -> list[AlertTransitionRow]:
        def run(conn: sqlite3.Connection) -> list[AlertTransitionRow]:
            return [transition_from_row(row) for row in conn.execute(
                f"SELECT {TRANSITION_COLUMNS} FROM alert_transitions WHERE rule_id = ? "
                "AND id < ? ORDER BY id DESC LIMIT ?",
                (rule_id, before_id if before_id is not None else 2**62, limit))]

        return await self._read(run)

    async def acquire_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                row = conn.execute("SELECT holder, expires_at FROM alert_lease WHERE name = ?",
                                   (name,)).fetchone()
                if row is None:
                    conn.execute("INSERT INTO alert_lease (name, holder, expires_at) "
                                 "VALUES (?, ?, ?)", (name, holder, now + ttl))
                elif row[0] == holder or row[1] < now:
                    conn.execute("UPDATE alert_lease SET holder = ?, expires_at = ? "
                                 "WHERE name = ?", (holder, now + ttl, name))
                else:
                    return False
            return True

        return await self._write(run)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write(lambda conn: conn.execute(
            "DELETE FROM alert_lease WHERE name = ? AND holder = ?", (name, holder)))

    async def save_evaluation(
        self, lease: str, holder: str, now: float, states: Sequence[AlertStateRow],
        transitions: Sequence[AlertTransitionRow], notifications: Sequence[OutboxRow],
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                row = conn.execute("SELECT holder, expires_at FROM alert_lease WHERE name = ?",
                                   (lease,)).fetchone()
                if row is None or row[0] != holder or row[1] < now:
                    return False
                conn.executemany(_STATE_UPSERT, [tuple(s) for s in states])
                conn.executemany(_TRANSITION_INSERT, [t[1:] for t in transitions])
                conn.executemany(_OUTBOX_INSERT, [n[1:] for n in notifications])
            return True

        return await self._write(run)

    async def due_notifications(self, now: float, limit: int) -> list[OutboxRow]:
        def run(conn: sqlite3.Connection) -> list[OutboxRow]:
            return [outbox_from_row(row) for row in conn.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE status = 'pending' "
                "AND next_at <= ? ORDER BY next_at, id LIMIT ?", (now, limit))]

        return await self._read(run)

    async def update_notification(
        self, notification_id: int, status: str, attempts: int, next_at: float,
        finished_at: float | None, error: str | None,
    ) -> None:
        await self._write(lambda conn: conn.execute(
            "UPDATE alert_outbox SET status = ?, attempts = ?, next_at = ?, finished_at = ?, "
            "last_error = ? WHERE id = ?",
            (status, attempts, next_at, finished_at, error, notification_id)))

    async def delete_finished_notifications(self, before: float, limit: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox "
                "WHERE status <> 'pending' AND finished_at < ? ORDER BY id LIMIT ?)",
                (before, limit)).rowcount)

        return await self._write(run)

    async def count_notifications(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return {row[0]: int(row[1]) for row in conn.execute(
                "SELECT status, COUNT(*) FROM alert_outbox GROUP BY status")}

        return await self._read(run)


_STATE_UPSERT = (
    "INSERT INTO alert_states (rule_id, metric, state, since, value, last_notified, notified) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule_id, metric) DO UPDATE SET "
    "state = excluded.state, since = excluded.since, value = excluded.value, "
    "last_notified = excluded.last_notified, notified = excluded.notified"
)
_TRANSITION_INSERT = (
    "INSERT INTO alert_transitions (rule_id, metric, from_state, to_state, at, value) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_OUTBOX_INSERT = (
    "INSERT OR IGNORE INTO alert_outbox (rule_id, metric, target, payload, idempotency_key, "
    "status, attempts, next_at, created_at, finished_at, last_error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CHUNK = 500  # ids or names per IN (...): under every SQLite's variable limit


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock now, not at the first write) ... ``COMMIT``;
    rolled back on any exception. A block that returns early has written nothing, so
    its COMMIT is as good as a rollback."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _chunks(items: list[T]) -> list[list[T]]:
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]


def _merge_sketches(conn: sqlite3.Connection, sketches: list[IdSketch],
                    merge: _SummaryMerge) -> None:
    """Merge a batch's summaries into every level: the batch's rows of one key merged
    first, then into what is stored, by the upsert itself (the writer thread is the only
    writer: no locks to order; MySQL reads, merges and writes). Raises SketchDataError."""
    level = sketches
    checked = False
    for table, step in SKETCH_LEVELS:  # hours from the batch's merged minutes
        level = group_sketches(level, step, checked=checked)
        checked = True
        try:
            conn.executemany(_SKETCH_MERGE.format(table=table), level)
        except sqlite3.OperationalError:
            failure, merge.failure = merge.failure, None
            if failure is None:
                raise
            raise failure from None


def _fill_overflowing_rollups(conn: sqlite3.Connection) -> None:
    """Migration 2's fill of the groups SQL could not sum safely
    (store.schema.FILL_OVERFLOWING_ROLLUPS): each group's seconds in ts order, summed
    by ``rollup`` as a flush sums them."""
    for table, step in ROLLUPS:
        upsert = _UPSERT_TABLE.format(table=table)
        for metric_id, start, *_sums in conn.execute(
                fill_groups_sql(step, "/", safe=False)).fetchall():
            seconds = conn.execute(
                "SELECT metric_id, ts, cnt, `sum`, mn, mx FROM points_1s "
                "WHERE metric_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
                (metric_id, start, start + step)).fetchall()
            conn.executemany(upsert, rollup(seconds, step))


def _fill_sketches(conn: sqlite3.Connection) -> None:
    """Migration 4's fill (store.schema.FILL_SKETCHES), in the migration's transaction:
    each value metric's seconds read in pages, in ts order; the exact minutes and hours
    written as they close (store.rollups.MinuteFill)."""
    value_ids = [int(row[0]) for row in conn.execute(
        "SELECT id FROM metrics WHERE kind = 'value' ORDER BY id")]
    for metric_id in value_ids:
        minutes, hours = MinuteFill(), HourFill()
        after = -(2**63)
        while True:
            page = conn.execute(
                "SELECT ts, cnt, mn, mx FROM points_1s WHERE metric_id = ? AND ts > ? "
                "ORDER BY ts LIMIT ?", (metric_id, after, FILL_PAGE)).fetchall()
            last = len(page) < FILL_PAGE
            closed = minutes.add(page) + (minutes.end() if last else [])
            if closed:
                filled = exact_minutes(closed, _counts(conn, "points_1m", metric_id,
                                                       closed[0][0], closed[-1][0]))
                conn.executemany(_SKETCH_UPSERT.format(table="sketch_1m"),
                                 [(metric_id, ts, data) for ts, _cnt, data in filled])
                done = hours.add(filled) + (hours.end() if last else [])
            else:
                done = hours.end() if last else []
            if done:
                full = exact_hours(done, _counts(conn, "points_1h", metric_id, done[0][0],
                                                 done[-1][0]))
                conn.executemany(_SKETCH_UPSERT.format(table="sketch_1h"),
                                 [(metric_id, ts, data) for ts, data in full])
            if last:
                break
            after = page[-1][0]


def _counts(conn: sqlite3.Connection, table: str, metric_id: int, low: int, high: int
            ) -> dict[int, float]:
    """ts -> cnt of one metric's rows of ``table`` in [low, high]."""
    return {int(ts): float(cnt) for ts, cnt in conn.execute(
        f"SELECT ts, cnt FROM {table} WHERE metric_id = ? AND ts >= ? AND ts <= ?",
        (metric_id, low, high))}


_DELETE_SLICE_SECONDS = 0.02  # a retention job on the writer thread stops after this


def _delete_slice(
    conn: sqlite3.Connection, *, ids: list[int], start: int, before: int, chunk: int,
    table: str = "points_1s",
) -> tuple[int, int]:
    """Delete up to ``chunk`` expired rows of each metric from ``ids[start:]`` in one
    transaction (one fsync), stopping after ~20 ms or ``chunk`` rows in all.
    Returns (rows deleted, index of the next metric)."""
    deadline = time.perf_counter() + _DELETE_SLICE_SECONDS
    deleted = 0
    index = start
    with _immediate(conn):
        while index < len(ids) and (
            index == start or (deleted < chunk and time.perf_counter() < deadline)
        ):
            cursor = conn.execute(
                f"DELETE FROM {table} WHERE metric_id = ? AND ts IN ("
                f"SELECT ts FROM {table} WHERE metric_id = ? AND ts < ? "
                "ORDER BY ts LIMIT ?)",
                (ids[index], ids[index], before, chunk),
            )
            deleted += cursor.rowcount
            index += 1
    return deleted, index

