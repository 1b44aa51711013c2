"""Issue 9, "finite everywhere": every number that reaches the store is finite, checked by
one rule (``protocol.buckets.is_finite_bucket``) that every path building buckets
follows. A sample that would make its bucket's sum or count inf is dropped (reason
``overflow``) and the bucket keeps what it had; rates below ``RATE_FLOOR`` are
``bad_rate``, so ``1/rate`` cannot overflow."""

from __future__ import annotations

import math
import time

import pytest

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.buckets import RATE_FLOOR, is_finite_bucket, merge
from protocol.lines import Reason
from protocol.points import BatchReader, InvalidPoints, Window, batch_points, to_rows

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
