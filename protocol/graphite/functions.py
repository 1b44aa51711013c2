"""The render functions served, their parameters, and the evaluator of a target.

Each function is pure: series lists in, series lists out, with graphite-web 1.1's
semantics, names and argument forms (docs/grafana.md lists the differences). A target
is evaluated against a ``Context`` whose ``fetch`` answers a path expression over a
time range: the I/O side first evaluates with a ``fetch`` that only records what is
asked (``plan``), reads that from the store, then evaluates again with the answers.

An unknown function, an unknown or missing argument, or an argument of the wrong type
is a ``TargetError`` naming it: never a silently different graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import regex  # type: ignore[import-untyped]

from protocol.graphite.attime import parse_offset
from protocol.graphite.expr import Bool, Call, Node, NoneLiteral, Number, ParseError, Path, String
from protocol.graphite.expr import parse as parse_target
from protocol.graphite.series import (
    AGG_FUNCS,
    CONSOLIDATIONS,
    Series,
    Value,
    aggregate,
    divided_sum,
    fsum,
    normalize,
)

MAX_REGEX_LENGTH: Final = 256
REGEX_TIMEOUT: Final = 0.05  # seconds per name: a catastrophic pattern fails, not hangs
MAX_BUCKETS: Final = 100_000  # summarize and hitcount output per series


class TargetError(ValueError):
    """The target cannot be evaluated as written (unknown function, bad argument)."""


Fetch = Callable[[str, int, int], list[Series]]


@dataclass(frozen=True, slots=True)
class Context:
    start: int  # the requested range, [start, end)
    end: int
    step: int  # the step series are read at for this request
    fetch: Fetch


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str  # graphite-web's ParamTypes name
    required: bool = False
    default: Any = None
    multiple: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    group: str
    params: tuple[Param, ...]
    impl: Callable[..., list[Series]]
    description: str
    # the first argument is passed unevaluated: the function reads it over another range
    lazy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# -- helpers --------------------------------------------------------------------------


def _g(number: float) -> str:
    return f"{float(number):g}"


def _path_expressions(series_list: Sequence[Series]) -> str:
    seen: dict[str, None] = {}
    for s in series_list:
        seen.setdefault(s.path_expression or s.name, None)
    return ",".join(seen)


def _first_path(name: str) -> str:
    """graphite-web's ``_getFirstPathExpression``: the first path inside a name."""
    try:
        node = parse_target(name)
    except ParseError:
        return name
    from protocol.graphite.expr import paths

    found = paths(node)
    return found[0] if found else name


def _map(series_list: list[Series], name: str,
         fn: Callable[[float], Value]) -> list[Series]:
    return [s.derive(name % s.name, [None if v is None else fn(v) for v in s.values])
            for s in series_list]


def _finite(value: float) -> Value:
    return value if math.isfinite(value) else None


def _combine(name: str, func: str, series_lists: tuple[list[Series], ...]) -> list[Series]:
    series_list = [s for group in series_lists for s in group]
    if not series_list:
        return []
    start, _end, step, rows = normalize(series_list)
    values = [aggregate(func, column) for column in zip(*rows, strict=True)]
    label = f"{name}({_path_expressions(series_list)})"
    first = series_list[0]
    return [Series(label, start, step, values, label, first.consolidation,
                   {"name": label, "aggregatedBy": func})]


def _agg_name(callback: str) -> str:
    name = callback.removesuffix("Series") if callback.endswith("Series") else callback
    if name not in AGG_FUNCS:
        raise TargetError(f"unknown aggregation {callback!r}; known: "
                          f"{', '.join(sorted(AGG_FUNCS))}")
    return name


def _non_negative_delta(val: Value, prev: Value, max_value: Value,
                        min_value: Value) -> tuple[Value, Value]:
    if max_value is not None and val is not None and val > max_value:
        return None, None
    if val is None or prev is None:
        return None, val
    if val >= prev:
        return val - prev, val
    if max_value is not None:
        return max_value + 1 - prev + val - (min_value or 0), val
    if min_value is not None:
        return val - min_value, val
    return None, val


# -- the functions -------------------------------------------------------------------


def alias(ctx: Context, series_list: list[Series], new_name: str) -> list[Series]:
    return [s.renamed(new_name) for s in series_list]


