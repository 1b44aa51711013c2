"""The Store protocol and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

from protocol.buckets import BucketRow
from protocol.names import Kind
from store.rollups import TotalColumn


class StoreError(Exception):
    """A store operation failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or the operation may be retried."""


# (name, kind, ts, cnt, sum, mn, mx): one per-second bucket on its way to the database.
# Names, not ids, so that a batch survives an outage in the spool and replays anywhere.
PointRow = tuple[str, Kind, int, float, float, float, float]


# (name, kind, ts, data): one metric-minute's summary on its way to the database, ts a
# multiple of 60. data by kind: value, a quantile sketch (protocol.sketch); set, a
# HyperLogLog (protocol.hll); gauge, the last value (protocol.summary). The store merges
# it into what it holds for that minute (and hour) by kind: protocol.summary.merge.
SketchRow = tuple[str, Kind, int, bytes]


class Batch(NamedTuple):
    """One flush. (writer_id, seq) is recorded in the same transaction as the points
    and the sketches, so a batch retried after an ambiguous failure is applied exactly
    once."""

    writer_id: str
    seq: int
    points: list[PointRow]
    sketches: Sequence[SketchRow] = ()


def batch_rows(batch: Batch) -> int:
    """The rows of a batch as the writer and the spool count them: points and sketches."""
    return len(batch.points) + len(batch.sketches)


class WriteResult(NamedTuple):
    applied: bool  # False: this (writer_id, seq) had been applied already
    rows: int  # point rows upserted
    conflicts: dict[str, Kind]  # name -> the stored kind, for rows of the other kind (dropped)
    sketches: int = 0  # SketchRows merged (each into sketch_1m and sketch_1h)


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


class AlertRuleRow(NamedTuple):
    """A stored alert rule; ``body`` is its JSON (protocol.alerts), secrets included."""

    id: int
    name: str
    metric: str
    body: str
    created_at: int
    updated_at: int


class AlertStateRow(NamedTuple):
    """Where one (rule, metric) stands (protocol.alerts.AlertState)."""

    rule_id: int
    metric: str
    state: str
    since: float
    value: float | None
    last_notified: float | None
    notified: bool


class AlertTransitionRow(NamedTuple):
    id: int  # 0 for one not stored yet
    rule_id: int
    metric: str
    from_state: str
    to_state: str
    at: float
    value: float | None


class OutboxRow(NamedTuple):
    """A notification to deliver, at least once: ``target`` and ``payload`` are JSON;
    ``status`` is pending (retried at ``next_at``), sent or failed (given up)."""

    id: int  # 0 for one not stored yet
    rule_id: int
    metric: str
    target: str
    payload: str
    idempotency_key: str
    status: str
    attempts: int
    next_at: float
    created_at: float
    finished_at: float | None
    last_error: str | None


class WindowTotal(NamedTuple):
    """One metric's points over a window, merged (``read_windows``)."""

    cnt: float
    sum: float
    mn: float
    mx: float


# Column lists and row readers shared by both backends (the SQL around them differs).
METRIC_COLUMNS = (
    "m.id, m.name, m.kind, m.created_at, "
    "(SELECT MIN(ts) FROM points_1s p WHERE p.metric_id = m.id), "
    "(SELECT MAX(ts) FROM points_1s p WHERE p.metric_id = m.id)"
)
KEY_COLUMNS = "id, name, key_hash, display_prefix, scopes, rate_limit, created_at, revoked_at"


RULE_COLUMNS = "id, name, metric, body, created_at, updated_at"
STATE_COLUMNS = "rule_id, metric, state, since, value, last_notified, notified"
TRANSITION_COLUMNS = "id, rule_id, metric, from_state, to_state, at, value"
OUTBOX_COLUMNS = (
    "id, rule_id, metric, target, payload, idempotency_key, status, attempts, next_at, "
    "created_at, finished_at, last_error"
)


def rule_from_row(row: Sequence[Any]) -> AlertRuleRow:
    return AlertRuleRow(int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]))


def state_from_row(row: Sequence[Any]) -> AlertStateRow:
    return AlertStateRow(int(row[0]), row[1], row[2], float(row[3]),
                         optional_float(row[4]), optional_float(row[5]), bool(row[6]))


def transition_from_row(row: Sequence[Any]) -> AlertTransitionRow:
    return AlertTransitionRow(int(row[0]), int(row[1]), row[2], row[3], row[4],
                              float(row[5]), optional_float(row[6]))


