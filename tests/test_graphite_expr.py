"""Target expressions (parse and render round-trip), Graphite times, and globs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.graphite import glob
from protocol.graphite.attime import parse_offset, parse_time
from protocol.graphite.expr import (
    MAX_DEPTH,
    Bool,
    Call,
    Node,
    NoneLiteral,
    Number,
    ParseError,
    Path,
    String,
    parse,
    render,
)

# -- parse(render(ast)) == ast ----------------------------------------------------------

_node_text = st.text("abcxyzAZ019_-", min_size=1, max_size=6)
_glob_node = st.one_of(
    _node_text, st.just("*"), _node_text.map(lambda t: t + "*"), st.just("[a-c]"),
    st.just("x?z"), st.lists(_node_text, min_size=1, max_size=3).map(
        lambda c: "{" + ",".join(c) + "}"),
)
_paths = (
    st.lists(_glob_node, min_size=1, max_size=5).map(".".join)
    .filter(lambda p: not p[0].isdigit() and p[0] not in "-+"
            and p.lower() not in ("true", "false", "none"))
    .map(Path)
)
_identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_leaves: st.SearchStrategy[Node] = st.one_of(
    _paths,
    st.text(max_size=20).map(String),
    st.integers(-(10**18), 10**18).map(Number),
    st.floats(allow_nan=False, allow_infinity=False).map(Number),
    st.booleans().map(Bool),
    st.just(NoneLiteral()),
)


def _call(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    kwargs = st.dictionaries(_identifiers, children, max_size=2).map(
        lambda d: tuple(d.items()))
    return st.builds(lambda name, args, kw: Call(name, tuple(args), kw),
                     _identifiers, st.lists(children, max_size=4), kwargs)


trees = st.recursive(_leaves, _call, max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(trees)
def test_parse_of_render_round_trips(tree: Node) -> None:
    text = render(tree)
    assert parse(text) == tree
    assert render(parse(text)) == text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab.*{},()'\"\\= 1-e[]")), max_size=40)
       | st.text(max_size=40))
def test_any_text_parses_or_raises_parse_error(text: str) -> None:
    try:
        tree = parse(text)
    except ParseError:
        return
    assert parse(render(tree)) == tree


@pytest.mark.parametrize(("text", "tree"), [
    ("a.b.c", Path("a.b.c")),
    ("app.{web1,web2}.requests", Path("app.{web1,web2}.requests")),
    ("5xx.count", Path("5xx.count")),
    ("-1.5e3", Number(-1500.0)),
    ("42", Number(42)),
    ("TRUE", Bool(True)),
    ("None", NoneLiteral()),
    ('aliasSub(a.*, "(^.*$)", "\\1 A")',
     Call("aliasSub", (Path("a.*"), String("(^.*$)"), String("\\1 A")))),
    ("summarize( a.b , '1h', alignToFrom = true )",
     Call("summarize", (Path("a.b"), String("1h")), (("alignToFrom", Bool(True)),))),
    ("sumSeries(scale(a.*, 2), b)",
     Call("sumSeries", (Call("scale", (Path("a.*"), Number(2))), Path("b")))),
    (r"alias(a, 'it\'s')", Call("alias", (Path("a"), String("it's")))),
    ("f()", Call("f")),
])
def test_parse(text: str, tree: Node) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected an expression"),
    ("sumSeries(a.b", "expected ',' or ')'"),
    ("sumSeries(a.b))", "unexpected ')'"),
    ("a.{b,c", "unclosed '{'"),
    ("'open", "unclosed string"),
    ("f(x=1, 2)", "positional argument after a keyword"),
    ("f(x=1, x=2)", "given twice"),
    ("1e999", "out of range"),
    ("a.b(1)", "not a function name"),
    ("f(" * (MAX_DEPTH + 2) + ")" * (MAX_DEPTH + 2), "nested more than"),
    ("a" * 9000, "longer than"),
])
def test_parse_errors_say_why(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=None) as info:
        parse(text)
    assert message in str(info.value)


# -- attime -------------------------------------------------------------------------

NOW = 1_764_340_245  # 2025-11-28T14:30:45Z
MIDNIGHT = 1_764_288_000


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW), ("-6h", NOW - 6 * 3600), ("-5min", NOW - 300), ("-1d", NOW - 86400),
    ("-2w", NOW - 14 * 86400), ("-1mon", NOW - 30 * 86400), ("-1y", NOW - 365 * 86400),
    ("-10s", NOW - 10), ("-3hours", NOW - 3 * 3600), ("+1h", NOW + 3600),
    ("now-1d", NOW - 86400), ("-1h30min", NOW - 5400),
    ("1700000000", 1_700_000_000), ("20251128", MIDNIGHT),
    ("14:30_20251128", MIDNIGHT + 14 * 3600 + 1800), ("09:05_20251127", MIDNIGHT - 86400 + 32700),
    ("midnight", MIDNIGHT), ("today", MIDNIGHT), ("yesterday", MIDNIGHT - 86400),
    ("tomorrow", MIDNIGHT + 86400), ("noon", MIDNIGHT + 43200), ("midnight+2h", MIDNIGHT + 7200),
    (" NOW ", NOW),
])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("-5m", "ambiguous unit 'm'"), ("-5x", "unknown time unit 'x'"), ("", "empty"),
    ("soon", "unknown time"), ("25:00_20251128", "unknown time"), ("-h", "invalid"),
    ("-1000y", "too large"), ("9" * 20, "out of range"),
])
def test_bad_times_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_time(text, NOW)
    assert message in str(info.value)


def test_offsets() -> None:
    assert parse_offset("1d") == 86400 and parse_offset("-2min") == -120
    assert parse_offset("+1w") == 604800


# -- globs ----------------------------------------------------------------------------

NAMES = ["app.web1.requests", "app.web2.requests", "app.web2.errors", "app.db", "db.queries",
         "app.db.count"]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*", ["app", "db"]),
    ("app.*", ["app.db", "app.web1", "app.web2"]),
    ("app.web?.requests", ["app.web1.requests", "app.web2.requests"]),
    ("app.web[!1].*", ["app.web2.errors", "app.web2.requests"]),
    ("app.web[12].{requests,err*}", ["app.web1.requests", "app.web2.errors",
                                     "app.web2.requests"]),
    ("*.*.requests", ["app.web1.requests", "app.web2.requests"]),
    # app.db is a metric with deeper names too, and app.db.count is stored: it wins
    ("app.db.*", ["app.db.count", "app.db.avg", "app.db.max", "app.db.min", "app.db.rate",
                  "app.db.sum"]),
    ("db.queries.m*", ["db.queries.max", "db.queries.min"]),
    ("nothing.*", []),
])
def test_find(pattern: str, expected: list[str]) -> None:
    assert [m.path for m in glob.find(pattern, NAMES)] == expected


def test_find_marks_leaves_branches_and_what_a_leaf_reads() -> None:
    found = {m.path: m for m in glob.find("app.*", NAMES)}
    assert (found["app.web1"].leaf, found["app.web1"].branch) == (False, True)
    assert (found["app.db"].leaf, found["app.db"].branch, found["app.db"].metric) == (
        True, True, "app.db")
    virtual = {m.path: m for m in glob.find("app.db.*", NAMES)}
    assert virtual["app.db.max"] == glob.Match("app.db.max", True, False, "app.db", "max")
    assert virtual["app.db.count"].metric == "app.db.count"  # the stored one
    assert virtual["app.db.count"].aggregation is None


@pytest.mark.parametrize("pattern", ["a.[b", "a.{b", "a.b]", "a.[]"])
def test_bad_globs(pattern: str) -> None:
    with pytest.raises(glob.GlobError):
        glob.find(pattern, NAMES)
