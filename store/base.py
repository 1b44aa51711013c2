"""The Store protocol and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

from protocol.buckets import BucketRow
from protocol.names import Kind


class StoreError(Exception):
    """A store operation failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or the operation may be retried."""


# (name, kind, ts, cnt, sum, mn, mx): one per-second bucket on its way to the database.
# Names, not ids, so that a batch survives an outage in the spool and replays anywhere.
PointRow = tuple[str, Kind, int, float, float, float, float]


class Batch(NamedTuple):
    """One flush. (writer_id, seq) is recorded in the same transaction as the points,
    so a batch retried after an ambiguous failure is applied exactly once."""

    writer_id: str
    seq: int
    points: list[PointRow]


class WriteResult(NamedTuple):
    applied: bool  # False: this (writer_id, seq) had been applied already
    rows: int  # point rows upserted
    conflicts: dict[str, Kind]  # name -> the stored kind, for points of the other kind (dropped)


class MetricInfo(NamedTuple):
    id: int
    name: str
    kind: Kind
    created_at: int
    first_ts: int | None  # oldest stored point
    last_ts: int | None  # newest stored point


class MetricRef(NamedTuple):
    """A metric without its first/last point (which cost two index lookups a row)."""

    id: int
    name: str
    kind: Kind


class ApiKey(NamedTuple):
    id: int
    name: str
    key_hash: str
    display_prefix: str
    scopes: tuple[str, ...]
    rate_limit: str | None  # "100/s"; None: the server default
    created_at: int
    revoked_at: int | None


# Column lists and row readers shared by both backends (the SQL around them differs).
METRIC_COLUMNS = (
    "m.id, m.name, m.kind, m.created_at, "
    "(SELECT MIN(ts) FROM points_1s p WHERE p.metric_id = m.id), "
    "(SELECT MAX(ts) FROM points_1s p WHERE p.metric_id = m.id)"
)
KEY_COLUMNS = "id, name, key_hash, display_prefix, scopes, rate_limit, created_at, revoked_at"


def metric_from_row(row: Sequence[Any]) -> MetricInfo:
    """A row of ``SELECT METRIC_COLUMNS FROM metrics m``."""
    return MetricInfo(
        int(row[0]), row[1], cast(Kind, row[2]), int(row[3]),
        None if row[4] is None else int(row[4]), None if row[5] is None else int(row[5]),
    )


def api_key_from_row(row: Sequence[Any]) -> ApiKey:
    """A row of ``SELECT KEY_COLUMNS FROM api_keys``."""
    return ApiKey(
        int(row[0]), row[1], row[2], row[3], tuple(row[4].split(",")), row[5], int(row[6]),
        None if row[7] is None else int(row[7]),
    )


class Store(Protocol):
    """What the collector, the HTTP service and the CLI need from a database.

    Every method raises StoreUnavailable when the database cannot be reached.
    """

    url_for_logs: str

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def schema_version(self) -> int: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def write_batch(self, batch: Batch) -> WriteResult:
        """Create unknown metrics, then upsert the points additively in one transaction."""
        ...

    async def get_metric(self, name: str) -> MetricInfo | None: ...

    async def list_metrics(self, prefix: str, limit: int, after: str | None) -> list[MetricInfo]:
        """Metrics whose name starts with ``prefix``, ordered by name, after ``after``."""
        ...

    async def list_metric_refs(
        self, prefix: str, limit: int, after: str | None
    ) -> list[MetricRef]:
        """``list_metrics`` without first/last seen: what Graphite globs scan."""
        ...

    async def read_buckets(
        self, metric_id: int, start: int, end: int, interval: int
    ) -> list[BucketRow]:
        """Non-empty buckets of ``interval`` seconds over ``[align(start), end)``."""
        ...

    async def read_buckets_merged(
        self, metric_ids: Sequence[int], start: int, end: int, interval: int
    ) -> list[BucketRow]:
        """``read_buckets`` of several metrics merged into one bucket per interval (sums
        added, min of mins, max of maxes), computed by the database: a Graphite
        ``sumSeries`` of many counters reads one row per bucket, not one per series."""
        ...

    async def create_key(
        self, name: str, key_hash: str, display_prefix: str, scopes: tuple[str, ...],
        rate_limit: str | None, now: int,
    ) -> ApiKey: ...

    async def find_key(self, key_hash: str) -> ApiKey | None: ...

    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, name_or_prefix: str, now: int) -> int:
        """Revoke keys by exact name or display prefix; return how many."""
        ...

    async def delete_points_before(
        self, before: int, chunk: int, *, table: str = "points_1s"
    ) -> int:
        """Delete up to ``chunk`` rows per metric older than ``before``; return rows deleted.

        ``table`` is the level: points_1s (raw), points_1m or points_1h (rollups, see
        store.rollups.LEVELS); anything else raises ValueError.

        Small primary-key-ordered chunks per metric so concurrent flushes never wait long.
        """
        ...

    async def delete_flush_records_before(self, before: int) -> int: ...
