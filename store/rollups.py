"""Rollup levels (points_1m, points_1h) shared by both backends: pure code, no SQL I/O.

A flush writes its per-second rows to points_1s and the same rows summed per minute and
per hour to points_1m and points_1h, in the same transaction and with the same additive
upsert, so every level holds exactly the totals of the seconds below it (as long as the
seconds have not been expired by the shorter raw retention).

A read of ``interval``-second buckets is answered from the coarsest level whose step
divides the interval, for the whole steps of the range, and from the finer levels for
the unaligned tail: the answer equals a scan of points_1s, for a fraction of the rows.

Summaries (sketch_1m, sketch_1h; protocol.summary) are the same idea for what does not
add as numbers: one blob per metric and minute (hour), merged by kind on write, in the
flush transaction, so the hour always equals the merge of its minutes. Their write
grouping, read plan and the migration's fill from the per-second rows are here too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Final, Literal, TypeVar, get_args

from protocol import summary
from protocol.buckets import SUM_SCALE
from protocol.names import Kind
from protocol.sketch import DEFAULT_ALPHA_BP, Sketch

# (table, step in seconds), coarsest first. points_1s is the raw level.
LEVELS: Final = (("points_1h", 3600), ("points_1m", 60), ("points_1s", 1))
ROLLUPS: Final = (("points_1m", 60), ("points_1h", 3600))
POINT_TABLES: Final = frozenset(table for table, _ in LEVELS)
STEPS: Final = dict(LEVELS)  # table -> step
# Summary levels, finest first (the order a batch writes them in: one lock order).
# Minutes are the finest: there are no per-second summaries.
SKETCH_LEVELS: Final = (("sketch_1m", 60), ("sketch_1h", 3600))
SKETCH_TABLES: Final = frozenset(table for table, _ in SKETCH_LEVELS)
# A summary level is kept as long as the point level of the same step.
SKETCH_RETENTION: Final = {"sketch_1m": "points_1m", "sketch_1h": "points_1h"}

IdRow = tuple[int, int, float, float, float, float]  # (metric_id, ts, cnt, sum, mn, mx)

# Every stored number is finite. Each incoming bucket is (the parsers and
# protocol.buckets see to it), but two finite sums can add up to infinity: in the
# database's additive upsert (many writers, and the rollups, merge there) and in
# ``rollup``. There, a bucket whose sum would overflow is not merged: the row keeps
# what it had. ``|new| <= MAX - |old|`` cannot overflow itself, and it is true
# whenever the sum is finite but for sums within |new| of the largest double.
MAX_FLOAT: Final = sys.float_info.max
SUM_FITS_SQL: Final = "ABS({new}) <= " + repr(MAX_FLOAT) + " - ABS(`sum`)"


def _merged_columns(new: str, least: str, greatest: str) -> list[tuple[str, str]]:
    """(column, merged value) of the additive upsert, ``sum`` last, ``new`` the incoming
    row's column as the dialect spells it (``VALUES({})`` in MySQL, ``excluded.{}`` in
    SQLite), ``least`` and ``greatest`` its two-argument min and max (``LEAST``;
    SQLite's ``min``)."""
    return [("cnt", "cnt + " + new.format("cnt")),
            ("mn", f"{least}(mn, {new.format('mn')})"),
            ("mx", f"{greatest}(mx, {new.format('mx')})"),
            ("`sum`", "`sum` + " + new.format("`sum`"))]


def upsert_assignments(new: str, least: str, greatest: str) -> str:
    """The SET list of the additive upsert (arguments as in ``_merged_columns``), each
    column guarded by a CASE: for MySQL's ON DUPLICATE KEY UPDATE, which has no WHERE.
    ``sum`` is assigned last: MySQL evaluates the list in order, each term seeing the
    ones before, so every guard must read the old ``sum``."""
    fits = SUM_FITS_SQL.format(new=new.format("`sum`"))
    return ", ".join(f"{column} = CASE WHEN {fits} THEN {merged} ELSE {column} END"
                     for column, merged in _merged_columns(new, least, greatest))


def upsert_update_where(new: str, least: str, greatest: str) -> str:
    """The additive upsert as ``DO UPDATE SET ... WHERE`` (SQLite's upsert has the
    WHERE): the guard is evaluated once, not once per column, and a row it refuses
    keeps what it had, as with ``upsert_assignments``. Every term sees the old row
    (SQLite evaluates the whole SET list before assigning)."""
    return (", ".join(f"{column} = {merged}"
                      for column, merged in _merged_columns(new, least, greatest))
            + " WHERE " + SUM_FITS_SQL.format(new=new.format("`sum`")))


# Migration 2 fills the rollups from the seconds an older install stored. SQL adds them,
# but in the order of the GROUP BY and unguarded: a partial sum could overflow (SQLite
# would store inf, MariaDB fails with error 1264). So SQL fills only the groups whose
# absolute values add up to at most half the double range, where no partial sum can
# overflow, and the others (in practice none) are summed in Python by ``rollup``, the
# flush's own guard. The sum of absolutes is taken scaled, so it cannot overflow either.
FILL_SAFE_SQL: Final = (
    f"SUM(ABS(`sum`) * {SUM_SCALE!r}) <= {MAX_FLOAT * SUM_SCALE / 2!r}"
)


def fill_groups_sql(step: int, div: str, safe: bool) -> str:
    """The groups of points_1s, per metric and ``step``, that migration 2 fills: the
    safe ones (summed by SQL) or the others (their sums are not to be used). ``div`` is
    the dialect's integer division (``DIV`` in MySQL, ``/`` on SQLite's integers)."""
    having = FILL_SAFE_SQL if safe else f"NOT ({FILL_SAFE_SQL})"
    return (f"SELECT metric_id, ts {div} {step} * {step} AS t, SUM(cnt), SUM(`sum`), "
            f"MIN(mn), MAX(mx) FROM points_1s GROUP BY metric_id, t HAVING {having} "
            "ORDER BY metric_id, t")


def rollup(rows: list[IdRow], step: int) -> list[IdRow]:
    """Sum ``rows`` per (metric, step-aligned ts).

    ``rows`` must be sorted by (metric_id, ts), as the writers sort them for one lock
    order; then each output row gathers adjacent input rows: one pass, no hashing, and
    the output is sorted too, so a coarser level can be rolled up from a finer one.
    """
    out: list[IdRow] = []
    append = out.append
    last_id = last_ts = -1
    cnt = total = mn = mx = 0.0
    for metric_id, ts, c, s, lo, hi in rows:
        start = ts - ts % step
        if start == last_ts and metric_id == last_id:
            if not -MAX_FLOAT <= total + s <= MAX_FLOAT:
                continue  # would overflow: not merged (see SUM_FITS_SQL)
            cnt += c
            total += s
            if lo < mn:
                mn = lo
            if hi > mx:
                mx = hi
        else:
            if last_id != -1:
                append((last_id, last_ts, cnt, total, mn, mx))
            last_id, last_ts, cnt, total, mn, mx = metric_id, start, c, s, lo, hi
    if last_id != -1:
        append((last_id, last_ts, cnt, total, mn, mx))
    return out


# A read adds stored sums in SQL, and finite sums can add up past the double range: then
# SQLite's SUM answers inf, MariaDB's silently 0 (or, summed again in an outer query,
# 1.8e308). So every summing read also sums ``sum`` scaled by 2**-64 (SCALED_SUM_SQL):
# scaling by a power of two is exact, so the scaled terms and partial sums are the plain
# ones bit for bit, except that they cannot overflow and that terms below ~1e-289 lose
# bits as subnormals. ``read_sum`` keeps the plain sum where the two agree and scales the
# other back where they do not: the sum as the database would have added it, or +-inf
# when it is beyond the double range (the callers answer that as such, never as 0).
TotalColumn = Literal["cnt", "sum"]  # the columns a merged read totals


def scaled_sum_sql(column: TotalColumn) -> str:
    """``SUM`` of a column scaled by 2**-64 (5.42e-20: a DOUBLE in MySQL too)."""
    return f"SUM(`{column}` * {SUM_SCALE!r})"


def check_total_column(column: str) -> None:
    """A merged read totals only ``TotalColumn``'s columns (each a name in its SQL)."""
    if column not in get_args(TotalColumn):
        raise ValueError(f"cannot total column {column!r}")


SCALED_SUM_SQL: Final = scaled_sum_sql("sum")
_SUBNORMAL_SLACK: Final = 2.0 ** -900  # what the subnormal terms can lose, generously


def read_sum(total: float | None, scaled: float) -> float:
    """A bucket's sum from the database's ``SUM(`sum`)`` and ``SCALED_SUM_SQL``: finite,
    or +-inf if it is beyond the double range."""
    unscaled = scaled / SUM_SCALE
    if total is not None and abs(total - unscaled) <= _SUBNORMAL_SLACK:
        return total
    return unscaled


def plan_reads(start: int, end: int, interval: int) -> list[tuple[str, int, int]]:
    """The (table, from, to) reads that answer ``[start, end)`` in ``interval`` buckets.

    ``start`` must be aligned to ``interval``. Each level whose step divides the
    interval covers the whole steps left, finer levels the tail before ``end``.
    """
    reads: list[tuple[str, int, int]] = []
    low = start
    for table, step in LEVELS:
        if interval % step:
            continue
        high = end - end % step
        if high > low:
            reads.append((table, low, high))
            low = high
        if low >= end:
            break
    return reads


def window_plan(start: int, end: int) -> list[tuple[str, int, int]]:
    """The (table, from, to) reads that cover ``[start, end)`` exactly: each level the
    whole steps it holds, the finer levels the edges (unlike ``plan_reads``, neither end
    need be aligned). An alert's sliding window is read this way."""

    def plan(low: int, high: int, levels: tuple[tuple[str, int], ...]) -> list[
            tuple[str, int, int]]:
        if low >= high or not levels:
            return []
        (table, step), finer = levels[0], levels[1:]
        first, last = -(-low // step) * step, high - high % step
        if first >= last:
            return plan(low, high, finer)
        return [*plan(low, first, finer), (table, first, last), *plan(last, high, finer)]

    return plan(start, end, LEVELS)


def check_table(table: str) -> str:
    """``table`` if it is a point or summary table (one retention deletes from); it goes
    into SQL text, so nothing else may."""
    if table not in POINT_TABLES and table not in SKETCH_TABLES:
        raise ValueError(f"not a point or sketch table: {table!r}")
    return table


# -- summaries ------------------------------------------------------------------------

SUMMARY_KINDS: Final = frozenset({"value", "set", "gauge"})  # counters have none
IdSketch = tuple[int, int, Kind, bytes]  # (metric_id, ts, kind, data)
SketchKey = tuple[int, int]  # (metric_id, ts)


M = TypeVar("M", int, str)  # a metric: its id, or (before ids are known) its name


class SketchDataError(ValueError):
    """A summary that cannot be merged: new data not of its kind, or a stored blob that
    cannot be read. ``metric`` (id or name) and ``ts`` name the key."""

    def __init__(self, metric: int | str, ts: int, message: str) -> None:
        super().__init__(message)
        self.metric = metric
        self.ts = ts

    def describe(self, names: dict[int, str] | None = None) -> str:
        """The message with the metric's name (when known) for the log and quarantine."""
        metric = self.metric
        if isinstance(metric, int):
            metric = (names or {}).get(metric, f"metric id {metric}")
        return f"{metric} at {self.ts}: {self}"


def group_sketches(rows: Iterable[tuple[M, int, Kind, bytes]], step: int, *,
                   checked: bool = False) -> list[tuple[M, int, Kind, bytes]]:
    """``rows`` merged per (metric, step-aligned ts) with protocol.summary.merge, in the
    order given (a gauge's later row wins), sorted by key: one row per key, in the one
    lock order of every writer.

    Raises SketchDataError when a row's data is not a summary of its kind.
    ``checked``: the rows were merged (so validated) before; a key with one row keeps
    its data as it is (the hours of a batch, grouped from its minutes).
    """
    groups: dict[tuple[M, int], tuple[Kind, list[bytes]]] = {}
    for metric, ts, kind, data in rows:
        at = (metric, ts - ts % step)
        group = groups.get(at)
        if group is None:
            groups[at] = (kind, [data])
        else:
            group[1].append(data)
    out: list[tuple[M, int, Kind, bytes]] = []
    for (metric, ts), (kind, blobs) in sorted(groups.items()):
        if checked and len(blobs) == 1:
            out.append((metric, ts, kind, blobs[0]))
            continue
        try:
            merged = summary.merge(kind, blobs)
        except ValueError as exc:
            raise SketchDataError(metric, ts, f"not a {kind} summary: {exc}") from exc
        out.append((metric, ts, kind, merged))
    return out


def merge_stored(rows: Sequence[IdSketch], stored: dict[SketchKey, bytes]
                 ) -> list[tuple[int, int, bytes]]:
    """(metric_id, ts, data) to store: each row merged into what is stored for its key,
    the stored summary first (a gauge's new value wins). An empty stored blob is the
    placeholder a writer inserts to lock a new key (store.mysql): nothing stored yet.

    Raises SketchDataError when a stored summary cannot be read (never stored by us)."""
    return [(metric_id, ts, merge_into_stored(kind, metric_id, ts, stored.get((metric_id, ts)),
                                              data))
            for metric_id, ts, kind, data in rows]


def merge_into_stored(kind: Kind, metric_id: int, ts: int, old: bytes | None,
                      data: bytes) -> bytes:
    """``data`` merged into ``old``, the summary stored for (metric_id, ts), if any.

    Raises SketchDataError when ``old`` cannot be read."""
    if not old:
        return data
    try:
        return summary.merge(kind, [old, data])
    except ValueError as exc:
        raise SketchDataError(metric_id, ts, f"the stored {kind} summary cannot be "
                              f"merged: {exc}") from exc


def sketch_plan(start: int, end: int, interval: int) -> list[tuple[str, int, int]]:
    """The (table, from, to) reads of summaries for ``interval``-second buckets over
    ``[align(start), end)``: whole hours from sketch_1h when the interval is a multiple
    of 3600, everything else from sketch_1m. Raises ValueError unless ``interval`` is
    a positive multiple of 60 (there are no finer summaries)."""
    if interval <= 0 or interval % 60:
        raise ValueError(f"summaries answer intervals that are multiples of 60 seconds, "
                         f"not {interval}")
    low = start - start % interval
    reads: list[tuple[str, int, int]] = []
    if interval % 3600 == 0:
        high = end - end % 3600
        if high > low:
            reads.append(("sketch_1h", low, high))
            low = high
    if end > low:
        reads.append(("sketch_1m", low, end))
    return reads


def merge_buckets(kind: Kind, rows: Iterable[tuple[int, bytes]], interval: int
                  ) -> list[tuple[int, bytes]]:
    """Stored (ts, data) rows in ascending ts order merged into one summary per
    ``interval`` bucket: (bucket start, data), ascending. A bucket of one row is that
    row's data as stored (validated when it was written). Raises ValueError."""
    out: list[tuple[int, bytes]] = []
    bucket = -1
    blobs: list[bytes] = []
    for ts, data in rows:
        start = ts - ts % interval
        if start != bucket:
            if blobs:
                out.append((bucket, blobs[0] if len(blobs) == 1 else summary.merge(kind, blobs)))
            bucket, blobs = start, []
        blobs.append(data)
    if blobs:
        out.append((bucket, blobs[0] if len(blobs) == 1 else summary.merge(kind, blobs)))
    return out


# -- migration 4: summaries for the value data stored before them -----------------------

FILL_PAGE: Final = 5_000  # per-second rows a fill query reads (~15 ms of decoding on the loop)


def counts_match(a: float, b: float) -> bool:
    """Two totals of the same seconds' counts are equal. Every stored second holds at
    least one sample (a weight is 1/rate >= 1), so a missing second changes a total by
    1 or more; summing in another order changes it by far less than 0.5."""
    return abs(a - b) < 0.5


class MinuteFill:
    """The exact sketches of one value metric's minutes, from its per-second rows.

    A second whose ``mn == mx`` held ``cnt`` samples all equal to ``mn``: its sketch is
    exact (weight ``cnt`` at ``mn``). A minute all of whose stored seconds are such is
    filled; any other minute is not (its samples cannot be recovered). Feed rows in ts
    order (``add``, page by page), then ``end``; each returns the minutes closed as
    (minute, cnt of its seconds, sketch bytes or None). The caller still checks the
    count against points_1m: seconds already expired by the raw retention leave a
    minute incomplete (``counts_match``).
    """

    __slots__ = ("_alpha_bp", "_clean", "_cnt", "_minute", "_samples")

    def __init__(self, alpha_bp: int = DEFAULT_ALPHA_BP) -> None:
        self._alpha_bp = alpha_bp
        self._minute = -1
        self._cnt = 0.0
        self._clean = True
        self._samples: list[tuple[float, float]] = []

    def add(self, rows: Iterable[tuple[int, float, float, float]]
            ) -> list[tuple[int, float, bytes | None]]:
        out: list[tuple[int, float, bytes | None]] = []
        for ts, cnt, mn, mx in rows:
            minute = ts - ts % 60
            if minute != self._minute:
                if self._minute != -1:
                    out.append(self._close())
                self._minute, self._cnt, self._clean, self._samples = minute, 0.0, True, []
            self._cnt += cnt
            if mn != mx or not cnt > 0:
                self._clean = False
            elif self._clean:
                self._samples.append((mn, cnt))
        return out

    def end(self) -> list[tuple[int, float, bytes | None]]:
        if self._minute == -1:
            return []
        closed = self._close()
        self._minute = -1
        return [closed]

    def _close(self) -> tuple[int, float, bytes | None]:
        if not self._clean:
            return self._minute, self._cnt, None
        sketch = Sketch(self._alpha_bp)
        for value, weight in self._samples:
            sketch.add(value, weight)
        return self._minute, self._cnt, sketch.to_bytes()


class HourFill:
    """Filled minutes of one metric (ts order) in, hours out as (hour, cnt of its filled
    minutes, their sketches). The caller fills an hour only when that count equals the
    hour's in points_1h (``counts_match``): then every minute of it was filled."""

    __slots__ = ("_blobs", "_cnt", "_hour")

    def __init__(self) -> None:
        self._hour = -1
        self._cnt = 0.0
        self._blobs: list[bytes] = []

    def add(self, minutes: Iterable[tuple[int, float, bytes]]
            ) -> list[tuple[int, float, list[bytes]]]:
        out: list[tuple[int, float, list[bytes]]] = []
        for ts, cnt, data in minutes:
            hour = ts - ts % 3600
            if hour != self._hour:
                if self._hour != -1:
                    out.append((self._hour, self._cnt, self._blobs))
                self._hour, self._cnt, self._blobs = hour, 0.0, []
            self._cnt += cnt
            self._blobs.append(data)
        return out

    def end(self) -> list[tuple[int, float, list[bytes]]]:
        if self._hour == -1:
            return []
        out = [(self._hour, self._cnt, self._blobs)]
        self._hour, self._cnt, self._blobs = -1, 0.0, []
        return out


def exact_minutes(closed: Iterable[tuple[int, float, bytes | None]],
                  stored: dict[int, float]) -> list[tuple[int, float, bytes]]:
    """The closed minutes to fill: clean, and with every second still stored (their
    count equals the minute's ``stored`` count in points_1m)."""
    return [(ts, cnt, data) for ts, cnt, data in closed
            if data is not None and ts in stored and counts_match(cnt, stored[ts])]


def exact_hours(closed: Iterable[tuple[int, float, list[bytes]]],
                stored: dict[int, float]) -> list[tuple[int, bytes]]:
    """The closed hours to fill (every minute filled: see HourFill), merged."""
    return [(ts, summary.merge("value", blobs)) for ts, cnt, blobs in closed
            if ts in stored and counts_match(cnt, stored[ts])]
