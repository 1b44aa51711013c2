"""Gauges and sets in the aggregator (issue 11).

Gauges as Etsy statsd keeps them (``stats.js``: ``if (key in gauges && signed) += else
=``): ``x|g`` sets, ``+x|g`` / ``-x|g`` add to the current value, and a delta on an
unseen gauge sets it to the signed value; the rate of a gauge line is ignored. The
current value survives take(), leaves with an idle name, and is restored at start-up.
Sets: a HyperLogLog of members per metric-minute; the buckets count lines.

Gauge and set lines take the general path in both implementations; the
``implementation`` fixture holds that the C pass hands them over whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.daemon import Collector
from collector.flusher import sketches_to_rows
from collector.stats import CollectorStats
from protocol import hll
from protocol.lines import Reason
from protocol.sketch import Sketch
from protocol.summary import encode_last
from store import Store
from store.base import Batch

MINUTE = 1_700_000_040
NOW = MINUTE + 30


def gauge_after(*lines: bytes) -> float:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    for line in lines:
        agg.feed(line, NOW)
    return agg.gauges["g"]


# -- gauges: Etsy statsd's edge cases ----------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"g:+5|g"], 5.0),  # a delta on an unseen gauge sets it
        ([b"g:-5|g"], -5.0),  # ... to the signed value: Etsy's documented quirk
        ([b"g:+0|g"], 0.0),
        ([b"g:10|g", b"g:+0|g"], 10.0),
        ([b"g:10|g", b"g:-0|g"], 10.0),
        ([b"g:10|g", b"g:+5|g"], 15.0),  # delta after absolute
        ([b"g:10|g", b"g:-15|g"], -5.0),
        ([b"g:+5|g", b"g:3|g"], 3.0),  # absolute after delta
        ([b"g:+5|g", b"g:+5|g", b"g:-2.5|g"], 7.5),
        ([b"g:10|g", b"g:+5|g|@0.5"], 15.0),  # the rate of a gauge line is ignored
        ([b"g:10|g|@0.1"], 10.0),
        ([b"g:0|g", b"g:-5|g"], -5.0),  # pystatsd's way to set a gauge below zero
        ([b"g:1e308|g", b"g:+1e308|g"], 1e308),  # inf: overflow, the gauge stays
        ([b"g:10|g\ng:+1|g\ng:+1|g"], 12.0),  # one datagram, in line order
        ([b"g:5|g|T1700000000", b"g:+1|g"], 6.0),  # by arrival, whatever the |T
    ],
)
def test_gauge_values(implementation: str, lines: list[bytes], expected: float) -> None:
    assert gauge_after(*lines).hex() == expected.hex()


def test_a_gauge_bucket_holds_the_resulting_values(implementation: str) -> None:
    """cnt/sum/min/max of the values the gauge took (weight 1 whatever the rate), and
    the minute's last value, by arrival order."""
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"g:10|g\ng:+5|g|@0.5\ng:-20|g\ng:4|g", NOW)
    assert agg.buckets[NOW]["g"] == [4.0, 24.0, -5.0, 15.0, "gauge"]  # 10, 15, -5, 4
    assert agg.sketches[MINUTE]["g"] == 4.0
    agg.feed(f"g:+1|g|T{NOW - 60}".encode(), NOW)  # an earlier minute: its own last
    assert agg.sketches[MINUTE - 60]["g"] == 5.0
    assert agg.sketches[MINUTE]["g"] == 4.0
    assert agg.gauges == {"g": 5.0}
    (row,) = [r for r in sketches_to_rows(agg.sketches) if r[2] == MINUTE]
    assert row == ("g", "gauge", MINUTE, encode_last(4.0))


def test_an_overflowing_delta_is_dropped_and_the_gauge_keeps_its_value(
    implementation: str,
) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"g:1e308|g\ng:+1e308|g", NOW)
    assert agg.stats.drops == {Reason.OVERFLOW: 1}
    assert agg.gauges["g"] == 1e308
    agg.feed(b"g:-1e308|g", NOW + 1)
    assert agg.gauges["g"] == 0.0
    # The bucket sums the values the gauge took, like a value's: a second of two
    # values near the float maximum overflows that sum, and its second is dropped.
    agg.feed(b"g:1e308|g\ng:+0|g", NOW + 2)
    assert agg.stats.drops == {Reason.OVERFLOW: 2}
    assert agg.buckets[NOW]["g"][0] == 1.0 and agg.buckets[NOW + 2]["g"][0] == 1.0