def alias_sub(ctx: Context, series_list: list[Series], search: str,
              replace_with: str) -> list[Series]:
    if len(search) > MAX_REGEX_LENGTH:
        raise TargetError(f"aliasSub: search longer than {MAX_REGEX_LENGTH} characters")
    try:
        pattern = regex.compile(search)
        return [s.renamed(pattern.sub(replace_with, s.name, timeout=REGEX_TIMEOUT))
                for s in series_list]
    except TimeoutError:
        raise TargetError(f"aliasSub: the search {search!r} took too long") from None
    except (regex.error, IndexError, ValueError) as exc:
        raise TargetError(f"aliasSub: {exc}") from None


def alias_by_node(ctx: Context, series_list: list[Series], *nodes: int) -> list[Series]:
    out = []
    for s in series_list:
        pieces = _first_path(s.name).split(".")
        try:
            out.append(s.renamed(".".join(pieces[n] for n in nodes)))
        except IndexError:
            raise TargetError(f"aliasByNode: {s.name!r} has no node {max(nodes)}") from None
    return out


def sum_series(ctx: Context, *series_lists: list[Series]) -> list[Series]:
    return _combine("sumSeries", "sum", series_lists)


def average_series(ctx: Context, *series_lists: list[Series]) -> list[Series]:
    return _combine("averageSeries", "average", series_lists)


def max_series(ctx: Context, *series_lists: list[Series]) -> list[Series]:
    return _combine("maxSeries", "max", series_lists)


def min_series(ctx: Context, *series_lists: list[Series]) -> list[Series]:
    return _combine("minSeries", "min", series_lists)


def group_by_node(ctx: Context, series_list: list[Series], node: int,
                  callback: str = "average") -> list[Series]:
    func = _agg_name(callback)
    groups: dict[str, list[Series]] = {}
    for s in series_list:
        pieces = _first_path(s.name).split(".")
        try:
            key = pieces[node]
        except IndexError:
            raise TargetError(f"groupByNode: {s.name!r} has no node {node}") from None
        groups.setdefault(key, []).append(s)
    out = []
    for key, members in groups.items():
        combined = _combine(f"{func}Series", func, (members,))[0]
        out.append(replace(combined, name=key, path_expression=key,
                           tags={**combined.tags, "name": key}))
    return out


