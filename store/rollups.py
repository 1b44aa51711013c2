"""Rollup levels (points_1m, points_1h) shared by both backends: pure code, no SQL I/O.

A flush writes its per-second rows to points_1s and the same rows summed per minute and
per hour to points_1m and points_1h, in the same transaction and with the same additive
upsert, so every level holds exactly the totals of the seconds below it (as long as the
seconds have not been expired by the shorter raw retention).

A read of ``interval``-second buckets is answered from the coarsest level whose step
divides the interval, for the whole steps of the range, and from the finer levels for
the unaligned tail: the answer equals a scan of points_1s, for a fraction of the rows.
"""

from __future__ import annotations

import sys
from typing import Final

# (table, step in seconds), coarsest first. points_1s is the raw level.
LEVELS: Final = (("points_1h", 3600), ("points_1m", 60), ("points_1s", 1))
ROLLUPS: Final = (("points_1m", 60), ("points_1h", 3600))
POINT_TABLES: Final = frozenset(table for table, _ in LEVELS)
STEPS: Final = dict(LEVELS)  # table -> step

IdRow = tuple[int, int, float, float, float, float]  # (metric_id, ts, cnt, sum, mn, mx)

# Every stored number is finite. Each incoming bucket is (the parsers and
# protocol.buckets see to it), but two finite sums can add up to infinity: in the
# database's additive upsert (many writers, and the rollups, merge there) and in
# ``rollup``. There, a bucket whose sum would overflow is not merged: the row keeps
# what it had. ``|new| <= MAX - |old|`` cannot overflow itself, and it is true
# whenever the sum is finite but for sums within |new| of the largest double.
MAX_FLOAT: Final = sys.float_info.max
SUM_FITS_SQL: Final = "ABS({new}) <= " + repr(MAX_FLOAT) + " - ABS(`sum`)"


def upsert_assignments(new: str, least: str, greatest: str) -> str:
    """The SET list of the additive upsert, ``new`` the incoming row's column as the
    dialect spells it (``VALUES({})`` in MySQL, ``excluded.{}`` in SQLite), ``least``
    and ``greatest`` its two-argument min and max (``LEAST``; SQLite's ``min``). ``sum`` is
    assigned last: MySQL evaluates the list in order, each term seeing the ones before,
    so every guard must read the old ``sum``."""
    fits = SUM_FITS_SQL.format(new=new.format("`sum`"))

    def guarded(column: str, merged: str) -> str:
        return f"{column} = CASE WHEN {fits} THEN {merged} ELSE {column} END"

    return ", ".join([
        guarded("cnt", "cnt + " + new.format("cnt")),
        guarded("mn", f"{least}(mn, {new.format('mn')})"),
        guarded("mx", f"{greatest}(mx, {new.format('mx')})"),
        guarded("`sum`", "`sum` + " + new.format("`sum`")),
    ])


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
    """``table`` if it is a point table; it goes into SQL text, so nothing else may."""
    if table not in POINT_TABLES:
        raise ValueError(f"not a point table: {table!r}")
    return table
