"""The fused parse+aggregate fast path of Aggregator.feed gives exactly what the general
path (LineParser.parse, then add per sample) gives: buckets, summaries (sketch, HLL and
gauge bytes), gauges, kinds, the pending count (which the max_pending_buckets cap
reads) and every counter. Both implementations of the fast path: the optional C
accelerator (collector/_fastfeed.c, when built) and the pure-Python loop."""

from __future__ import annotations

import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import collector.aggregator
import collector.stats
from collector.aggregator import Aggregator, Sketches, Taken
from collector.config import CollectorConfig
from collector.flusher import sketches_to_rows
from collector.stats import DROP_LOG_INTERVAL, CollectorStats
from protocol.lines import Reason

NOW = int(time.time())
NAMES = [b"a.b", b"c", b"x.y.z", b"t-1", b"gf_" + b"A" * 32 + b".keyed",
         b"gf_" + b"B" * 32 + b"web.hits", b"gf_" + b"C" * 31 + b".short"]  # bad_key, a name
VALUES = [b"1", b"0", b"12", b"-3", b"2.5", b".5", b"1e3", b"+4", b"abc", b"", b"nan",
          b"9" * 400, b"0" * 350 + b"1",
          # adversarial numerics (issue 9): pairs that overflow a bucket, -0.0, the
          # float range's edges, huge exponents
          b"1e308", b"-1e308", b"1.7976931348623157e308", b"-0.0", b"-0", b"4.9e-324",
          b"1e-320", b"1e99999", b"1e-99999", b"8.98846567431158e307"]
TYPES = [b"c", b"ms", b"g", b"v", b"h", b"d", b"s", b"", b"c\r", b"C"]
TAILS = [b"", b"", b"", b"|@0.5", b"|@0.25|#a:b", b"|#tag", b"|T" + str(NOW - 5).encode(),
         b"|T" + str(NOW).encode(), b"|T1", b"|zz", b"|@2",  # |T<NOW>: "now" until a tick
         b"|@1e-320", b"|@1e-6", b"|@9.99e-7", b"|@0.1", b"|@4.9e-324", b"|@-0.0"]

# Lines that repeat, as real traffic does: the cached fast path handles them from their
# third sight on (first: the name is learnt; second: the value|type part).
COMMON = [b"a.b:1|c", b"a.b:1|c", b"c:2|ms", b"x.y.z:1|c", b"t-1:7|g", b"c:1|c", b"a.b:5|c",
          b"x.y.z:2.5|c", b"a.b:1e308|c", b"t-1:-1e308|g", b"t-1:1e308|g", b"c:-0.0|ms",
          b"t-1:+2|g", b"t-1:-3|g|@0.5", b"x.y.z:u1|s", b"x.y.z:u2|s|@0.5", b"c:3|ms|@0.25",
          b"c:7|g"]  # the last: a |g of a value is a value

line = st.one_of(
    st.sampled_from(COMMON),
    st.sampled_from(COMMON),
    st.builds(lambda n, v, t, tail: n + b":" + v + b"|" + t + tail,
              st.sampled_from(NAMES), st.sampled_from(VALUES), st.sampled_from(TYPES),
              st.sampled_from(TAILS)),
    st.sampled_from([b"", b"\r", b"nonsense", b"bad..name:1|c", b"a.b:1", b"a.b" * 40 + b":1|c",
                     b":1|c", b"a.b::1|c"]),
)
datagram = st.lists(line, min_size=1, max_size=20).map(b"\n".join)
actions = st.lists(
    st.one_of(datagram, st.sampled_from(["take", "learn", "tick"])), min_size=1, max_size=40
)


def held(agg: Aggregator) -> int:
    """The pending count, checked against the tables: exact, and no empty table kept."""
    assert all(agg.buckets.values()), agg.buckets
    assert all(agg.sketches.values()), agg.sketches
    assert agg.pending_buckets == sum(len(table) for table in agg.buckets.values()) + sum(
        len(table) for table in agg.sketches.values())
    return agg.pending_buckets


def encoded(sketches: Sketches) -> list[tuple[str, str, int, bytes]]:
    """Summaries as the flusher writes them (bytes: comparable across implementations)."""
    return sorted(sketches_to_rows(sketches))


def plain(buckets: dict) -> dict:
    """Buckets without the sketch a value bucket holds (slot 5: compared as bytes)."""
    return {ts: {name: b[:5] for name, b in table.items()} for ts, table in buckets.items()}