def summarize(ctx: Context, series_list: list[Series], interval: str, func: str = "sum",
              align_to_from: bool = False) -> list[Series]:
    seconds = _interval(interval, "summarize")
    func = _agg_name(func)
    out = []
    for s in series_list:
        start = s.start if align_to_from else s.start - s.start % seconds
        count = math.ceil((s.end - start) / seconds) if s.end > start else 0
        _check_buckets(count, "summarize")
        buckets: list[list[Value]] = [[] for _ in range(count)]
        for ts, value in zip(s.timestamps(), s.values, strict=True):
            buckets[(ts - start) // seconds].append(value)
        flag = ", true" if align_to_from else ""
        name = f'summarize({s.name}, "{interval}", "{func}"{flag})'
        out.append(replace(s.derive(name, [aggregate(func, b) for b in buckets]),
                           start=start, step=seconds))
    return out


def hitcount(ctx: Context, series_list: list[Series], interval: str,
             align_to_interval: bool = False) -> list[Series]:
    delta = _interval(interval, "hitcount")
    out = []
    for s in series_list:
        if align_to_interval:
            new_start = s.start - s.start % delta
            count = math.ceil((s.end - new_start) / delta)
        else:
            count = math.ceil((s.end - s.start) / delta)
            new_start = s.end - count * delta
        _check_buckets(count, "hitcount")
        buckets: list[list[float]] = [[] for _ in range(count)]
        for i, value in enumerate(s.values):
            if value is None:
                continue
            begin = s.start + i * s.step
            first, first_mod = divmod(begin - new_start, delta)
            last, last_mod = divmod(begin + s.step - new_start, delta)
            if last >= count:
                last, last_mod = count - 1, delta
            if first == last:
                buckets[first].append(value * (last_mod - first_mod))
            else:
                buckets[first].append(value * (delta - first_mod))
                for j in range(first + 1, last):
                    buckets[j].append(value * delta)
                if last_mod:
                    buckets[last].append(value * last_mod)
        flag = ", true" if align_to_interval else ""
        name = f'hitcount({s.name}, "{interval}"{flag})'
        values: list[Value] = [_finite(fsum(b)) if b else None for b in buckets]
        out.append(replace(s.derive(name, values), start=new_start, step=delta))
    return out


def scale(ctx: Context, series_list: list[Series], factor: float) -> list[Series]:
    return _map(series_list, f"scale(%s,{_g(factor)})", lambda v: _finite(v * factor))


def scale_to_seconds(ctx: Context, series_list: list[Series], seconds: float) -> list[Series]:
    return [s.derive(f"scaleToSeconds({s.name},{int(seconds)})",
                     [None if v is None else _finite(round(v * seconds / s.step, 6))
                      for v in s.values]) for s in series_list]


def per_second(ctx: Context, series_list: list[Series], max_value: float | None = None,
               min_value: float | None = None) -> list[Series]:
    out = []
    for s in series_list:
        prev: Value = None
        values: list[Value] = []
        for val in s.values:
            delta, prev = _non_negative_delta(val, prev, max_value, min_value)
            values.append(None if delta is None else _finite(round(delta / s.step, 6)))
        out.append(s.derive(f"perSecond({s.name})", values))
    return out


def non_negative_derivative(ctx: Context, series_list: list[Series],
                            max_value: float | None = None,
                            min_value: float | None = None) -> list[Series]:
    out = []
    for s in series_list:
        prev: Value = None
        values: list[Value] = []
        for val in s.values:
            delta, prev = _non_negative_delta(val, prev, max_value, min_value)
            values.append(None if delta is None else _finite(delta))
        out.append(s.derive(f"nonNegativeDerivative({s.name})", values))
    return out


def derivative(ctx: Context, series_list: list[Series]) -> list[Series]:
    out = []
    for s in series_list:
        values: list[Value] = []
        prev: Value = None
        for val in s.values:
            values.append(None if val is None or prev is None else _finite(val - prev))
            prev = val
        out.append(s.derive(f"derivative({s.name})", values))
    return out


def integral(ctx: Context, series_list: list[Series]) -> list[Series]:
    out = []
    for s in series_list:
        total = 0.0
        values: list[Value] = []
        for val in s.values:
            if val is None:
                values.append(None)
            else:
                total += val
                values.append(_finite(total))
        out.append(s.derive(f"integral({s.name})", values))
    return out


def moving_average(ctx: Context, node: Node, window: int | str,
                   x_files_factor: float | None = None) -> list[Series]:
    if isinstance(window, str):
        preview = abs(_interval(window, "movingAverage"))
    else:
        if window < 1:
            raise TargetError("movingAverage: windowSize must be at least 1")
        preview = window * ctx.step
    wider = replace(ctx, start=ctx.start - preview)
    out = []
    for s in evaluate_series(node, wider):
        points = preview // s.step if isinstance(window, str) else window
        label = f'"{window}"' if isinstance(window, str) else str(window)
        first = max(0, -(-(ctx.start - s.start) // s.step))
        values: list[Value] = []
        for i in range(first, len(s.values)):
            present = [v for v in s.values[max(0, i - points):i] if v is not None]
            enough = points and len(present) / points >= (x_files_factor or 0.0)
            values.append(_finite(divided_sum(present, len(present)))
                          if present and enough else None)
        out.append(replace(s.derive(f"movingAverage({s.name},{label})", values),
                           start=s.start + first * s.step))
    return out


def as_percent(ctx: Context, series_list: list[Series], total: Any = None) -> list[Series]:
    if not series_list:
        return []
    if total is None or isinstance(total, int | float):
        if total is None:
            start, _end, step, rows = normalize(series_list)
            totals = [aggregate("sum", column) for column in zip(*rows, strict=True)]
            aligned = [replace(s, start=start, step=step, values=row)
                       for s, row in zip(series_list, rows, strict=True)]
            label = f"sumSeries({_path_expressions(series_list)})"
            return [s.derive(f"asPercent({s.name},{label})", _percent(s.values, totals))
                    for s in aligned]
        return [s.derive(f"asPercent({s.name},{total})",
                         _percent(s.values, [float(total)] * len(s.values)))
                for s in series_list]
    totals_list: list[Series] = total
    if len(totals_list) == 1:
        pairs = [(s, totals_list[0]) for s in series_list]
    elif len(totals_list) == len(series_list):
        pairs = list(zip(sorted(series_list, key=lambda s: s.name),
                         sorted(totals_list, key=lambda s: s.name), strict=True))
    else:
        raise TargetError("asPercent: the total must be a number, one series, or as many "
                          f"series as the first argument ({len(series_list)}), not "
                          f"{len(totals_list)}")
    out = []
    for s, t in pairs:
        start, _end, step, (values, totals) = normalize([s, t])
        out.append(replace(s.derive(f"asPercent({s.name},{t.name})",
                                    _percent(values, totals)), start=start, step=step))
    return out


def _percent(values: Sequence[Value], totals: Sequence[Value]) -> list[Value]:
    return [None if v is None or not t else _finite(v / t * 100)
            for v, t in zip(values, totals, strict=True)]


def keep_last_value(ctx: Context, series_list: list[Series],
                    limit: float = math.inf) -> list[Series]:
    out = []
    for s in series_list:
        values = list(s.values)
        gap = 0
        for i, value in enumerate(values):
            if i == 0:
                continue
            if value is None:
                gap += 1
                continue
            if 0 < gap <= limit:
                for j in range(i - gap, i):
                    values[j] = values[i - gap - 1]
            gap = 0
        if 0 < gap <= limit:
            for j in range(len(values) - gap, len(values)):
                values[j] = values[len(values) - gap - 1]
        out.append(s.derive(f"keepLastValue({s.name})", values))
    return out


def transform_null(ctx: Context, series_list: list[Series], default: float = 0,
                   reference: list[Series] | None = None) -> list[Series]:
    if reference is not None:
        raise TargetError("transformNull: the referenceSeries argument is not served")
    return [s.derive(f"transformNull({s.name},{_g(default)})",
                     [float(default) if v is None else v for v in s.values])
            for s in series_list]


def consolidate_by(ctx: Context, series_list: list[Series], func: str) -> list[Series]:
    if func not in CONSOLIDATIONS:
        raise TargetError(f"consolidateBy: unknown function {func!r}; known: "
                          f"{', '.join(CONSOLIDATIONS)}")
    return [replace(s.renamed(f'consolidateBy({s.name},"{func}")'),
                    consolidation="average" if func == "avg" else func, summaries=None)
            for s in series_list]


def _ranked(series_list: list[Series], n: int, func: str, highest: bool) -> list[Series]:
    def key(s: Series) -> float:
        value = aggregate(func, s.values)
        if value is None:
            return -math.inf if highest else math.inf
        return value

    return sorted(series_list, key=key, reverse=highest)[:max(n, 0)]


def highest_average(ctx: Context, series_list: list[Series], n: int = 1) -> list[Series]:
    return _ranked(series_list, n, "average", True)


def highest_max(ctx: Context, series_list: list[Series], n: int = 1) -> list[Series]:
    return _ranked(series_list, n, "max", True)


def lowest_average(ctx: Context, series_list: list[Series], n: int = 1) -> list[Series]:
    return _ranked(series_list, n, "average", False)


def limit(ctx: Context, series_list: list[Series], n: int) -> list[Series]:
    return series_list[:max(n, 0)]


def sort_by_maxima(ctx: Context, series_list: list[Series]) -> list[Series]:
    return _ranked(series_list, len(series_list), "max", True)


def constant_line(ctx: Context, value: float) -> list[Series]:
    step = max((ctx.end - ctx.start) // 2, 1)
    name = str(value)
    return [Series(name, ctx.start, step, [float(value)] * 3, name, "average",
                   {"name": name})]


def offset(ctx: Context, series_list: list[Series], factor: float) -> list[Series]:
    return _map(series_list, f"offset(%s,{_g(factor)})", lambda v: _finite(v + factor))


def absolute(ctx: Context, series_list: list[Series]) -> list[Series]:
    return _map(series_list, "absolute(%s)", abs)


def time_shift(ctx: Context, node: Node, shift: str, reset_end: bool = True,
               align_dst: bool = False) -> list[Series]:
    if shift[:1].isdigit():
        shift = "-" + shift  # graphite: an unsigned shift goes back in time
    delta = _interval(shift, "timeShift")
    shifted = replace(ctx, start=ctx.start + delta, end=ctx.end + delta)
    return [replace(s.renamed(f'timeShift({s.name}, "{shift}")'), start=s.start - delta)
            for s in evaluate_series(node, shifted)]


def _check_buckets(count: int, function: str) -> None:
    if count > MAX_BUCKETS:
        raise TargetError(f"{function}: the interval gives {count} buckets; at most "
                          f"{MAX_BUCKETS}")


def _interval(text: str, function: str) -> int:
    try:
        seconds = parse_offset(text)
    except ValueError as exc:
        raise TargetError(f"{function}: {exc}") from None
    if function in ("summarize", "hitcount") and seconds <= 0:
        raise TargetError(f"{function}: the interval must be positive, not {text!r}")
    return seconds


# -- the table ------------------------------------------------------------------------

_SERIES = Param("seriesList", "seriesList", required=True)
_AGG_OPTIONS: Final = tuple(sorted(AGG_FUNCS))


def _fn(name: str, group: str, impl: Callable[..., list[Series]], description: str,
        *params: Param, lazy: bool = False) -> Function:
    return Function(name, group, params, impl, description, lazy)


FUNCTIONS: Final = {f.name: f for f in (
    _fn("alias", "Alias", alias, "Takes a series list and gives each series the name given.",
        _SERIES, Param("newName", "string", required=True)),
    _fn("aliasSub", "Alias", alias_sub,
        "Runs a regular expression search and replace (Python syntax, back-references "
        r"\1 or \g<1>) on each series name.",
        _SERIES, Param("search", "string", required=True),
        Param("replace", "string", required=True)),
    _fn("aliasByNode", "Alias", alias_by_node,
        "Names each series by the given nodes of its path (0-based; negative from the end).",
        _SERIES, Param("nodes", "nodeOrTag", required=True, multiple=True)),
    _fn("sumSeries", "Combine", sum_series,
        "Adds series up point by point (None where every series is None).",
        Param("seriesLists", "seriesList", required=True, multiple=True)),
    _fn("averageSeries", "Combine", average_series,
        "The average of the series at each point (of the non-None values).",
        Param("seriesLists", "seriesList", required=True, multiple=True)),
    _fn("maxSeries", "Combine", max_series, "The maximum of the series at each point.",
        Param("seriesLists", "seriesList", required=True, multiple=True)),
    _fn("minSeries", "Combine", min_series, "The minimum of the series at each point.",
        Param("seriesLists", "seriesList", required=True, multiple=True)),
    _fn("groupByNode", "Combine", group_by_node,
        "Groups series by one node of their path and aggregates each group.",
        _SERIES, Param("nodeNum", "nodeOrTag", required=True),
        Param("callback", "aggFunc", default="average", options=_AGG_OPTIONS)),
    _fn("summarize", "Transform", summarize,
        "Summarizes each series into buckets of the interval (aligned to the interval, "
        "or to the series start with alignToFrom).",
        _SERIES, Param("intervalString", "interval", required=True),
        Param("func", "aggFunc", default="sum", options=_AGG_OPTIONS),
        Param("alignToFrom", "boolean", default=False)),
    _fn("hitcount", "Transform", hitcount,
        "Estimates hits per interval from a per-second rate (value x seconds covered).",
        _SERIES, Param("intervalString", "interval", required=True),
        Param("alignToInterval", "boolean", default=False)),
    _fn("scale", "Transform", scale, "Multiplies each point by a constant.",
        _SERIES, Param("factor", "float", required=True)),
    _fn("scaleToSeconds", "Transform", scale_to_seconds,
        "Scales each point to a value per the given seconds (value x seconds / step).",
        _SERIES, Param("seconds", "float", required=True)),
    _fn("perSecond", "Transform", per_second,
        "The per-second rate of increase of a growing counter (None on a decrease "
        "without maxValue).",
        _SERIES, Param("maxValue", "float"), Param("minValue", "float")),
    _fn("nonNegativeDerivative", "Transform", non_negative_derivative,
        "The increase from the previous point of a growing counter.",
        _SERIES, Param("maxValue", "float"), Param("minValue", "float")),
    _fn("derivative", "Transform", derivative, "The difference from the previous point.",
        _SERIES),
    _fn("integral", "Transform", integral, "The running total of the points.", _SERIES),
    _fn("movingAverage", "Calculate", moving_average,
        "The average of the preceding points: a number of points or a time (\"5min\").",
        _SERIES, Param("windowSize", "intOrInterval", required=True),
        Param("xFilesFactor", "float"), lazy=True),
    _fn("asPercent", "Combine", as_percent,
        "Each series as a percent of a total: the sum of the series, a number, one "
        "series, or as many series as the first argument (matched by name).",
        _SERIES, Param("total", "any")),
    _fn("keepLastValue", "Transform", keep_last_value,
        "Continues the last value over gaps of at most limit points.",
        _SERIES, Param("limit", "integer", default=math.inf)),
    _fn("transformNull", "Transform", transform_null, "Replaces None with a default.",
        _SERIES, Param("default", "float", default=0),
        Param("referenceSeries", "seriesList")),
    _fn("consolidateBy", "Special", consolidate_by,
        "How points are combined when more points than maxDataPoints are drawn.",
        _SERIES, Param("consolidationFunc", "string", required=True,
                       options=CONSOLIDATIONS)),
    _fn("highestAverage", "Filter Series", highest_average,
        "The n series with the highest average.", _SERIES, Param("n", "integer", default=1)),
    _fn("highestMax", "Filter Series", highest_max,
        "The n series with the highest maximum.", _SERIES, Param("n", "integer", default=1)),
    _fn("lowestAverage", "Filter Series", lowest_average,
        "The n series with the lowest average.", _SERIES, Param("n", "integer", default=1)),
    _fn("limit", "Filter Series", limit, "The first n series.",
        _SERIES, Param("n", "integer", required=True)),
    _fn("sortByMaxima", "Sorting", sort_by_maxima, "Sorts the series by maximum, highest first.",
        _SERIES),
    _fn("constantLine", "Special", constant_line, "A horizontal line at the value.",
        Param("value", "float", required=True)),
    _fn("offset", "Transform", offset, "Adds a constant to each point.",
        _SERIES, Param("factor", "float", required=True)),
    _fn("absolute", "Transform", absolute, "The absolute value of each point.", _SERIES),
    _fn("timeShift", "Transform", time_shift,
        "Draws the series shifted in time (an unsigned shift goes back: \"1d\" is \"-1d\").",
        _SERIES, Param("timeShift", "interval", required=True),
        Param("resetEnd", "boolean", default=True), Param("alignDST", "boolean", default=False),
        lazy=True),
)}


# -- evaluation -----------------------------------------------------------------------


def evaluate_series(node: Node, ctx: Context) -> list[Series]:
    """The series a path or call stands for; TargetError for anything else."""
    if isinstance(node, Path):
        return ctx.fetch(node.pattern, ctx.start, ctx.end)
    if isinstance(node, Call):
        return _call(node, ctx)
    raise TargetError(f"expected a series (a path or a function call), not {_describe(node)}")


def _call(call: Call, ctx: Context) -> list[Series]:
    function = FUNCTIONS.get(call.name)
    if function is None:
        raise TargetError(f"unknown function {call.name!r}")
    params = function.params
    bound: list[Any] = []
    given = list(call.args)
    named = dict(call.kwargs)
    for key in named:
        if key not in {p.name for p in params}:
            raise TargetError(f"{call.name}: unknown argument {key!r}")
    for index, param in enumerate(params):
        if param.multiple:
            rest = given[index:]
            if param.required and not rest:
                raise TargetError(f"{call.name}: missing argument {param.name!r}")
            bound.extend(_argument(call.name, param, node, ctx, lazy=False) for node in rest)
            given = given[:index]
            break
        if index < len(given):
            if param.name in named:
                raise TargetError(f"{call.name}: argument {param.name!r} given twice")
            node: Node | None = given[index]
        else:
            node = named.get(param.name)
        if node is None:
            if param.required:
                raise TargetError(f"{call.name}: missing argument {param.name!r}")
            bound.append(param.default)
            continue
        bound.append(_argument(call.name, param, node, ctx, lazy=function.lazy and index == 0))
    else:
        if len(given) > len(params):
            raise TargetError(f"{call.name}: takes at most {len(params)} arguments, "
                              f"{len(given)} given")
    return function.impl(ctx, *bound)


def _argument(function: str, param: Param, node: Node, ctx: Context, *, lazy: bool) -> Any:
    kind = param.type
    where = f"{function}: argument {param.name!r}"
    if kind == "seriesList":
        if lazy:
            if not isinstance(node, Path | Call):
                raise TargetError(f"{where} must be a series, not {_describe(node)}")
            return node
        return evaluate_series(node, ctx)
    if kind == "any":
        if isinstance(node, Path | Call):
            return evaluate_series(node, ctx)
        if isinstance(node, Number):
            return node.value
        if isinstance(node, NoneLiteral):
            return None
        raise TargetError(f"{where} must be a number or a series, not {_describe(node)}")
    if isinstance(node, NoneLiteral) and not param.required:
        return param.default
    if kind in ("integer", "nodeOrTag"):
        if isinstance(node, Number) and float(node.value).is_integer():
            return int(node.value)
        raise TargetError(f"{where} must be an integer, not {_describe(node)}")
    if kind == "float":
        if isinstance(node, Number):
            return node.value
        raise TargetError(f"{where} must be a number, not {_describe(node)}")
    if kind == "boolean":
        if isinstance(node, Bool):
            return node.value
        if isinstance(node, Number) and node.value in (0, 1):
            return bool(node.value)
        raise TargetError(f"{where} must be true or false, not {_describe(node)}")
    if kind == "intOrInterval":
        if isinstance(node, Number) and float(node.value).is_integer():
            return int(node.value)
        if isinstance(node, String):
            return node.value
        raise TargetError(f"{where} must be a number of points or a time like \"5min\", "
                          f"not {_describe(node)}")
    if isinstance(node, String):  # string, interval, aggFunc
        if param.options and node.value not in param.options and kind != "aggFunc":
            raise TargetError(f"{where} must be one of {', '.join(param.options)}, "
                              f"not {node.value!r}")
        return node.value
    raise TargetError(f"{where} must be a quoted string, not {_describe(node)}")


def _describe(node: Node) -> str:
    if isinstance(node, Path):
        return f"the path {node.pattern!r}"
    if isinstance(node, String):
        return f"the string {node.value!r}"
    if isinstance(node, Number):
        return f"the number {node.value!r}"
    if isinstance(node, Bool):
        return "a boolean"
    if isinstance(node, NoneLiteral):
        return "None"
    return f"a call of {node.name}"


def plan(node: Node, start: int, end: int, step: int) -> list[tuple[str, int, int]]:
    """The (pattern, start, end) reads evaluating ``node`` needs; TargetError if it
    cannot be evaluated (checked before anything is read)."""
    reads: dict[tuple[str, int, int], None] = {}

    def record(pattern: str, low: int, high: int) -> list[Series]:
        reads.setdefault((pattern, low, high), None)
        return []

    evaluate_series(node, Context(start, end, step, record))
    return list(reads)


def functions_document() -> dict[str, Any]:
    """``/functions``: graphite-web's shape (name -> description, group, params)."""
    out: dict[str, Any] = {}
    for f in FUNCTIONS.values():
        params = []
        for p in f.params:
            entry: dict[str, Any] = {"name": p.name, "type": p.type}
            if p.required:
                entry["required"] = True
            if p.multiple:
                entry["multiple"] = True
            if p.default is not None and not (isinstance(p.default, float)
                                              and math.isinf(p.default)):
                entry["default"] = p.default
            if p.options:
                entry["options"] = list(p.options)
            params.append(entry)
        signature = ", ".join(p.name + ("..." if p.multiple else "") for p in f.params)
        out[f.name] = {
            "name": f.name,
            "function": f"{f.name}({signature})",
            "description": f.description,
            "module": "graphite.render.functions",
            "group": f.group,
            "params": params,
        }
    return out
