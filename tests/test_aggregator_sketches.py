"""Value metrics keep a quantile sketch per metric-minute beside their per-second buckets
(issue 11): the weight of a sample is 1/rate, as in the count; a minute's samples go to
that minute's sketch whatever second they arrive in; summaries count against
max_pending_buckets; the flusher writes them as SketchRows. The C pass (which adds to
protocol._sketch sketches through their capsule) and the pure-Python path (the
reference PySketch) give the same bytes."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import aggregator
from collector.aggregator import Aggregator, Sketches
from collector.config import CollectorConfig
from collector.flusher import Flusher, sketches_to_rows
from collector.stats import CollectorStats
from protocol import hll
from protocol.lines import Reason
from protocol.names import Kind
from protocol.sketch import PySketch
from protocol.summary import decode_last
from store import Store
from store.durable import DurableWriter

MINUTE = 1_700_000_040  # a multiple of 60
NOW = MINUTE + 30


def reference(*samples: tuple[float, float], alpha_bp: int = 100) -> bytes:
    sketch = PySketch(alpha_bp)
    for value, weight in samples:
        sketch.add(value, weight)
    return sketch.to_bytes()


def rows(sketches: Sketches) -> dict[tuple[str, int], tuple[str, bytes]]:
    return {(name, ts): (kind, data) for name, kind, ts, data in sketches_to_rows(sketches)}


def test_a_sample_weighs_one_over_its_rate_in_the_sketch_as_in_the_count(
    implementation: str,
) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    lines = b"t:10|ms\nt:10|ms|@0.5\nt:20|ms|@0.1|#env:a\nt:-3|h|@0.25\nt:0|d"
    for _ in range(3):  # the second and third time the name is known: the fast paths
        agg.feed(lines, NOW)
    bucket = agg.buckets[NOW]["t"]
    assert bucket[0] == 3 * (1 + 2 + 10 + 4 + 1)
    summary = agg.sketches[MINUTE]["t"]
    assert summary.count == bucket[0]
    expected = reference(*[(10.0, 1.0), (10.0, 2.0), (20.0, 10.0), (-3.0, 4.0), (0.0, 1.0)] * 3)
    assert rows(agg.sketches) == {("t", MINUTE): ("value", expected)}
    assert agg.pending_buckets == 2  # one bucket, one sketch


def test_each_minute_has_its_own_sketch(implementation: str) -> None:
    """Samples of seconds 59 and 60 of a minute's boundary (by arrival, and by |T) go
    to two sketches; the buckets stay per second."""
    agg = Aggregator(CollectorConfig(), CollectorStats())
    before, after = MINUTE + 59, MINUTE + 60
    for _ in range(2):
        agg.feed(b"t:1|ms\nt:2|ms", before)
        agg.feed(b"t:3|ms\nt:4|ms|@0.5", after)
        agg.feed(f"t:5|ms|T{before}\nt:6|ms|T{after}\nt:7|ms|T{MINUTE - 1}".encode(), after)
    assert sorted(agg.buckets) == [MINUTE - 1, before, after]
    assert rows(agg.sketches) == {
        ("t", MINUTE - 60): ("value", reference((7.0, 1.0), (7.0, 1.0))),
        ("t", MINUTE): ("value", reference(*[(1.0, 1.0), (2.0, 1.0), (5.0, 1.0)] * 2)),
        ("t", MINUTE + 60): ("value", reference(*[(3.0, 1.0), (4.0, 2.0), (6.0, 1.0)] * 2)),
    }
    assert agg.pending_buckets == 3 + 3


def test_the_alpha_comes_from_the_config(implementation: str) -> None:
    config = CollectorConfig(sketch_alpha=2.5)
    assert config.alpha_bp == 250
    agg = Aggregator(config, CollectorStats())
    agg.feed(b"t:12.5|ms\nt:12.5|ms\nt:99|ms", NOW)
    assert rows(agg.sketches)[("t", MINUTE)] == (
        "value", reference((12.5, 1.0), (12.5, 1.0), (99.0, 1.0), alpha_bp=250))


def test_no_sketches_keeps_no_value_sketch_but_sets_and_gauges_still(
    implementation: str,
) -> None:
    agg = Aggregator(CollectorConfig(sketches=False), CollectorStats())
    for _ in range(2):
        agg.feed(b"t:12.5|ms\nc:1|c\ng:3|g\ns:alice|s", NOW)
    if implementation == "c":
        assert agg.uses_c  # without sketches the C pass needs no capsule
    assert set(agg.buckets[NOW]) == {"t", "c", "g", "s"}
    assert {name for name, _ts in rows(agg.sketches)} == {"g", "s"}
    assert agg.pending_buckets == 4 + 2


def test_take_hands_over_buckets_and_sketches(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"t:1|ms\nc:1|c", NOW)
    taken = agg.take()
    assert set(taken.buckets[NOW]) == {"t", "c"}
    assert rows(taken.sketches) == {("t", MINUTE): ("value", reference((1.0, 1.0)))}
    assert agg.buckets == {} and agg.sketches == {} and agg.pending_buckets == 0
    agg.feed(b"t:2|ms", NOW)  # the same minute again: a new delta sketch
    assert rows(agg.sketches) == {("t", MINUTE): ("value", reference((2.0, 1.0)))}


# -- the cap --------------------------------------------------------------------


def test_a_summary_takes_a_slot_of_max_pending_buckets(implementation: str) -> None:
    """A value's first sample of a minute needs two slots (bucket, sketch); all or
    nothing: past the cap the sample is dropped as overload and nothing is left."""
    agg = Aggregator(CollectorConfig(max_pending_buckets=5), CollectorStats())
    agg.feed(b"a:1|ms\nb:1|ms\nc:1|c\nd:1|ms\nf:1|c\ne:1|g", NOW)
    assert agg.pending_buckets == 5
    assert set(agg.buckets[NOW]) == {"a", "b", "c"}
    assert {name for name, _ts in rows(agg.sketches)} == {"a", "b"}
    assert agg.stats.drops == {Reason.OVERLOAD: 3}  # d (two slots needed), f, e
    agg.feed(b"a:2|ms\nb:2|ms|@0.5\nc:2|c", NOW)  # existing bucket and sketch: no slot
    assert agg.stats.drops == {Reason.OVERLOAD: 3}
    assert agg.sketches[MINUTE]["b"].count == 3.0
    agg.feed(f"a:3|ms|T{NOW - 1}".encode(), NOW)  # a new second, same minute: one slot
    assert agg.stats.drops == {Reason.OVERLOAD: 4}
    agg.take()
    agg.feed(b"a:3|ms\nd:1|ms", NOW)
    assert agg.pending_buckets == 4 and agg.stats.drops == {Reason.OVERLOAD: 4}


def test_an_overflow_leaves_the_sketch_untouched(implementation: str) -> None:
    agg = Aggregator(CollectorConfig(), CollectorStats())
    agg.feed(b"t:1e308|ms\nt:1e308|ms\nt:1e308|ms|@0.5\nt:1|ms", NOW)
    assert agg.stats.drops == {Reason.OVERFLOW: 2}
    assert rows(agg.sketches) == {
        ("t", MINUTE): ("value", reference((1e308, 1.0), (1.0, 1.0)))}


# -- the C pass and the Python path: the same bytes ----------------------------------


_BUILT_FEED = aggregator._feed_fast  # before any test patches it


def pair(config: CollectorConfig) -> tuple[Aggregator, Aggregator]:
    """An aggregator on the C pass (with protocol._sketch's capsule) and one on the
    pure-Python path with the reference PySketch (the choice is made at construction)."""
    if _BUILT_FEED is None or aggregator._c_sketch_type() is None:
        pytest.skip("collector._fastfeed or protocol._sketch is not built")
    saved = aggregator._feed_fast
    try:
        aggregator._feed_fast = _BUILT_FEED
        fast = Aggregator(config, CollectorStats())
        aggregator._feed_fast = None
        slow = Aggregator(config, CollectorStats())
    finally:
        aggregator._feed_fast = saved
    assert fast.uses_c and not slow.uses_c
    assert fast._new_sketch is not PySketch and slow._new_sketch is PySketch
    return fast, slow


def same(fast: Aggregator, slow: Aggregator) -> None:
    def exact(agg: Aggregator) -> object:
        return {ts: {n: [*(float(x).hex() for x in b[:4]), b[4]] for n, b in t.items()}
                for ts, t in agg.buckets.items()}

    assert exact(fast) == exact(slow)
    assert rows(fast.sketches) == rows(slow.sketches)
    assert {n: v.hex() for n, v in fast.gauges.items()} == {
        n: v.hex() for n, v in slow.gauges.items()}
    assert fast.pending_buckets == slow.pending_buckets
    assert fast.kinds == slow.kinds
    fs, ss = fast.stats, slow.stats
    assert (fs.lines, fs.samples, fs.tags_ignored, fs.drops) == (
        ss.lines, ss.samples, ss.tags_ignored, ss.drops)


def realistic_lines(rng: random.Random, count: int, now: int) -> list[bytes]:
    """Timers as pystatsd sends them (``%0.6f|ms``), histograms, counters, gauges with
    deltas, sets; DogStatsD tags, sample rates, |T times around a minute's boundary,
    a few bad lines."""
    out = []
    for _ in range(count):
        i = rng.randrange(300)
        roll = rng.random()
        rate = rng.choice(("", "", "", "|@0.5", "|@0.1", "|@0.3", "|@1"))
        tags = rng.choice(("", "", f"|#env:prod,host:h{i % 7}", "|#a"))
        ts = rng.choice(("", "", "", f"|T{now - rng.randrange(0, 90)}"))
        if roll < 0.45:
            value = rng.lognormvariate(3, 1.5) * rng.choice((1, 1, 1, -1, 0))
            line = f"timer.{i}:{value:0.6f}|ms{rate}{tags}{ts}"
        elif roll < 0.55:
            line = f"hist.{i}:{rng.expovariate(0.01)!r}|{rng.choice('hdv')}{rate}{ts}"
        elif roll < 0.75:
            line = f"count.{i}:{rng.randrange(-3, 10)}|c{rate}{tags}{ts}"
        elif roll < 0.87:
            sign = rng.choice(("", "", "+", "-"))
            line = f"gauge.{i % 40}:{sign}{rng.randrange(0, 1000) / 8}|g{rate}{ts}"
        elif roll < 0.97:
            line = f"set.{i % 40}:user{rng.randrange(500)}|s{rate}{tags}{ts}"
        else:
            line = rng.choice(("bad..name:1|ms", "t:abc|ms", "timer.1:1|c", "x:1|q",
                               "timer.2:1|ms|@2", "set.1:|s", "gauge.1:+inf|g"))
        out.append(line.encode())
    return out


def test_c_and_python_give_the_same_sketch_rows_on_realistic_traffic() -> None:
    fast, slow = pair(CollectorConfig())
    rng = random.Random(11)
    now = MINUTE + 50
    for tick in range(30):  # 20 s across a minute's boundary, flushes in between
        lines = realistic_lines(rng, 400, now)
        for start in range(0, len(lines), 25):
            datagram = b"\n".join(lines[start:start + 25])
            fast.feed(datagram, now)
            slow.feed(datagram, now)
        same(fast, slow)
        if tick % 7 == 6:
            fast_taken, slow_taken = fast.take(), slow.take()
            assert rows(fast_taken.sketches) == rows(slow_taken.sketches)
        now += tick % 2
    assert fast.stats.samples > 10_000
    assert any(ts % 60 == 0 for ts in fast.sketches)


lines = st.lists(
    st.builds(
        lambda name, value, code, rate: f"{name}:{value}|{code}{rate}".encode(),
        st.sampled_from(["a", "b", "c.d"]),
        st.sampled_from(["1", "0", "-0", "+2.5", "-7", "1e308", "-1e308", "1e-12", "3.75",
                         "0.000001", "12.345678", "nan", "u1"]),
        st.sampled_from(["ms", "ms", "h", "c", "g", "s"]),
        st.sampled_from(["", "", "|@0.5", "|@0.1", "|@1e-6", "|#t"]),
    ),
    min_size=1, max_size=12,
).map(b"\n".join)


@settings(max_examples=200, deadline=None)
@given(datagrams=st.lists(lines | st.sampled_from(["take", "tick", "learn"]), min_size=1,
                          max_size=20),
       cap=st.sampled_from([3, 6, 1000]), sketches=st.booleans())
def test_c_and_python_agree_under_caps_conflicts_and_takes(
    datagrams: list[bytes | str], cap: int, sketches: bool,
) -> None:
    fast, slow = pair(CollectorConfig(max_pending_buckets=cap, max_metrics=2,
                                      sketches=sketches))
    now = MINUTE + 59
    for step in datagrams:
        if step == "take":
            assert rows(fast.take().sketches) == rows(slow.take().sketches)
        elif step == "tick":
            now += 1
        elif step == "learn":  # the store says "a" is a gauge
            fast.learn_kinds({"a": "gauge"})
            slow.learn_kinds({"a": "gauge"})
        else:
            assert isinstance(step, bytes)
            fast.feed(step, now)
            slow.feed(step, now)
        same(fast, slow)


def test_without_the_capsule_value_names_take_the_python_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """protocol._sketch not importable: with sketches on the aggregator does not use
    the C pass (it could not keep the sketches); with them off it still does."""
    if aggregator._feed_fast is None:
        pytest.skip("collector._fastfeed is not built")
    monkeypatch.setattr(aggregator, "_has_sketches", lambda: False)
    with_sketches = Aggregator(CollectorConfig(), CollectorStats())
    without = Aggregator(CollectorConfig(sketches=False), CollectorStats())
    assert not with_sketches.uses_c and with_sketches._new_sketch is PySketch
    assert without.uses_c
    for _ in range(2):
        with_sketches.feed(b"t:1.5|ms\nt:2|ms|@0.5", NOW)
    assert rows(with_sketches.sketches) == {
        ("t", MINUTE): ("value", reference(*[(1.5, 1.0), (2.0, 2.0)] * 2))}


# -- the flusher: SketchRows beside the points ------------------------------------


async def test_the_flusher_writes_points_and_sketch_rows(
    implementation: str, store: Store
) -> None:
    """Through the real durable writer into the store (SQLite and MariaDB), and read
    back: the minute's sketch, distinct count and last value."""
    config = CollectorConfig()
    stats = CollectorStats()
    agg = Aggregator(config, stats)
    writer = DurableWriter(store.write_batch, "test-flusher", stats=stats)
    writer.start()
    flusher = Flusher(agg, config, stats, writer)
    now = int(time.time()) // 60 * 60 + 30
    minute = now - 30
    agg.feed(b"t:12.5|ms|@0.5\nc:1|c\ng:5|g\ng:-2|g\ns:alice|s\ns:bob|s\ns:alice|s", now)
    await flusher.cut()
    agg.feed(b"t:7|ms\ng:+4|g\ns:carol|s", now)
    await flusher.cut()
    await writer.close(10)
    assert stats.rows_lost == 0

    async def read(name: str, kind: Kind) -> list[tuple[int, bytes]]:
        info = await store.get_metric(name)
        assert info is not None and info.kind == kind
        return await store.read_sketches(info.id, kind, minute, minute + 60, 60)

    ((ts, data),) = await read("t", "value")
    assert ts == minute and data == reference((12.5, 2.0), (7.0, 1.0))
    ((ts, data),) = await read("g", "gauge")
    assert decode_last(data) == 7.0  # 5, 5 - 2 = 3, 3 + 4 = 7
    ((ts, data),) = await read("s", "set")
    assert round(hll.estimate(data)) == 3  # exact below a few hundred members
    assert await store.gauge_lasts() == {"g": 7.0}
    info = await store.get_metric("g")
    assert info is not None
    (point,) = await store.read_buckets(info.id, now, now + 1, 1)
    assert (point.cnt, point.sum, point.mn, point.mx) == (3.0, 15.0, 3.0, 7.0)