def taken_state(taken: Taken) -> tuple:
    return plain(taken.buckets), encoded(taken.sketches)


def state(agg: Aggregator, taken: list[Taken]) -> tuple:
    s = agg.stats
    return ([*map(taken_state, taken), (plain(agg.buckets), encoded(agg.sketches))], held(agg),
            dict(agg.kinds), dict(agg.gauges), s.lines, s.samples, s.tags_ignored,
            dict(s.drops), {k: len(v) for k, v in agg.held.items()})


def test_fast_path_equals_general_path(implementation: str) -> None:
    check()


@settings(max_examples=300, deadline=None)
@given(actions, st.sampled_from([2, 3, 1000]))
def check(steps: list, max_buckets: int) -> None:
    config = CollectorConfig(max_line_length=64, max_metrics=3, max_pending_buckets=max_buckets)
    fast = Aggregator(config, CollectorStats())
    slow = Aggregator(config, CollectorStats())
    taken_fast: list[Taken] = []
    taken_slow: list[Taken] = []
    now = NOW
    for step in steps:
        if step == "take":
            taken_fast.append(fast.take())
            taken_slow.append(slow.take())
        elif step == "learn":  # the store says "c" is a counter
            fast.learn_kinds({"c": "counter"})
            slow.learn_kinds({"c": "counter"})
        elif step == "tick":
            now += 1
        else:
            fast.feed(step, now)
            slow._feed_parsed(step, now)
    assert state(fast, taken_fast) == state(slow, taken_slow)


def test_pending_count_and_cap_across_seconds(implementation: str) -> None:
    """Buckets of other seconds (|T) count against the cap like this second's, in every
    path: the same buckets kept, the same overload drops, and a second whose every
    line was dropped leaves no table behind."""
    config = CollectorConfig(max_pending_buckets=4)
    fast = Aggregator(config, CollectorStats())
    slow = Aggregator(config, CollectorStats())
    before = str(NOW - 3).encode()
    warm = b"a:1|c\nb:1|c\nc:1|c\nd:1|c\na:2|c\nb:2|c\nc:2|c\nd:2|c"
    fast.feed(warm, NOW - 60)  # heads and tails learnt: the lines below take the fast path
    slow._feed_parsed(warm, NOW - 60)
    assert taken_state(fast.take()) == taken_state(slow.take())
    assert fast.pending_buckets == slow.pending_buckets == 0
    steps = [
        (NOW, b"a:1|c\na:2|c|T" + before + b"\nb:1|c"),  # 3 buckets, one of them at NOW-3
        (NOW, b"c:1|c|T" + before + b"\nc:1|c\nd:1|c\na:2|c"),  # the 4th, 2 drops, 1 added
        (NOW + 1, b"a:1|c\nb:2|c|T" + str(NOW).encode()),  # NOW+1 is full; NOW has b
    ]
    for now, data in steps:
        fast.feed(data, now)
        slow._feed_parsed(data, now)
        assert state(fast, []) == state(slow, [])
    assert fast.buckets == {
        NOW: {"a": [2.0, 3.0, 1.0, 2.0, "counter"], "b": [2.0, 3.0, 1.0, 2.0, "counter"]},
        NOW - 3: {"a": [1.0, 2.0, 2.0, 2.0, "counter"], "c": [1.0, 1.0, 1.0, 1.0, "counter"]},
    }
    assert held(fast) == 4
    assert fast.stats.drops == {Reason.OVERLOAD: 3}
    assert fast.stats.samples == slow.stats.samples == 8 + 6

    # take() hands everything over and frees the whole cap again
    assert taken_state(fast.take()) == taken_state(slow.take())
    assert fast.pending_buckets == slow.pending_buckets == 0
    data = b"a:1|c\nb:1|c\nc:1|c|T" + before + b"\nd:1|c\na:1|c\nb:1|c|T" + before
    fast.feed(data, NOW + 1)
    slow._feed_parsed(data, NOW + 1)
    assert state(fast, []) == state(slow, [])
    assert held(fast) == 4
    assert fast.stats.drops == {Reason.OVERLOAD: 4}


