"""Issue 9, "finite everywhere": every number that reaches the store is finite, checked by
one rule (``protocol.buckets.is_finite_bucket``) that every path building buckets
follows. A sample that would make its bucket's sum or count inf is dropped (reason
``overflow``) and the bucket keeps what it had; rates below ``RATE_FLOOR`` are
``bad_rate``, so ``1/rate`` cannot overflow."""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.buckets import RATE_FLOOR, SUM_SCALE, is_finite_bucket, merge
from protocol.graphite.series import divided_sum, fsum
from protocol.lines import Reason
from protocol.points import BatchReader, InvalidPoints, Window, batch_points, to_rows
from store.rollups import read_sum

NOW = int(time.time())
BIG = 1e308


def feed_all(agg: Aggregator, lines: list[bytes], *, packed: bool) -> None:
    if packed:
        agg.feed(b"\n".join(lines), NOW)
    else:
        for line in lines:
            agg.feed(line, NOW)


@pytest.mark.parametrize("packed", [True, False])
def test_the_second_1e308_of_a_second_is_dropped_as_overflow(
    implementation: str, packed: bool
) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    # a.b is learnt first, so the later lines take the fast path (C or Python loop)
    lines = [b"a:1|v", b"a:1|v", b"a:1e308|v", b"a:1e308|v", b"a:1e308|v", b"a:-1e308|v",
             b"a:-1e308|v", b"a:2|v"]
    feed_all(agg, lines, packed=packed)
    bucket = agg.buckets[NOW]["a"]
    # 1 + 1 + 1e308, the next two refused (inf), then - 1e308 - 1e308 + 2: all finite
    assert all(math.isfinite(x) for x in bucket[:4])
    assert agg.stats.drops == {Reason.OVERFLOW: 2}
    assert bucket[0] == 6.0 and bucket[1] == -1e308
    assert bucket[2] == -1e308 and bucket[3] == 1e308
    assert agg.stats.lines == 8 and agg.stats.samples == 6


@pytest.mark.parametrize(
    "line",
    [b"x:1e308|c|@0.1", b"x:-1e308|ms|@0.5", b"x:1.7976931348623157e308|c|@0.999999"],
)
def test_a_sampled_line_whose_weighted_sum_overflows_is_dropped(
    implementation: str, line: bytes
) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(line, NOW)
    assert agg.buckets == {}
    assert agg.pending_buckets == 0
    assert agg.stats.drops == {Reason.OVERFLOW: 1}


def test_a_subnormal_rate_is_a_bad_rate_not_a_poison_bucket(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"x:0|c|@1e-320\nx:0|c|@9e-7\nx:3|c|@1e-6", NOW)
    assert agg.stats.drops == {Reason.BAD_RATE: 2}
    assert agg.buckets[NOW]["x"][:4] == [1e6, 3e6, 3.0, 3.0]


def test_merge_refuses_what_would_not_be_finite_and_leaves_the_bucket() -> None:
    bucket = [1.0, BIG, BIG, BIG]
    assert merge(bucket, 1.0, BIG, BIG, BIG) is False
    assert bucket == [1.0, BIG, BIG, BIG]
    assert merge(bucket, 1.0, -BIG, -BIG, -BIG) is True
    assert bucket == [2.0, 0.0, -BIG, BIG]
    assert merge(bucket, 1.0, math.nan, 1.0, 1.0) is False
    assert merge(bucket, 1.0, 1.0, -math.inf, 1.0) is False
    assert merge(bucket, math.inf, 1.0, 1.0, 1.0) is False
    assert bucket == [2.0, 0.0, -BIG, BIG]
    assert is_finite_bucket(1.0, -0.0, 5e-324, -5e-324)
    assert not is_finite_bucket(1.0, math.inf, 0.0, 0.0)
    assert math.isfinite(1.7e302 / RATE_FLOOR)  # the floor's promise for the weight


WINDOW = Window(now=float(NOW), max_age=86400)


def test_http_batch_that_would_overflow_a_bucket_is_a_422_detail() -> None:
    body = {"points": [
        {"metric": "a", "type": "value", "value": BIG},
        {"metric": "b", "type": "value", "value": BIG},
        {"metric": "a", "type": "value", "value": BIG},  # a's second bucket: inf
    ]}
    for read in (lambda: to_rows(batch_points(body, WINDOW)),
                 lambda: BatchReader().rows(body, WINDOW)):
        with pytest.raises(InvalidPoints) as raised:
            read()
        assert [(e.index, e.field) for e in raised.value.errors] == [(2, "value")]
        assert "overflow" in raised.value.errors[0].message
    # other seconds or names are other buckets: accepted
    body["points"][2]["timestamp"] = NOW - 1
    assert len(BatchReader().rows(body, WINDOW)) == 3


# -- reads that add stored sums (store.rollups.read_sum, protocol.graphite.series) -----

# Finite doubles of every magnitude, the extremes (near 1.8e308, subnormals) often.
finite_sums = st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308,
                     math.ldexp(1.0, 1023), 5e-324, -5e-324, 0.0])), min_size=1, max_size=12)


def added_in_order(values: list[float]) -> tuple[float, bool]:
    """A database's SUM: added left to right; and whether a partial sum overflowed."""
    total, overflowed = 0.0, False
    for v in values:
        total += v
        overflowed |= math.isinf(total)
    return total, overflowed


def exact_sum(values: list[float]) -> float:
    """The sum rounded once, from exact rationals: +-inf when it is beyond the range."""
    total = sum(map(Fraction, values), Fraction(0))
    try:
        return float(total)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


TINY: Final = 2.0 ** -1000  # what subnormal terms may lose in a scaled sum, at most


@settings(max_examples=2000, deadline=None)
@given(finite_sums, st.sampled_from(["inf", "zero", "max"]))
def test_read_sum_is_the_plain_sum_or_the_exact_one_never_what_an_overflow_left(
    values: list[float], garbage: str
) -> None:
    plain, overflowed = added_in_order(values)
    scaled, _ = added_in_order([v * SUM_SCALE for v in values])
    if not overflowed:
        assert read_sum(plain, scaled) == plain  # bit for bit, subnormals included
        return
    # What the database answered for a sum that overflowed: SQLite inf, MariaDB 0 (or
    # the largest double, summed again in an outer query).
    answered = {"inf": math.inf, "zero": 0.0, "max": 1.7976931348623157e308}[garbage]
    got, exact = read_sum(answered, scaled), exact_sum(values)
    if math.isinf(exact) or math.isinf(got):
        # beyond the range, or within the rounding of the largest double
        assert got == exact or abs(exact) >= 1.7976931348623157e308 * (1 - 1e-14)
    else:  # added in order: the rounding of a plain sum, a few ulps per term
        assert abs(got - exact) <= 4 * len(values) * math.ulp(max(map(abs, values))) + TINY


@settings(max_examples=2000, deadline=None)
@given(finite_sums)
def test_graphite_sums_and_averages_never_raise(values: list[float]) -> None:
    total, exact = fsum(values), exact_sum(values)
    assert total == exact or abs(total - exact) <= TINY  # fsum: correctly rounded
    mean = divided_sum(values, len(values))
    expected = float(sum(map(Fraction, values), Fraction(0)) / len(values))
    assert abs(mean - expected) <= 2 * math.ulp(expected) + TINY  # always finite
