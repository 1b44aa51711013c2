"""A Graphite series (values at a fixed step), the read step, and consolidation.

A series holds one value or None per step from ``start``. Series read from the store
also carry each step's (count, sum) so that averaging steps together is exact: an
average of averages would weigh a quiet minute like a busy one. Likewise a series of
percentiles, distinct counts or last values carries each step's summary
(``Summaries``): drawn at fewer points, a point is read from the merge of its steps'
summaries, the p99 of all the samples of those steps, not a max of p99s. Functions
that change values drop both (and ``consolidateBy`` drops the summaries: an explicit
choice of function wins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from protocol.buckets import SUM_SCALE, summary_value
from protocol.names import Kind
from protocol.summary import merge as merge_summaries

Value = float | None

# The steps a series is read at: the stored levels (1 s, 1 min, 1 h) and days.
READ_STEPS: Final = (1, 60, 3600, 86400)
MAX_POINTS_PER_SERIES: Final = 10_000  # a read never holds more steps than this
CONSOLIDATIONS: Final = ("sum", "average", "avg", "min", "max", "first", "last")


# A step's summary: its bytes, None for an empty step, or INCOMPLETE for a step whose
# points no summary holds (wholly): a window holding one has no value.
INCOMPLETE: Final = b""


@dataclass(frozen=True, slots=True)
class Summaries:
    """Per step, the summary behind a value (protocol.summary) and how it is read."""

    kind: Kind  # the metric's: how its summaries merge
    aggregation: str  # pNN, unique, last: what a value is (protocol.buckets.summary_value)
    data: list[bytes | None]

    def window(self, low: int, high: int) -> Value:
        """The value of steps ``[low, high)`` together, from their merged summaries."""
        blobs = self.data[low:high]
        if INCOMPLETE in blobs:
            return None
        present = [b for b in blobs if b is not None]
        if not present:
            return None
        merged = present[0] if len(present) == 1 else merge_summaries(self.kind, present)
        value, _weight = summary_value(self.kind, self.aggregation, merged)
        return value


@dataclass(slots=True)
class Series:
    name: str
    start: int  # timestamp of values[0] (a multiple of step for stored series)
    step: int
    values: list[Value]
    path_expression: str = ""
    consolidation: str = "average"
    tags: dict[str, str] = field(default_factory=dict)
    # per step (count, sum) of the samples behind values: exact "average" consolidation
    weights: tuple[list[float], list[float]] | None = None
    # per step the summary behind values: exact percentiles (unique, last) consolidated
    summaries: Summaries | None = None

    @property
    def end(self) -> int:
        return self.start + self.step * len(self.values)

    def timestamps(self) -> range:
        return range(self.start, self.end, self.step)

    def derive(self, name: str, values: list[Value]) -> Series:
        """A copy with new values (weights and summaries dropped) and name (also its path
        expression)."""
        return replace(self, name=name, values=values, path_expression=name,
                       weights=None, summaries=None, tags=dict(self.tags))

    def renamed(self, name: str) -> Series:
        """The same values under another name (aliases keep the weights)."""
        return replace(self, name=name, tags=dict(self.tags))


def read_step(start: int, end: int, max_data_points: int | None, min_step: int = 1) -> int:
    """The step to read ``[start, end)`` at.

    The finest of READ_STEPS (at least ``min_step``, i.e. one still retained) that keeps
    the read under MAX_POINTS_PER_SERIES; with ``max_data_points``, the coarsest that
    still gives at least that many points, so little is read only to be consolidated.
    """
    span = max(end - start, 1)
    candidates = [s for s in READ_STEPS if s >= min_step] or [READ_STEPS[-1]]
    step = next((s for s in candidates if span / s <= MAX_POINTS_PER_SERIES), candidates[-1])
    if max_data_points:
        for s in candidates:
            if s > step and span / s >= max_data_points:
                step = s
    return step


def fsum(values: Iterable[float]) -> float:
    """``math.fsum`` that never raises: +-inf where the sum is beyond the double range,
    the exact sum where only a partial sum is (``math.fsum`` raises OverflowError for
    both: two stored values near 1.8e308 are legal), NaN for +inf and -inf together.
    The callers map what is not finite to null."""
    items = values if isinstance(values, list) else list(values)
    try:
        return math.fsum(items)
    except OverflowError:  # finite terms: scaled by a power of two they add exactly
        return math.fsum(v * SUM_SCALE for v in items) / SUM_SCALE
    except ValueError:  # +inf and -inf among the terms
        return math.nan


def divided_sum(values: Sequence[float], divisor: float) -> float:
    """``fsum(values) / divisor``, finite wherever the quotient is, even when the sum is
    not: the average of two values near 1.8e308 is one of them."""
    total = fsum(values)
    if math.isinf(total):
        return fsum([v * SUM_SCALE for v in values]) / divisor / SUM_SCALE
    return total / divisor


# Aggregate functions over the non-None values of a window (never empty).
def _average(values: Sequence[float]) -> float:
    return divided_sum(values, len(values))


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _multiply(values: Sequence[float]) -> float:
    return math.prod(values)


def _stddev(values: Sequence[float]) -> float:
    mean = _average(values)
    return math.sqrt(fsum((v - mean) * (v - mean) for v in values) / len(values))


AGG_FUNCS: Final[dict[str, Callable[[Sequence[float]], float]]] = {
    "average": _average,
    "avg": _average,
    "median": _median,
    "sum": fsum,
    "total": fsum,
    "min": min,
    "max": max,
    "diff": lambda v: v[0] - fsum(v[1:]),
    "stddev": _stddev,
    "count": lambda v: float(len(v)),
    "range": lambda v: max(v) - min(v),
    "rangeOf": lambda v: max(v) - min(v),
    "multiply": _multiply,
    "last": lambda v: v[-1],
    "current": lambda v: v[-1],
    "first": lambda v: v[0],
}


def aggregate(func: str, values: Sequence[Value]) -> Value:
    """``func`` over the non-None ``values``; None if there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    result = AGG_FUNCS[func](present)
    return result if math.isfinite(result) else None


