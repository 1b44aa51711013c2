"""protocol.points: the pure HTTP point schema. No app, no I/O: values in, points or
field errors out."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.points import (
    MAX_BATCH_POINTS,
    BatchReader,
    FieldError,
    InvalidPoints,
    Point,
    Window,
    batch_points,
    counter_point,
    kind_conflicts,
    to_rows,
    to_sketches,
    value_point,
)
from protocol.sketch import Sketch

NOW = 1_764_338_400.25  # 2025-11-28T14:00:00.25Z
WINDOW = Window(NOW, 7 * 86400)
T = int(NOW)


def errors_of(fn: Any, body: object) -> list[tuple[int | None, str]]:
    with pytest.raises(InvalidPoints) as info:
        fn(body, WINDOW)
    return [(e.index, e.field) for e in info.value.errors]


def test_counter_defaults() -> None:
    assert counter_point({"metric": "a.b"}, WINDOW) == Point("a.b", "counter", 1.0, T)
    assert counter_point({"metric": "a", "value": -3}, WINDOW) == Point("a", "counter", -3.0, T)
    assert counter_point({"metric": "a", "timestamp": None}, WINDOW).ts == T


@pytest.mark.parametrize("timestamp", [
    T - 60, float(T - 60), str(T - 60), T - 59.9, "2025-11-28T13:59:00Z",
    "2025-11-28T13:59:00", "2025-11-28T14:59:00+01:00", "2025-11-28T13:59:00.999Z",
])
def test_timestamps_iso_or_epoch_truncated_to_the_second(timestamp: object) -> None:
    point = value_point({"metric": "a", "value": 1, "timestamp": timestamp}, WINDOW)
    assert point.ts == T - 60


def test_timestamp_window_edges() -> None:
    oldest = NOW - 7 * 86400
    assert value_point({"metric": "a", "value": 1, "timestamp": oldest}, WINDOW).ts == \
        math.floor(oldest)
    assert value_point({"metric": "a", "value": 1, "timestamp": NOW + 300}, WINDOW).ts == T + 300
    for ts in (oldest - 1, NOW + 301, -1, "tomorrow", True, [T]):
        assert errors_of(value_point, {"metric": "a", "value": 1, "timestamp": ts}) == [
            (None, "timestamp")]


@pytest.mark.parametrize(("body", "expected"), [
    ({"metric": "a"}, [(None, "value")]),
    ({"metric": "a", "value": None}, [(None, "value")]),
    ({"metric": "a", "value": "1"}, [(None, "value")]),
    ({"metric": "a", "value": False}, [(None, "value")]),
    ({"metric": "a", "value": math.inf}, [(None, "value")]),
    ({"metric": "a", "value": math.nan}, [(None, "value")]),
    ({"metric": "a", "value": 10**400}, [(None, "value")]),
    ({"value": 1}, [(None, "metric")]),
    ({"metric": "", "value": 1}, [(None, "metric")]),
    ({"metric": "a..b", "value": 1}, [(None, "metric")]),
    ({"metric": "a/b", "value": 1}, [(None, "metric")]),
    ({"metric": "é", "value": 1}, [(None, "metric")]),
    ({"metric": "a" * 256, "value": 1}, [(None, "metric")]),
    ({"metric": "gf_" + "k" * 32, "value": 1}, [(None, "metric")]),  # a key, as a name
    ({"metric": "app.gf_" + "k" * 32 + ".hits", "value": 1}, [(None, "metric")]),
    ({"metric": "a", "value": 1, "type": "value"}, [(None, "type")]),  # not in single posts
    ({"metric": ".", "value": "x", "extra": 1}, [(None, "extra"), (None, "metric"),
                                                 (None, "value")]),
    ([], [(None, "body")]),
    ("a", [(None, "body")]),
])
def test_value_errors_name_each_field(body: object, expected: list[Any]) -> None:
    assert errors_of(value_point, body) == expected


def test_batch() -> None:
    points = batch_points({"points": [
        {"metric": "c", "type": "counter"},
        {"metric": "v", "type": "value", "value": 2.5, "timestamp": T - 1},
    ]}, WINDOW)
    assert points == [Point("c", "counter", 1.0, T), Point("v", "value", 2.5, T - 1)]


def test_batch_size_limits() -> None:
    one = {"metric": "c", "type": "counter"}
    assert len(batch_points({"points": [one] * MAX_BATCH_POINTS}, WINDOW)) == 1000
    assert errors_of(batch_points, {"points": [one] * 1001}) == [(None, "points")]
    assert errors_of(batch_points, {"points": []}) == [(None, "points")]
    assert errors_of(batch_points, {"points": one}) == [(None, "points")]
    assert errors_of(batch_points, {"point": [one]}) == [(None, "point"), (None, "points")]
    assert errors_of(batch_points, [one]) == [(None, "body")]


def test_batch_errors_carry_the_index() -> None:
    body = {"points": [
        {"metric": "ok", "type": "counter"},
        {"metric": "ok", "type": "gauge", "value": 1},
        {"metric": "ok", "type": "value"},
        "nope",
        {"metric": "ok", "type": "value", "value": 1, "timestamp": 0},
    ]}
    assert errors_of(batch_points, body) == [(1, "type"), (2, "value"), (3, "point"),
                                             (4, "timestamp")]


def test_error_lists_are_capped() -> None:
    with pytest.raises(InvalidPoints) as info:
        batch_points({"points": [{"metric": "..", "type": "x"}] * 1000}, WINDOW)  # 3 errors each
    errors = info.value.errors
    assert len(errors) == 100
    assert errors[-1] == FieldError(None, "points", "2901 more errors not listed")
    assert str(info.value).startswith("points[0].metric: ")


def test_kind_conflicts_with_stored_kinds_and_within_the_request() -> None:
    points = [Point("a", "counter", 1, T), Point("b", "value", 1, T),
              Point("b", "counter", 1, T), Point("c", "value", 1, T)]
    errors = kind_conflicts(points, {"a": "value"}, batch=True)
    assert [(e.index, e.field) for e in errors] == [(0, "type"), (2, "type")]
    assert "is a value; this point is a counter" in errors[0].message
    assert kind_conflicts(points[:1], {"a": "counter"}, batch=False) == []
    single = kind_conflicts(points[:1], {"a": "value"}, batch=False)
    assert [(e.index, e.field) for e in single] == [(None, "metric")]


def test_rows_aggregate_per_name_kind_and_second() -> None:
    rows = to_rows([
        Point("v", "value", 3, T), Point("v", "value", -1, T), Point("v", "value", 7, T),
        Point("v", "value", 5, T + 1), Point("c", "counter", 2, T),
    ])
    assert sorted(rows) == [
        ("c", "counter", T, 1, 2, 2, 2),
        ("v", "value", T, 3, 9, -1, 7),
        ("v", "value", T + 1, 1, 5, 5, 5),
    ]


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3),
                          st.integers(-1000, 1000)), max_size=50))
def test_rows_keep_count_sum_min_max(samples: list[tuple[str, int, int]]) -> None:
    points = [Point(name, "value", float(v), T + dt) for name, dt, v in samples]
    rows = to_rows(points)
    assert sum(r[3] for r in rows) == len(points)
    assert sum(r[4] for r in rows) == sum(v for *_, v in samples)
    for name, _kind, ts, _cnt, _total, mn, mx in rows:
        values = [v for n, dt, v in samples if n == name and T + dt == ts]
        assert (mn, mx) == (min(values), max(values))


# -- BatchReader: the fast path of batch ingest must answer exactly like the reference --

_names = st.sampled_from(["a", "a.b", "svc.latency-ms", "x_y", ".bad", "a..b", "", "é", 7,
                          None, ["a"], {"a": 1}, "n" * 300])
_values = st.one_of(
    st.integers(-10, 10), st.floats(-1e6, 1e6), st.sampled_from([
        True, None, "1", [1], math.nan, math.inf, -math.inf, 2**64, 10**400, 1e308, -0.0]),
)
_timestamps = st.one_of(
    st.integers(T - 7 * 86400 - 2, T + 302), st.floats(T - 7 * 86400 - 2, T + 302),
    st.sampled_from([None, True, str(T), "2025-11-28T13:59:00Z", "soon", [T], math.nan,
                     10**400, -1]),
)


@st.composite
def _items(draw: st.DrawFn) -> object:
    item: dict[str, object] = {}
    if draw(st.integers(0, 20)):  # now and then a point with no metric
        item["metric"] = draw(_names)
    if draw(st.integers(0, 20)):
        item["type"] = draw(st.sampled_from(["counter", "value", "counter", "gauge", 1]))
    if draw(st.integers(0, 20)):
        item["value"] = draw(_values)
    if draw(st.booleans()):
        item["timestamp"] = draw(_timestamps)
    if not draw(st.integers(0, 30)):
        item["extra"] = 1
    return item if draw(st.integers(0, 50)) else draw(st.sampled_from([[], "p", 1, None]))


_bodies = st.one_of(
    st.builds(lambda items: {"points": items}, st.lists(_items(), min_size=1, max_size=30)),
    st.sampled_from([[], {}, {"points": []}, {"points": {}}, {"points": [], "x": 1}, None]),
)
_reader = BatchReader()  # shared across examples: its name cache is part of the test


def _answer(fn: Any, body: object) -> object:
    try:
        return sorted(fn(body), key=repr)
    except InvalidPoints as exc:
        return exc.errors


@settings(max_examples=500)
@given(_bodies)
def test_batch_reader_answers_exactly_like_batch_points_then_to_rows(body: object) -> None:
    expected = _answer(lambda b: to_rows(batch_points(b, WINDOW)), body)
    assert _answer(lambda b: _reader.rows(b, WINDOW), body) == expected
    assert _answer(lambda b: _reader.rows(b, WINDOW), body) == expected  # names cached now


@settings(max_examples=300)
@given(_bodies)
def test_batch_reader_makes_the_sketches_to_sketches_makes(body: object) -> None:
    def reference(b: object) -> list[object]:
        points = batch_points(b, WINDOW)
        return [sorted(to_rows(points)), sorted(to_sketches(points, 100))]

    def fast(b: object) -> list[object]:
        rows, sketches = _reader.read(b, WINDOW, 100)
        return [sorted(rows), sorted(sketches)]

    assert _answer(fast, body) == _answer(reference, body)


def test_value_points_make_one_sketch_per_name_and_minute() -> None:
    points = [Point("v", "value", 1.0, T), Point("v", "value", 3.0, T + 59),
              Point("v", "value", 5.0, T + 60), Point("c", "counter", 1.0, T),
              Point("w", "value", -2.0, T)]
    assert T % 60 == 0
    rows = to_sketches(points, 200)
    assert {(name, kind, ts) for name, kind, ts, _data in rows} == {
        ("v", "value", T), ("v", "value", T + 60), ("w", "value", T)}
    by_minute = {(name, ts): Sketch.from_bytes(data) for name, _kind, ts, data in rows}
    assert (by_minute[("v", T)].count, by_minute[("v", T)].alpha_bp) == (2.0, 200)
    assert by_minute[("v", T)].quantile(1.0) == pytest.approx(3.0, rel=0.02)
    assert by_minute[("w", T)].quantile(0.5) == pytest.approx(-2.0, rel=0.02)
    assert BatchReader().read({"points": [{"metric": "v", "type": "value", "value": 1}]},
                              WINDOW, None)[1] == []


def test_batch_reader_aggregates_valid_points_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Valid points of the usual shapes never take the slow reference path."""
    import protocol.points

    def reference_path(body: object, window: Window) -> list[Point]:
        raise AssertionError("took the slow path")

    monkeypatch.setattr(protocol.points, "batch_points", reference_path)
    body = {"points": [
        {"metric": "v", "type": "value", "value": 3, "timestamp": T},
        {"metric": "v", "type": "value", "value": -1.5},
        {"metric": "v", "type": "value", "value": 7, "timestamp": NOW},
        {"metric": "v", "type": "value", "value": 5, "timestamp": T + 1.9},
        {"metric": "c", "type": "counter", "value": 2, "timestamp": None},
    ]}
    assert sorted(BatchReader().rows(body, WINDOW)) == [
        ("c", "counter", T, 1, 2, 2, 2),
        ("v", "value", T, 3, 8.5, -1.5, 7),
        ("v", "value", T + 1, 1, 5, 5, 5),
    ]


def test_a_batch_point_is_a_counter_or_a_value() -> None:
    """Gauges and sets come over the line protocol only: a batch point of either type is
    refused, not taken as a value."""
    for kind in ("gauge", "set"):
        body = {"points": [{"metric": "g", "type": kind, "value": 1}]}
        assert errors_of(batch_points, body) == [(0, "type")]
        assert errors_of(BatchReader().rows, body) == [(0, "type")]
