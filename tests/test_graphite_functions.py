"""Each render function against hand-computed series: nulls, wildcards, mixed steps.

Pure: the series come from a table (``STORED``), fetched through the same glob matching
the HTTP side uses and cut to the range asked (so ``timeShift`` and ``movingAverage``
really read other ranges). Every expected value below was worked out by hand from
``STORED``; the comment on each row says how.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.graphite import glob
from protocol.graphite.expr import Call, Node, Number, Path, String, parse
from protocol.graphite.functions import FUNCTIONS, Context, TargetError, evaluate_series, plan
from protocol.graphite.series import Series, consolidate, max_data_points, normalize, read_step

T0 = 1_699_999_200  # a multiple of 3600 (and so of 60, 120, 240)
N = None

# name -> (step, values from T0, consolidation)
STORED: dict[str, tuple[int, list[float | None], str]] = {
    "a.x.req": (60, [1, 2, N, 4, 5, 6], "sum"),
    "a.y.req": (60, [10, N, N, 40, 50, 60], "sum"),
    "a.z.req": (120, [100, 200, 300], "sum"),  # the mixed step
    "c.up": (60, [1, 3, 6, 2, 5, N], "average"),
}
CTX_END = T0 + 360


def fetch(pattern: str, start: int, end: int) -> list[Series]:
    out = []
    for match in glob.find(pattern, STORED):
        if not match.leaf or match.metric is None or match.aggregation:
            continue
        step, values, consolidation = STORED[match.metric]
        first = start - start % step
        stamps = range(first, end, step)
        by_ts = {T0 + i * step: v for i, v in enumerate(values)}
        out.append(Series(match.path, first, step, [by_ts.get(ts) for ts in stamps], pattern,
                          consolidation, {"name": match.path}))
    return out


CTX = Context(T0, CTX_END, 60, fetch)


def run(target: str) -> list[tuple[str, int, int, list[Any]]]:
    return [(s.name, s.start, s.step, s.values) for s in evaluate_series(parse(target), CTX)]


def r6(*values: float | None) -> list[float | None]:
    return [None if v is None else round(v, 6) for v in values]


TABLE: list[tuple[str, list[tuple[str, int, int, list[Any]]]]] = [
    # -- alias ---------------------------------------------------------------------
    ('alias(a.x.req, "foo")', [("foo", T0, 60, [1, 2, N, 4, 5, 6])]),
    (r'aliasSub(a.*.req, "^a\.(\w)\..*$", "\1")',  # every match renamed, mixed steps kept
     [("x", T0, 60, [1, 2, N, 4, 5, 6]), ("y", T0, 60, [10, N, N, 40, 50, 60]),
      ("z", T0, 120, [100, 200, 300])]),
    ('aliasSub(sumSeries(a.{x,y}.req), "(^.*$)", "\\1 A")',  # Grafana's wrapper
     [("sumSeries(a.{x,y}.req) A", T0, 60, [11, 2, N, 44, 55, 66])]),
    ("aliasByNode(a.*.req, 1)", [("x", T0, 60, [1, 2, N, 4, 5, 6]),
                                 ("y", T0, 60, [10, N, N, 40, 50, 60]),
                                 ("z", T0, 120, [100, 200, 300])]),
    ("aliasByNode(scale(a.x.req, 2), 1, -1)",  # the first path inside the name
     [("x.req", T0, 60, [2, 4, N, 8, 10, 12])]),
    # -- combine: None where every input is None; mixed steps at their lcm (120 s),
    #    each series consolidated by its own function first (sum for these)
    ("sumSeries(a.x.req, a.y.req)",
     [("sumSeries(a.x.req,a.y.req)", T0, 60, [11, 2, N, 44, 55, 66])]),
    ("sumSeries(a.*.req)",  # x -> [3, 4, 11], y -> [10, 40, 110], z as is
     [("sumSeries(a.*.req)", T0, 120, [113, 244, 421])]),
    ("averageSeries(a.x.req, a.y.req)",
     [("averageSeries(a.x.req,a.y.req)", T0, 60, [5.5, 2, N, 22, 27.5, 33])]),
    ("maxSeries(a.{x,y}.req)", [("maxSeries(a.{x,y}.req)", T0, 60, [10, 2, N, 40, 50, 60])]),
    ("minSeries(a.{x,y}.req)", [("minSeries(a.{x,y}.req)", T0, 60, [1, 2, N, 4, 5, 6])]),
    ("sumSeries(scale(a.{x,y}.req, 2))",  # nested call, wildcard inside it
     [("sumSeries(scale(a.x.req,2),scale(a.y.req,2))", T0, 60, [22, 4, N, 88, 110, 132])]),
    ("sumSeries(nothing.*)", []),
    ('groupByNode(a.*.req, 2, "sum")', [("req", T0, 120, [113, 244, 421])]),
    ('groupByNode(a.*.req, 1, "maxSeries")',  # one series per group: itself
     [("x", T0, 60, [1, 2, N, 4, 5, 6]), ("y", T0, 60, [10, N, N, 40, 50, 60]),
      ("z", T0, 120, [100, 200, 300])]),
    # -- summarize: buckets aligned to the interval (or to the start), None if empty
    ('summarize(a.x.req, "2min")', [('summarize(a.x.req, "2min", "sum")', T0, 120, [3, 4, 11])]),
    ('summarize(a.x.req, "4min", "max")',
     [('summarize(a.x.req, "4min", "max")', T0, 240, [4, 6])]),
    ('summarize(a.y.req, "2min", "avg")',
     [('summarize(a.y.req, "2min", "avg")', T0, 120, [10, 40, 55])]),
    # T0 % 420 == 60: aligned buckets start a minute before T0; alignToFrom at T0
    ('summarize(a.x.req, "7min")', [('summarize(a.x.req, "7min", "sum")', T0 - 60, 420, [18])]),
    ('summarize(a.x.req, "7min", "sum", true)',
     [('summarize(a.x.req, "7min", "sum", true)', T0, 420, [18])]),
    # -- hitcount: value x seconds covered; buckets end at the series end
    ('hitcount(a.x.req, "2min")', [('hitcount(a.x.req, "2min")', T0, 120, [180, 240, 660])]),
    ('hitcount(a.x.req, "4min")',  # buckets [T0-120, T0+120) and [T0+120, T0+360)
     [('hitcount(a.x.req, "4min")', T0 - 120, 240, [180, 900])]),
    ('hitcount(a.x.req, "4min", true)',
     [('hitcount(a.x.req, "4min", true)', T0, 240, [420, 660])]),
    # -- transforms
    ("scale(a.x.req, 2.5)", [("scale(a.x.req,2.5)", T0, 60, [2.5, 5, N, 10, 12.5, 15])]),
    ("scaleToSeconds(a.x.req, 1)",
     [("scaleToSeconds(a.x.req,1)", T0, 60, r6(1 / 60, 2 / 60, N, 4 / 60, 5 / 60, 6 / 60))]),
    ("offset(a.x.req, -1)", [("offset(a.x.req,-1)", T0, 60, [0, 1, N, 3, 4, 5])]),
    ("absolute(offset(a.x.req, -3))",
     [("absolute(offset(a.x.req,-3))", T0, 60, [2, 1, N, 1, 2, 3])]),
    # c.up = [1, 3, 6, 2, 5, N]: a counter that resets after 6
    ("derivative(c.up)", [("derivative(c.up)", T0, 60, [N, 2, 3, -4, 3, N])]),
    ("nonNegativeDerivative(c.up)",
     [("nonNegativeDerivative(c.up)", T0, 60, [N, 2, 3, N, 3, N])]),
    ("nonNegativeDerivative(c.up, 10)",  # wrapped at 10: 10 + 1 - 6 + 2
     [("nonNegativeDerivative(c.up)", T0, 60, [N, 2, 3, 7, 3, N])]),
    ("perSecond(c.up)", [("perSecond(c.up)", T0, 60, r6(N, 2 / 60, 3 / 60, N, 3 / 60, N))]),
    ("perSecond(c.up, maxValue=10)",
     [("perSecond(c.up)", T0, 60, r6(N, 2 / 60, 3 / 60, 7 / 60, 3 / 60, N))]),
    ("integral(a.x.req)", [("integral(a.x.req)", T0, 60, [1, 3, N, 7, 12, 18])]),
    # movingAverage reads back a window more: [N, N, 1, 2, N, 4, 5, 6] from T0 - 120;
    # each point averages the points before it
    ("movingAverage(a.x.req, 2)",
     [("movingAverage(a.x.req,2)", T0, 60, [N, 1, 1.5, 2, 4, 4.5])]),
    ('movingAverage(a.x.req, "3min")',
     [('movingAverage(a.x.req,"3min")', T0, 60, [N, 1, 1.5, 1.5, 3, 4.5])]),
    ("movingAverage(a.x.req, 2, 1)",  # xFilesFactor 1: both points must be there
     [("movingAverage(a.x.req,2)", T0, 60, [N, N, 1.5, N, N, 4.5])]),
    ("keepLastValue(a.y.req)", [("keepLastValue(a.y.req)", T0, 60, [10, 10, 10, 40, 50, 60])]),
    ("keepLastValue(a.y.req, 1)",  # a gap of 2 is longer than the limit: left alone
     [("keepLastValue(a.y.req)", T0, 60, [10, N, N, 40, 50, 60])]),
    ("transformNull(a.y.req)", [("transformNull(a.y.req,0)", T0, 60, [10, 0, 0, 40, 50, 60])]),
    ("transformNull(a.y.req, -1)",
     [("transformNull(a.y.req,-1)", T0, 60, [10, -1, -1, 40, 50, 60])]),
    ("asPercent(a.x.req, 4)", [("asPercent(a.x.req,4)", T0, 60, [25, 50, N, 100, 125, 150])]),
    ("asPercent(a.x.req, a.y.req)",
     [("asPercent(a.x.req,a.y.req)", T0, 60, [10, N, N, 10, 10, 10])]),
    ("asPercent(a.{x,y}.req)",  # of the sum at each point: [11, 2, N, 44, 55, 66]
     [("asPercent(a.x.req,sumSeries(a.{x,y}.req))", T0, 60,
       [100 / 11, 100, N, 100 / 11, 100 / 11, 100 / 11]),
      ("asPercent(a.y.req,sumSeries(a.{x,y}.req))", T0, 60,
       [1000 / 11, N, N, 1000 / 11, 1000 / 11, 1000 / 11])]),
    ('consolidateBy(a.x.req, "max")',
     [('consolidateBy(a.x.req,"max")', T0, 60, [1, 2, N, 4, 5, 6])]),
    # -- filters and sorting: averages x 3.6, y 40, z 200; maxima 6, 60, 300
    ("highestAverage(a.*.req)", [("a.z.req", T0, 120, [100, 200, 300])]),
    ("highestMax(a.*.req, 2)", [("a.z.req", T0, 120, [100, 200, 300]),
                                ("a.y.req", T0, 60, [10, N, N, 40, 50, 60])]),
    ("lowestAverage(a.*.req, 1)", [("a.x.req", T0, 60, [1, 2, N, 4, 5, 6])]),
    ("limit(a.*.req, 2)", [("a.x.req", T0, 60, [1, 2, N, 4, 5, 6]),
                           ("a.y.req", T0, 60, [10, N, N, 40, 50, 60])]),
    ("sortByMaxima(a.*.req)", [("a.z.req", T0, 120, [100, 200, 300]),
                               ("a.y.req", T0, 60, [10, N, N, 40, 50, 60]),
                               ("a.x.req", T0, 60, [1, 2, N, 4, 5, 6])]),
    ("constantLine(5)", [("5", T0, 180, [5, 5, 5])]),
    # timeShift reads [T0 - 120, T0 + 240) and draws it two minutes later
    ('timeShift(a.x.req, "2min")',
     [('timeShift(a.x.req, "-2min")', T0, 60, [N, N, 1, 2, N, 4])]),
    ('timeShift(a.x.req, "+2min")',
     [('timeShift(a.x.req, "+2min")', T0, 60, [N, 4, 5, 6, N, N])]),
]


@pytest.mark.parametrize(("target", "expected"), TABLE, ids=[t for t, _ in TABLE])
def test_function(target: str, expected: list[tuple[str, int, int, list[Any]]]) -> None:
    got = run(target)
    assert [(n, s, st_) for n, s, st_, _ in got] == [(n, s, st_) for n, s, st_, _ in expected]
    for (_n, _s, _st, values), (_en, _es, _est, wanted) in zip(got, expected, strict=True):
        assert values == pytest.approx(wanted, nan_ok=False), target


def test_every_function_served_has_a_row() -> None:
    used = {node.name for target, _ in TABLE for node in _calls(parse(target))}
    assert used == set(FUNCTIONS)


def _calls(node: Node) -> list[Call]:
    if isinstance(node, Call):
        return [node] + [c for arg in node.args for c in _calls(arg)] + [
            c for _k, v in node.kwargs for c in _calls(v)]
    return []


@pytest.mark.parametrize(("target", "message"), [
    ("nope(a.x.req)", "unknown function 'nope'"),
    ("scale(a.x.req, factr=2)", "scale: unknown argument 'factr'"),
    ("scale(a.x.req)", "scale: missing argument 'factor'"),
    ("scale(a.x.req, 1, 2)", "scale: takes at most 2 arguments, 3 given"),
    ('scale(a.x.req, "2")', "scale: argument 'factor' must be a number, not the string '2'"),
    ("scale(a.x.req, factor=2, seriesList=a.y.req)", "given twice"),
    ("limit(a.*.req, 1.5)", "limit: argument 'n' must be an integer"),
    ("summarize(a.x.req, 60)", "must be a quoted string"),
    ('summarize(a.x.req, "1m")', "ambiguous unit 'm'"),
    ('summarize(a.x.req, "-1h")', "the interval must be positive"),
    ('summarize(a.x.req, "1h", "mode")', "unknown aggregation 'mode'"),
    ('consolidateBy(a.x.req, "median")', "must be one of sum, average"),
    ('aliasSub(a.x.req, "(", "x")', "aliasSub:"),
    (r'aliasSub(a.x.req, "a", "\2")', "aliasSub:"),
    ("aliasByNode(a.x.req, 9)", "has no node 9"),
    ("asPercent(a.*.req, a.{x,y}.req)", "as many series as the first argument (3), not 2"),
    ("asPercent(a.x.req, 100, 1)", "asPercent: takes at most 2 arguments, 3 given"),
    ("transformNull(a.x.req, 0, a.y.req)", "referenceSeries argument is not served"),
    ('movingAverage(a.x.req, "5x")', "unknown time unit 'x'"),
    ("movingAverage(a.x.req, 0)", "at least 1"),
    ('sumSeries("a.x.req")', "expected a series"),
    ("5", "expected a series"),
])
def test_errors_name_the_function_and_argument(target: str, message: str) -> None:
    with pytest.raises(TargetError) as info:
        plan(parse(target), T0, CTX_END, 60)  # checked before anything is read
        run(target)
    assert message in str(info.value)


def test_plan_lists_the_reads_with_shifted_and_widened_ranges() -> None:
    reads = plan(parse('sumSeries(a.*.req, timeShift(a.x.req, "1h"), '
                       'movingAverage(c.up, 5))'), T0, CTX_END, 60)
    assert reads == [("a.*.req", T0, CTX_END), ("a.x.req", T0 - 3600, CTX_END - 3600),
                     ("c.up", T0 - 300, CTX_END)]


# -- consolidation (maxDataPoints, consolidateBy) and the read step -------------------


def series(values: list[float | None], consolidation: str, start: int = T0,
           step: int = 60) -> Series:
    return Series("s", start, step, values, "s", consolidation)


@pytest.mark.parametrize(("consolidation", "expected"), [
    ("sum", [3, 4, 11]), ("average", [1.5, 4, 5.5]), ("min", [1, 4, 5]),
    ("max", [2, 4, 6]), ("first", [1, 4, 5]), ("last", [2, 4, 6]),
])
def test_max_data_points_consolidates_by_the_series_function(
    consolidation: str, expected: list[float]
) -> None:
    out = max_data_points(series([1, 2, N, 4, 5, 6], consolidation), 3)
    assert (out.start, out.step, out.values) == (T0, 120, expected)
    assert max_data_points(series([1, 2], consolidation), 2).values == [1, 2]


def test_consolidation_buckets_are_aligned_and_a_partial_first_one_is_dropped() -> None:
    # from T0 + 60, 120 s buckets: [T0 + 60] alone is a partial bucket, left out
    out = consolidate(series([1, 2, 3, 4, 5], "sum", start=T0 + 60), 120)
    assert (out.start, out.values) == (T0 + 120, [5, 9])
    assert consolidate(series([N, N, 3, 4], "sum"), 120).values == [N, 7]


def test_average_consolidation_weighs_steps_by_their_samples() -> None:
    # minute 1: 3 samples summing 3 (avg 1); minute 2: 1 sample of 5 (avg 5)
    weighted = Series("s", T0, 60, [1.0, 5.0], "s", "average", {}, ([3.0, 1.0], [3.0, 5.0]))
    assert consolidate(weighted, 120).values == [2.0]  # 8 / 4, not (1 + 5) / 2
    assert consolidate(series([1.0, 5.0], "average"), 120).values == [3.0]


def test_normalize_aligns_mixed_steps_and_ranges() -> None:
    start, end, step, rows = normalize([series([1, 2, 3, 4], "sum"),
                                        series([7, 8], "max", start=T0 + 120, step=120)])
    assert (start, end, step) == (T0, T0 + 360, 120)
    assert rows == [[3, 7, N], [N, 7, 8]]


@pytest.mark.parametrize(("span", "points", "min_step", "step"), [
    (3600, None, 1, 1), (86400, None, 1, 60), (86400, 1000, 1, 60), (86400, 1440, 1, 60),
    (86400, 20, 1, 3600), (5 * 86400, None, 1, 60), (7 * 86400, None, 1, 3600),
    (30 * 86400, None, 1, 3600),
    (3600, 100, 1, 1), (3600, 30, 1, 60), (3600, None, 60, 60), (10 * 365 * 86400, 100, 1, 86400),
])
def test_read_step(span: int, points: int | None, min_step: int, step: int) -> None:
    assert read_step(T0, T0 + span, points, min_step) == step


# -- no target crashes the evaluator ------------------------------------------------

_names = st.sampled_from([*FUNCTIONS, "nope"])
_leaves = st.one_of(
    st.sampled_from(["a.*.req", "a.x.req", "c.up", "nothing", "a.{x,y}.req"]).map(Path),
    st.integers(-5, 400).map(Number), st.floats(-1e6, 1e6).map(Number),
    st.sampled_from(["sum", "max", "1min", "-1h", "(.*)", r"\1", "average", "x"]).map(String),
)
_trees = st.recursive(_leaves, lambda children: st.builds(
    lambda name, args: Call(name, tuple(args)), _names, st.lists(children, max_size=4)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_trees)
def test_any_tree_evaluates_or_raises_target_error(tree: Node) -> None:
    try:
        plan(tree, T0, CTX_END, 60)
        out = evaluate_series(tree, CTX)
    except TargetError:
        return
    for s in out:
        assert all(v is None or math.isfinite(v) for v in s.values)