def consolidate(series: Series, step: int) -> Series:
    """``series`` in buckets of ``step`` (a multiple of its step), aligned to epoch
    multiples of ``step``, each bucket by the series' consolidation function. A first
    bucket the series covers only in part is left out (graphite-web's nudge), so the
    buckets do not shift when the range moves."""
    if step == series.step or not series.values:
        return series
    per = step // series.step
    first = series.start - series.start % step
    if first < series.start:
        first += step
    skip = (first - series.start) // series.step
    values = series.values[skip:]
    func = "average" if series.consolidation == "avg" else series.consolidation
    out: list[Value] = []
    weights = series.weights
    summaries = series.summaries
    for i in range(0, len(values), per):
        if summaries is not None:
            out.append(summaries.window(skip + i, skip + i + per))
        elif func == "average" and weights is not None:
            counts = weights[0][skip + i:skip + i + per]
            sums = weights[1][skip + i:skip + i + per]
            total = fsum(counts)
            mean = divided_sum(sums, total) if total else None
            out.append(None if mean is None or not math.isfinite(mean) else mean)
        else:
            out.append(aggregate(func, values[i:i + per]))
    return replace(series, start=first, step=step, values=out, weights=None,
                   summaries=None)


def max_data_points(series: Series, points: int, time_range: int | None = None) -> Series:
    """graphite-web's maxDataPoints: ``valuesPerPoint = ceil(n / points)`` where n is
    ``time_range / step`` (graphite-web counts the requested range, not the values: a
    day at 1 min is 1,440 points though the bucket holding ``until`` makes 1,441)."""
    count = len(series.values) if time_range is None else time_range / series.step
    if points <= 0 or count <= points:
        return series
    per = math.ceil(count / points)
    return consolidate(series, series.step * per)


def normalize(series_list: Sequence[Series]) -> tuple[int, int, int, list[list[Value]]]:
    """Align series of any steps: (start, end, step, values per series) at the least
    common multiple of their steps, each consolidated by its own function."""
    step = math.lcm(*(s.step for s in series_list))
    aligned = [consolidate(s, step) for s in series_list]
    start = min(s.start for s in aligned)
    end = max(s.end for s in aligned)
    rows: list[list[Value]] = []
    for s in aligned:
        lead = (s.start - start) // step
        rows.append([None] * lead + s.values + [None] * ((end - s.end) // step))
    return start, end, step, rows