def outbox_from_row(row: Sequence[Any]) -> OutboxRow:
    return OutboxRow(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5], row[6],
                     int(row[7]), float(row[8]), float(row[9]), optional_float(row[10]),
                     row[11])


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
        """Create unknown metrics, then upsert the points additively and merge the
        sketches (protocol.summary.merge, into sketch_1m and sketch_1h) in one
        transaction with the batch's flush record.

        Rows whose name is stored with another kind are dropped (``conflicts``). A
        SketchRow of a counter, or whose data is not a summary of its kind, raises
        StoreError (permanent: the durable writer isolates it)."""
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

    async def read_totals_merged(
        self, metric_ids: Sequence[int], start: int, end: int, interval: int,
        column: TotalColumn,
    ) -> list[tuple[int, float]]:
        """The total of ``column`` ("cnt" or "sum", else ValueError) over several
        metrics, per non-empty bucket of ``interval`` seconds over ``[align(start),
        end)``: (bucket start, total), ascending; a total is finite, or +-inf where it is
        beyond the double range. Computed by the database: a Graphite ``sumSeries`` of
        many counters reads one row per bucket, not one per series, and one column."""
        ...

    async def read_sketches(
        self, metric_id: int, kind: Kind, start: int, end: int, interval: int
    ) -> list[tuple[int, bytes]]:
        """One merged summary (protocol.summary.merge by ``kind``) per non-empty bucket
        of ``interval`` seconds over ``[align(start), end)``: (bucket start, data),
        ascending. ``interval`` must be a multiple of 60 (else ValueError). Whole hours
        come from sketch_1h when the interval is a multiple of 3600, the rest from
        sketch_1m; a stored minute (hour) counts when it starts before ``end``."""
        ...

    async def read_sketches_merged(
        self, metric_ids: Sequence[int], kind: Kind, start: int, end: int, interval: int
    ) -> list[tuple[int, bytes]]:
        """``read_sketches`` of several metrics (of one kind) merged into one summary
        per bucket: a Graphite ``sumSeries`` of timers' percentiles."""
        ...

    async def gauge_lasts(self) -> dict[str, float]:
        """name -> the last value of every gauge that has one (its newest sketch_1m
        row); unreadable values are left out. The collector restores gauges from it."""
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
        store.rollups.LEVELS), sketch_1m or sketch_1h (store.rollups.SKETCH_LEVELS);
        anything else raises ValueError.

        Small primary-key-ordered chunks per metric so concurrent flushes never wait long.
        """
        ...

    async def delete_flush_records_before(self, before: int) -> int: ...

    # -- alerts ----------------------------------------------------------------

    async def metric_ids(self, names: Sequence[str]) -> dict[str, int]:
        """name -> id of the stored metrics among ``names`` (any number: chunked)."""
        ...

    async def read_windows(
        self, metric_ids: Sequence[int], start: int, end: int
    ) -> dict[int, WindowTotal]:
        """Each metric's points in ``[start, end)`` merged, from the rollups where whole
        minutes and hours allow; metrics without points are left out. A bounded number
        of queries: one per chunk of metrics."""
        ...

    async def last_seen(self, metric_ids: Sequence[int]) -> dict[int, int]:
        """metric id -> the timestamp of its newest per-second point (raw retention)."""
        ...

    async def create_rule(
        self, name: str, metric: str, body: str, now: int, max_rules: int
    ) -> int | None:
        """The new rule's id; None when ``max_rules`` rules exist already."""
        ...

    async def get_rule(self, rule_id: int) -> AlertRuleRow | None: ...

    async def list_rules(self, limit: int, after_id: int = 0) -> list[AlertRuleRow]:
        """Rules by id, after ``after_id``."""
        ...

    async def update_rule(
        self, rule_id: int, name: str, metric: str, body: str, now: int
    ) -> bool:
        """Replace a rule; its states are kept unless its metric changed. False: no rule."""
        ...

    async def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule with its states and history (queued notifications still go)."""
        ...

    async def alert_states(self, rule_ids: Sequence[int] | None = None) -> list[AlertStateRow]:
        """The states of ``rule_ids`` (None: of every rule)."""
        ...

    async def rule_history(
        self, rule_id: int, limit: int, before_id: int | None = None
    ) -> list[AlertTransitionRow]:
        """A rule's transitions, newest first, with ids below ``before_id``."""
        ...

    async def acquire_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds if it is free, expired or
        ``holder``'s already; True if ``holder`` holds it now."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def save_evaluation(
        self, lease: str, holder: str, now: float, states: Sequence[AlertStateRow],
        transitions: Sequence[AlertTransitionRow], notifications: Sequence[OutboxRow],
    ) -> bool:
        """Store an evaluation's changed states, its transitions and the notifications
        they queue in one transaction, only while ``holder`` holds the lease (checked in
        that transaction): False, and nothing stored, if it does not."""
        ...

    async def due_notifications(self, now: float, limit: int) -> list[OutboxRow]:
        """Pending notifications whose ``next_at`` has come, oldest first."""
        ...

    async def update_notification(
        self, notification_id: int, status: str, attempts: int, next_at: float,
        finished_at: float | None, error: str | None,
    ) -> None: ...

    async def delete_finished_notifications(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` sent or given-up notifications finished before ``before``."""
        ...

    async def count_notifications(self) -> dict[str, int]:
        """status -> how many notifications are in the outbox."""
        ...