def test_token_shaped_head_without_the_dot_is_bad_key(
    implementation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9: ``gf_<32 base62>web.hits`` (the "." forgotten) is never a metric name,
    however often it comes (the fast paths learn only good heads), and its log sample
    shows the token's display prefix only."""
    token = b"gf_" + b"Z9" * 16
    agg = Aggregator(CollectorConfig(), CollectorStats())
    lines = [token + b"web.hits:1|c", b"web.hits:1|c", token + b"web.hits:1|c|@0.5"] * 3
    agg.feed(b"\n".join(lines), NOW)
    for line in lines:
        agg.feed(line, NOW)
    assert agg.stats.drops == {Reason.BAD_KEY: 12}
    assert list(agg.buckets[NOW]) == ["web.hits"]
    assert list(agg.kinds) == ["web.hits"]
    assert token.decode() not in caplog.text
    assert "gf_Z9Z9Z..." in caplog.text


def test_bad_lines_count_alike_and_the_next_log_line_holds_those_not_logged(
    implementation: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad line is logged at most once per reason per interval; until then the others
    are only counted (in C, which parses the whole line to find Python's reason: no
    round trip through the general path). Counts, and the number the next log line
    gives, are the same on both paths."""
    clock = [1000.0]  # the monotonic clock of the drop log
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    monkeypatch.setattr(collector.stats, "time", fake_time)
    monkeypatch.setattr(collector.aggregator, "time", fake_time)
    stats = CollectorStats()
    agg = Aggregator(CollectorConfig(), stats)
    agg.feed(b"m.a:1|c\nm.t:1|ms", NOW)  # names learnt
    agg.feed(b"m.a:abc|c\nm.a:1|c", NOW)  # logged: bad_value
    noisy = b"m.a:abc|c\nm..b:1|c\nm.a:1|c\nm.t:1|q\nm..b:2|c\nm.a:x|c|@0.5\nm.t:2|ms"
    for _ in range(3):
        agg.feed(noisy, NOW)
    assert stats.drops == {Reason.BAD_VALUE: 7, Reason.BAD_NAME: 6, Reason.UNKNOWN_TYPE: 3}
    assert stats.lines == 2 + 2 + 3 * 7 and stats.samples == 2 + 1 + 3 * 2
    assert agg.buckets[NOW]["m.a"][0] == 1 + 1 + 3
    assert caplog.text.count("dropped 1 line(s)") == 3  # each reason's first
    clock[0] += DROP_LOG_INTERVAL - 0.5
    agg.feed(b"m.a:abc|c", NOW)  # still within the interval: counted only
    assert "dropped" not in caplog.text.split("unknown_type")[-1]
    # the interval ends: the next one is logged with the 7 counted since
    clock[0] += 1
    caplog.clear()
    agg.feed(b"m.a:abc|c", NOW)
    assert "dropped 8 line(s): bad_value" in caplog.text
    assert stats.drops[Reason.BAD_VALUE] == 9


def test_a_bucket_field_held_elsewhere_keeps_its_value(implementation: str) -> None:
    """The C pass changes a bucket's float in place where only the bucket holds it (no
    allocation per field and sample): one that anything else holds is replaced instead,
    so it never changes under its holder. A new gauge's bucket shares one float among
    sum, min, max and the gauge's last value; a value bucket's min and max start as one."""
    agg = Aggregator(CollectorConfig(), CollectorStats())
    lines = [b"held.c:2|c", b"held.v:5|ms", b"held.g:7|g"]
    for _ in range(3):  # learnt, then the fast path
        agg.feed(b"\n".join(lines), NOW)
    table = agg.buckets[NOW]
    before = {name: list(bucket[:4]) for name, bucket in table.items()}
    values = {name: [float(x) for x in fields] for name, fields in before.items()}
    agg.feed(b"held.c:3|c\nheld.v:1|ms\nheld.v:9|ms\nheld.g:+1|g", NOW)
    # the floats held here kept their values ...
    assert {name: [float(x) for x in fields] for name, fields in before.items()} == values
    # ... and the buckets moved on (read through ``buckets``: the C pass's name cache
    # owns them until then, their newest fields in its entries)
    assert table is agg.buckets[NOW]
    assert table["held.c"][:4] == [4.0, 9.0, 2.0, 3.0]
    assert table["held.v"][:4] == [5.0, 25.0, 1.0, 9.0]
    assert table["held.g"][:4] == [4.0, 29.0, 7.0, 8.0]
    # a fresh bucket's shared min/max: a new value moves one of them only
    agg.feed(b"held.v:5|ms", NOW + 1)
    agg.feed(b"held.v:6|ms", NOW + 1)
    assert agg.buckets[NOW + 1]["held.v"][:4] == [2.0, 11.0, 5.0, 6.0]
