"""Bucket math: merging (count, sum, min, max), interval alignment, aggregation, fill,
and the names of every aggregation a query may ask for, by metric kind.

A bucket is ``[cnt, sum, mn, mx]``. ``cnt`` is a float because a sampled line
(``|@0.1``) stands for 1/rate samples.

Beside the six aggregations of a bucket's four numbers (``AGGREGATIONS``), three are
read from the per-minute summaries (protocol.summary): percentiles of values (``p99``),
the distinct count of a set (``unique``) and a gauge's last value (``last``). Those
need an interval of whole minutes: the minute is the finest level summaries are kept
at (``SUMMARY_INTERVAL``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple

from protocol import hll
from protocol.sketch import Sketch
from protocol.summary import decode_last

Aggregation = Literal["sum", "avg", "min", "max", "count", "rate"]
AGGREGATIONS: Final = ("sum", "avg", "min", "max", "count", "rate")
Fill = Literal["zero", "null", "none"]
FILLS: Final = ("zero", "null", "none")
MAX_QUERY_BUCKETS: Final = 10_000

# Read from the summaries, not the buckets: "unique" (sets), "last" (gauges) and the
# percentiles of values, any "pNN" / "pNN.N" (``percentile``); the named ones below are
# what pickers and Graphite listings offer.
UNIQUE: Final = "unique"
LAST: Final = "last"
PERCENTILES: Final = ("p50", "p75", "p90", "p95", "p99", "p999")
SUMMARY_INTERVAL: Final = 60  # seconds: summaries are per minute, and per hour

# p0..p99 with up to 4 decimals (p99.95), or p99 followed by more nines-and-digits read
# as decimals of 99 (p999 = 99.9%, p9999 = 99.99%, p995 = 99.5%), as StatsD tools write
# them. "p100" is not one: read as p10.0 or as the maximum it would surprise someone.
_PERCENTILE = re.compile(r"p(?:(0|[1-9][0-9]?)(?:\.([0-9]{1,4}))?|99([0-9]{1,4}))", re.ASCII)
PERCENTILE_PATTERN: Final = r"^p((0|[1-9][0-9]?)(\.[0-9]{1,4})?|99[0-9]{1,4})$"


# Sums near the largest double (legal: each stored one is finite) can add up past it.
# Scaled by this power of two, terms and partial sums are the same floats bit for bit
# (but for subnormals) and cannot overflow: the reads in SQL (store.rollups.read_sum)
# and Graphite's sums (protocol.graphite.series.fsum) add them so.
SUM_SCALE: Final = 2.0 ** -64


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


def default_fill(aggregation: str) -> Fill:
    """Empty buckets are 0 for additive aggregations, null where 0 would be a lie
    (percentiles, unique and last too: an empty bucket has none)."""
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


# -- aggregations by kind ----------------------------------------------------------


def percentile(aggregation: str) -> float | None:
    """The quantile (0..1) a percentile aggregation names (``p50`` 0.5, ``p5`` 0.05,
    ``p99.5`` 0.995, ``p999`` 0.999, ``p9999`` 0.9999), or None if it names none."""
    match = _PERCENTILE.fullmatch(aggregation)
    if match is None:
        return None
    whole, decimals, nines = match.groups()
    if nines is not None:
        whole, decimals = "99", nines
    digits = whole + (decimals or "")
    # "995e-3": the decimal text read once, so p99.9 is the double nearest 0.999
    return float(f"{digits}e-{2 + len(decimals or '')}")


def is_summary_aggregation(aggregation: str) -> bool:
    """Read from the per-minute summaries (needs whole minutes), not the buckets."""
    return aggregation in (UNIQUE, LAST) or percentile(aggregation) is not None


# What each kind answers. Percentiles are any pNN (``percentile``); the lists name
# them once as "pNN" for messages and docs.
_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    "counter": AGGREGATIONS,
    "value": (*AGGREGATIONS, "pNN"),
    "gauge": (*AGGREGATIONS, LAST),
    "set": ("count", "rate", UNIQUE),
}


def kind_aggregations(kind: str) -> tuple[str, ...]:
    """The aggregations a metric of ``kind`` answers (percentiles written ``pNN``)."""
    return _BY_KIND.get(kind, AGGREGATIONS)


def aggregation_error(kind: str, aggregation: str) -> str | None:
    """Why a metric of ``kind`` cannot answer ``aggregation`` (None: it can)."""
    accepted = kind_aggregations(kind)
    name = "pNN" if percentile(aggregation) is not None else aggregation
    if name in accepted:
        return None
    listed = ", ".join(
        "p50, p90, p99, p999 or any pNN / pNN.N" if a == "pNN" else a for a in accepted)
    if name not in (*AGGREGATIONS, UNIQUE, LAST, "pNN"):
        return f"unknown aggregation {aggregation!r}; a {kind} answers {listed}"
    return f"a {kind} has no {aggregation!r}; it answers {listed}"


def summary_interval_error(aggregation: str, interval: int) -> str | None:
    """Why ``interval`` cannot answer a summary aggregation (None: it can)."""
    if interval % SUMMARY_INTERVAL == 0:
        return None
    return (f"{aggregation} is read from per-minute summaries: the interval must be a "
            f"whole number of minutes, not {interval} s (the smallest is 1m, 'minute')")


def summary_value(kind: str, aggregation: str, data: bytes) -> tuple[float | None, float | None]:
    """A summary aggregation of one bucket's summary (protocol.summary): (the value,
    the weight of the samples behind it), the weight None where the summary keeps no
    count (a set's HyperLogLog, a gauge's last value). Raises ValueError (SketchError)
    for bytes that are not a summary of ``kind``, or an aggregation it does not answer."""
    if kind == "value":
        q = percentile(aggregation)
        if q is not None:
            sketch = Sketch.from_bytes(data)
            return sketch.quantile(q), sketch.count
    elif kind == "set" and aggregation == UNIQUE:
        # a count of members is whole: the HLL's small-count modes are exact up to the
        # estimator's correction (2.000000005 for two members)
        return float(round(hll.estimate(data))), None
    elif kind == "gauge" and aggregation == LAST:
        return decode_last(data), None
    raise ValueError(f"a {kind} has no summary aggregation {aggregation!r}")


def covers(summary_weight: float | None, cnt: float) -> bool:
    """Does a bucket's summary hold all of its ``cnt`` samples? A minute's sketch holds
    as much weight as the minute's buckets (both add 1/rate a sample), so one holding
    less (minutes written before sketches existed, or by a writer that kept none) would
    answer for part of the bucket only. Every sample weighs 1/rate >= 1, so a missing
    one shows as 1 or more; adding in another order moves a total by far less than 0.5.
    A summary without a count is taken as whole. (It may hold more: the range's last
    minute is read whole.)"""
    if summary_weight is None:
        return True
    return summary_weight > cnt - 0.5