def test_the_gauge_survives_take(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"g:10|g", NOW)
    taken = agg.take()
    assert taken.sketches[MINUTE]["g"] == 10.0
    assert agg.sketches == {} and agg.gauges == {"g": 10.0}
    agg.feed(b"g:+1|g", NOW + 1)
    assert agg.gauges == {"g": 11.0}
    assert agg.buckets[NOW + 1]["g"] == [1.0, 11.0, 11.0, 11.0, "gauge"]
    assert agg.sketches[MINUTE]["g"] == 11.0


def test_an_idle_gauge_is_forgotten_and_a_delta_sets_it_anew(implementation: str) -> None:
    clock = [1000.0]
    config = CollectorConfig(metric_idle_ttl=60)
    agg = Aggregator(config, CollectorStats(), clock=lambda: clock[0])
    agg.feed(b"g:10|g\nother:1|c", NOW)
    agg.take()
    clock[0] += 30
    agg.feed(b"other:1|c", NOW + 30)
    agg.take()
    clock[0] += 31  # g idle for 61 s, other for 31 s
    while agg.evict_idle():
        pass
    assert "g" not in agg.kinds and "g" not in agg.gauges
    assert "other" in agg.kinds
    agg.feed(b"g:+1|g", NOW + 61)
    assert agg.gauges == {"g": 1.0}


def test_a_gauge_with_a_sample_since_the_last_take_is_not_idle(implementation: str) -> None:
    clock = [1000.0]
    agg = Aggregator(CollectorConfig(metric_idle_ttl=60), CollectorStats(),
                     clock=lambda: clock[0])
    agg.feed(b"g:10|g", NOW)
    agg.take()
    clock[0] += 100
    agg.feed(b"g:+1|g", NOW + 100)  # not taken yet
    while agg.evict_idle():
        pass
    assert agg.gauges == {"g": 11.0}


def test_gauge_kind_conflicts(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"c:1|c\nc:5|g\ns:u|s\ns:+1|g\ng:1|g\ng:1|c\ng:1|ms\ng:u|s", NOW)
    assert agg.stats.drops == {Reason.KIND_CONFLICT: 5}
    assert agg.gauges == {"g": 1.0}


# -- a |g of a value metric: a plain value --------------------------------------------


def test_a_gauge_line_of_a_value_name_is_a_plain_value_sample(implementation: str) -> None:
    """A name the collector knows as a value (stored before gauges existed) takes |g
    samples as values: no gauge, the sign is the value's, the rate weighs."""
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.learn_kinds({"old.g": "value"})
    for _ in range(2):  # the second time through the fast paths
        agg.feed(b"old.g:70|g\nold.g:-5|g\nold.g:+3|g|@0.5", NOW)
    assert agg.gauges == {}
    assert agg.buckets[NOW]["old.g"] == [8.0, 2 * (70 - 5 + 6), -5.0, 70.0, "value"]
    expected = Sketch()
    for value, weight in [(70.0, 1.0), (-5.0, 1.0), (3.0, 2.0)] * 2:
        expected.add(value, weight)
    assert sketches_to_rows(agg.sketches) == [
        ("old.g", "value", MINUTE, expected.to_bytes())]
    assert agg.stats.drops == {}


def test_the_store_correcting_a_gauge_to_a_value_drops_what_is_pending(
    implementation: str,
) -> None:
    """The store says "g" is a value (another process, or an old database): the
    gauge buckets and summaries pending here would be refused at their flush, so they
    are dropped now and counted; the next |g lines are values."""
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"g:10|g\ng:+1|g\nkeep:1|g", NOW)
    agg.learn_kinds({"g": "value", "keep": "gauge"})
    assert agg.stats.drops == {Reason.KIND_CONFLICT: 2}
    assert "g" not in agg.buckets[NOW] and "g" not in agg.sketches[MINUTE]
    assert agg.gauges == {"keep": 1.0}
    assert agg.pending_buckets == 2
    agg.feed(b"g:+1|g", NOW)
    assert agg.buckets[NOW]["g"] == [1.0, 1.0, 1.0, 1.0, "value"]


# -- restore at start-up --------------------------------------------------------------


