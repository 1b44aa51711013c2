"""Bucket math: merging (count, sum, min, max), interval alignment, aggregation, fill.

A bucket is ``[cnt, sum, mn, mx]``. ``cnt`` is a float because a sampled line
(``|@0.1``) stands for 1/rate samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple

Aggregation = Literal["sum", "avg", "min", "max", "count", "rate"]
AGGREGATIONS: Final = ("sum", "avg", "min", "max", "count", "rate")
Fill = Literal["zero", "null", "none"]
FILLS: Final = ("zero", "null", "none")
MAX_QUERY_BUCKETS: Final = 10_000


class BucketRow(NamedTuple):
    """One aggregated bucket as read from the store; ``ts`` is the bucket start."""

    ts: int
    cnt: float
    sum: float
    mn: float
    mx: float


# The smallest accepted ``@rate`` (line protocol): a sampled line stands for 1/rate
# samples, so the floor bounds that weight to 1e6 and ``value / rate`` stays finite for
# any value below ~1.8e302. Below it (``x:0|c|@1e-320``) 1/rate overflows to inf.
RATE_FLOOR: Final = 1e-6


def is_finite_bucket(cnt: float, total: float, mn: float, mx: float) -> bool:
    """The one rule of every path that builds buckets (collector, C accelerator, HTTP
    ingest, query merges): a bucket's four fields stay finite. A sample that would make
    one of them inf or NaN is refused (reason ``overflow``) and the bucket is left as it
    was; nothing non-finite ever reaches the store. Hot loops inline this check."""
    isfinite = math.isfinite
    return isfinite(cnt) and isfinite(total) and isfinite(mn) and isfinite(mx)


def merge(into: list[float], cnt: float, total: float, mn: float, mx: float) -> bool:
    """Add one (cnt, sum, min, max) into a bucket in place: the upsert's arithmetic.

    Returns False, leaving ``into`` untouched, if the result would not be finite
    (``is_finite_bucket``): the caller drops what it was adding as an overflow.
    """
    new_cnt = into[0] + cnt
    new_sum = into[1] + total
    if not is_finite_bucket(new_cnt, new_sum, mn, mx):
        return False
    into[0] = new_cnt
    into[1] = new_sum
    if mn < into[2]:
        into[2] = mn
    if mx > into[3]:
        into[3] = mx
    return True


def align(ts: int, interval: int) -> int:
    """Start of the interval containing ``ts``: epoch multiples (days at UTC midnight)."""
    return ts - ts % interval


def bucket_range(start: int, end: int, interval: int) -> range:
    """Bucket starts covering ``[align(start), end)``; ``end`` is exclusive."""
    return range(align(start, interval), end, interval)


def bucket_count(start: int, end: int, interval: int) -> int:
    return len(bucket_range(start, end, interval))


def default_fill(aggregation: Aggregation) -> Fill:
    """Empty buckets are 0 for additive aggregations, null where 0 would be a lie."""
    return "zero" if aggregation in ("sum", "count", "rate") else "null"


def aggregate(row: BucketRow, aggregation: Aggregation, interval: int) -> float:
    if aggregation == "sum":
        return row.sum
    if aggregation == "count":
        return row.cnt
    if aggregation == "avg":
        return row.sum / row.cnt if row.cnt else math.nan
    if aggregation == "min":
        return row.mn
    if aggregation == "max":
        return row.mx
    return row.sum / interval  # rate: per second


def series(
    rows: Iterable[BucketRow],
    start: int,
    end: int,
    interval: int,
    aggregation: Aggregation,
    fill: Fill | None = None,
) -> list[tuple[int, float | None]]:
    """The points of a query: one per bucket in ``[align(start), end)``.

    ``rows`` hold only non-empty buckets, already aligned to ``interval``. Empty buckets
    become 0 (``fill="zero"``), None (``"null"``) or are left out (``"none"``).
    """
    if fill is None:
        fill = default_fill(aggregation)
    by_ts = {row.ts: row for row in rows}
    out: list[tuple[int, float | None]] = []
    for ts in bucket_range(start, end, interval):
        row = by_ts.get(ts)
        if row is not None and row.cnt:
            out.append((ts, aggregate(row, aggregation, interval)))
        elif fill == "zero":
            out.append((ts, 0.0))
        elif fill == "null":
            out.append((ts, None))
    return out