def test_restore_gauges(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(max_metrics=4), CollectorStats())
    agg.feed(b"live:1|g\nvalue.name:1|ms", NOW)  # before the restore: newer than the store
    restored = agg.restore_gauges({"a": 7.0, "b": -2.5, "live": 100.0, "value.name": 3.0,
                                   "c": 1.0, "d": 2.0})
    assert restored == 2  # a, b; live is newer; value.name is a value; c, d: max_metrics
    assert agg.gauges == {"live": 1.0, "a": 7.0, "b": -2.5}
    assert agg.pending_buckets == 4  # nothing pending for a restore
    agg.feed(b"a:+1|g\nb:-1|g\nc:+1|g", NOW)
    assert agg.gauges == {"live": 1.0, "a": 8.0, "b": -3.5}
    assert agg.stats.drops == {Reason.TOO_MANY_METRICS: 1}


def test_a_restored_gauge_becomes_idle_from_its_restore(implementation: str) -> None:
    clock = [1000.0]
    agg = Aggregator(CollectorConfig(metric_idle_ttl=60), CollectorStats(),
                     clock=lambda: clock[0])
    agg.restore_gauges({"g": 5.0})
    clock[0] += 59
    while agg.evict_idle():
        pass
    assert agg.gauges == {"g": 5.0}
    clock[0] += 60
    while agg.evict_idle():
        pass
    assert agg.gauges == {}


async def test_the_daemon_restores_gauges_from_the_store(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """A collector started on a store that holds gauges applies the first deltas to
    their last values (Store.gauge_lasts: each gauge's newest minute)."""
    minute = MINUTE
    await sqlite_store.write_batch(Batch("before-restart", 1, [
        ("g", "gauge", minute + 1, 1.0, 40.0, 40.0, 40.0),
        ("g", "gauge", minute + 61, 1.0, 42.0, 42.0, 42.0),
    ], [("g", "gauge", minute, encode_last(40.0)), ("g", "gauge", minute + 60,
                                                    encode_last(42.0))]))
    config = CollectorConfig(udp_port=None, tcp_port=None, state_dir=tmp_path,
                             retention_interval=0)
    collector = Collector(config, sqlite_store)
    await collector.startup()
    try:
        assert collector.aggregator.gauges == {"g": 42.0}
        collector.aggregator.feed(b"g:+1|g", minute + 120)
        assert collector.aggregator.gauges == {"g": 43.0}
    finally:
        await collector.shutdown()
    assert await sqlite_store.gauge_lasts() == {"g": 43.0}


# -- sets --------------------------------------------------------------------------------


def test_a_set_counts_distinct_members_per_minute(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    for _ in range(2):
        agg.feed(b"s:alice|s\ns:bob|s\ns:alice|s|@0.5\ns:1|s\ns:1.0|s", NOW)
    agg.feed(f"s:carol|s|T{MINUTE - 1}".encode(), NOW)
    # the bucket counts lines (1/rate each), sum = count, min = max = 1
    assert agg.buckets[NOW]["s"] == [12.0, 12.0, 1.0, 1.0, "set"]
    summaries = {ts: round(hll.estimate(data)) for _name, _kind, ts, data in
                 sketches_to_rows(agg.sketches)}
    assert summaries == {MINUTE: 4, MINUTE - 60: 1}  # "1" and "1.0" are two members
    assert agg.pending_buckets == 2 + 2


def test_sets_of_many_members_within_two_percent(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    members = 50_000
    for start in range(0, members, 100):
        agg.feed(b"\n".join(f"users:u{i}|s".encode() for i in range(start, start + 100)), NOW)
        agg.feed(b"users:u0|s\nusers:u1|s", NOW)  # repeats
    ((_name, kind, ts, data),) = sketches_to_rows(agg.sketches)
    assert (kind, ts) == ("set", MINUTE)
    assert abs(hll.estimate(data) - members) / members < 0.02
    assert agg.buckets[NOW]["users"][0] == members + 2 * members / 100


def test_set_members_are_bounded(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"s:" + b"m" * 255 + b"|s\ns:" + b"m" * 256 + b"|s\ns:|s\ns:\xc3\xa9|s", NOW)
    assert agg.stats.drops == {Reason.BAD_VALUE: 3}
    assert agg.stats.samples == 1
