"""protocol.units, protocol.buckets, protocol.names and protocol.tokens."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.buckets import (
    AGGREGATIONS,
    FILLS,
    Aggregation,
    BucketRow,
    Fill,
    aggregate,
    align,
    bucket_count,
    bucket_range,
    default_fill,
    merge,
    series,
)
from protocol.names import MAX_NAME_LENGTH, is_valid_name_bytes, name_error
from protocol.tokens import (
    BASE62,
    DISPLAY_PREFIX_LENGTH,
    TOKEN_LENGTH,
    display_prefix,
    generate_token,
    hash_token,
    is_token,
    parse_scopes,
)
from protocol.units import (
    RateLimit,
    format_rate_limit,
    format_timestamp,
    parse_duration,
    parse_interval,
    parse_rate_limit,
    parse_timestamp,
)

FAST = settings(max_examples=300, deadline=None)
DAY = 86400
EXAMPLE_EPOCH = 1_795_874_400  # 2026-11-28T14:00:00Z, DESIGN §3's example
YEAR_10000 = 253_402_300_800

# -- units: durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("12h", 43200),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        ("1s", 1),
        ("90m", 5400),
        ("0", 0),
        ("45", 45),
        ("604800", 604800),
        (" 7d ", 7 * DAY),
        ("7d\n", 7 * DAY),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", " ", "s", "0s", "-1s", "-5", "1.5h", "7 d", "7D", "7x", "7dd", "d7", "1h30m", "1y",
     "\u0661s", "+5s", "5 s"],
)  # fmt: skip
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- units: query intervals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("second", 1),
        ("minute", 60),
        ("hour", 3600),
        ("day", DAY),
        ("1s", 1),
        ("10s", 10),
        ("15s", 15),
        ("30s", 30),
        ("1m", 60),
        ("5m", 300),
        ("15m", 900),
        ("1h", 3600),
        ("6h", 21600),
        ("24h", DAY),
        ("48h", 2 * DAY),  # a whole number of days
        ("1d", DAY),
        ("7d", 7 * DAY),
        ("1440m", DAY),
        ("86400s", DAY),
    ],
)
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "7m",  # 86400 / 420 is not whole: a 7m bucket would straddle midnight
        "7s",
        "11m",
        "25h",
        "36h",
        "1w",  # weeks do not start at the epoch's weekday: not offered
        "2w",
        "0s",
        "0m",
        "",
        "10",
        "60",
        "Second",
        "seconds",
        "week",
        "1.5h",
        "-1h",
        "5 m",
    ],
)
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


@FAST
@given(st.integers(min_value=1, max_value=10 * DAY))
def test_accepted_intervals_align_to_midnight(seconds: int) -> None:
    try:
        interval = parse_interval(f"{seconds}s")
    except ValueError:
        assert DAY % seconds and seconds % DAY
    else:
        assert interval == seconds
        assert DAY % interval == 0 or interval % DAY == 0


# -- units: rate limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("100/s", RateLimit(100.0, 100.0)),
        ("6000/m", RateLimit(100.0, 6000.0)),
        ("60/m", RateLimit(1.0, 60.0)),
        ("3600/h", RateLimit(1.0, 3600.0)),
        ("1/d", RateLimit(1 / DAY, 1.0)),
        ("1/s", RateLimit(1.0, 1.0)),
        (" 10/s ", RateLimit(10.0, 10.0)),
    ],
)
def test_parse_rate_limit(text: str, limit: RateLimit) -> None:
    parsed = parse_rate_limit(text)
    assert parsed == limit
    assert parse_rate_limit(format_rate_limit(parsed)) == parsed
    assert str(parsed) == format_rate_limit(parsed)


@pytest.mark.parametrize(
    "text",
    ["", "100", "0/s", "-1/s", "1.5/s", "/s", "100/", "100/w", "100/S", "100 /s", "100/ s",
     "100/sec", "1e3/s", "s/100"],
)  # fmt: skip
def test_parse_rate_limit_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(text)


@pytest.mark.parametrize(
    ("text", "formatted"),
    [("100/s", "100/s"), ("6000/m", "6000/m"), ("60/m", "60/m"), ("24/d", "24/d")],
)
def test_format_rate_limit(text: str, formatted: str) -> None:
    assert format_rate_limit(parse_rate_limit(text)) == formatted


# -- units: timestamps ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2026-11-28T14:00:00Z", EXAMPLE_EPOCH),
        ("2026-11-28T14:00:00z", EXAMPLE_EPOCH),
        ("2026-11-28T14:00:00+00:00", EXAMPLE_EPOCH),
        ("2026-11-28T16:00:00+02:00", EXAMPLE_EPOCH),
        ("2026-11-28T09:30:00-04:30", EXAMPLE_EPOCH),
        ("2026-11-28T14:00:00", EXAMPLE_EPOCH),  # naive: UTC
        ("2026-11-28 14:00:00", EXAMPLE_EPOCH),
        ("2026-11-28T14:00:00.250Z", EXAMPLE_EPOCH + 0.25),
        ("2026-11-28", EXAMPLE_EPOCH - 14 * 3600),
        (" 2026-11-28T14:00:00Z ", EXAMPLE_EPOCH),
        ("1970-01-01T00:00:00Z", 0),
        ("9999-12-31T23:59:59Z", YEAR_10000 - 1),
        (EXAMPLE_EPOCH, EXAMPLE_EPOCH),
        (EXAMPLE_EPOCH + 0.5, EXAMPLE_EPOCH + 0.5),
        (0, 0),
        (0.0, 0),
        (str(EXAMPLE_EPOCH), EXAMPLE_EPOCH),
        (f"{EXAMPLE_EPOCH}.5", EXAMPLE_EPOCH + 0.5),
        ("1.7e9", 1.7e9),
    ],
)
def test_parse_timestamp(value: object, seconds: float) -> None:
    parsed = parse_timestamp(value)
    assert type(parsed) is float
    assert parsed == seconds


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        [],
        {},
        b"1700000000",
        -1,
        -0.5,
        YEAR_10000,
        float("nan"),
        float("inf"),
        float("-inf"),
        "nan",
        "inf",
        "-1",
        "",
        "   ",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-28T25:00:00Z",
        "28/11/2026",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1e400",
    ],
)
def test_parse_timestamp_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_parse_timestamp_rejects_huge_integers_with_value_error() -> None:
    with pytest.raises(ValueError):
        parse_timestamp(10**400)


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (EXAMPLE_EPOCH, "2026-11-28T14:00:00Z"),
        (EXAMPLE_EPOCH + 59, "2026-11-28T14:00:59Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (YEAR_10000 - 1, "9999-12-31T23:59:59Z"),
    ],
)
def test_format_timestamp(epoch: int, text: str) -> None:
    assert format_timestamp(epoch) == text


@FAST
@given(st.integers(min_value=0, max_value=YEAR_10000 - 1))
def test_timestamp_round_trip(epoch: int) -> None:
    text = format_timestamp(epoch)
    assert parse_timestamp(text) == epoch
    assert text == datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


# -- buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "interval", "start"),
    [
        (0, 60, 0),
        (59, 60, 0),
        (60, 60, 60),
        (125, 60, 120),
        (EXAMPLE_EPOCH + 3599, 3600, EXAMPLE_EPOCH),
        (EXAMPLE_EPOCH, DAY, EXAMPLE_EPOCH - 14 * 3600),  # UTC midnight
        (EXAMPLE_EPOCH + 7, 10, EXAMPLE_EPOCH),
        (-1, 60, -60),
    ],
)
def test_align(ts: int, interval: int, start: int) -> None:
    assert align(ts, interval) == start


@FAST
@given(
    ts=st.integers(min_value=0, max_value=YEAR_10000),
    interval=st.sampled_from([1, 10, 15, 60, 300, 3600, DAY, 2 * DAY]),
)
def test_align_property(ts: int, interval: int) -> None:
    start = align(ts, interval)
    assert start % interval == 0
    assert start <= ts < start + interval
    assert align(start, interval) == start


@pytest.mark.parametrize(
    ("start", "end", "interval", "starts"),
    [
        (120, 240, 60, [120, 180]),  # end is exclusive
        (120, 241, 60, [120, 180, 240]),
        (125, 245, 60, [120, 180, 240]),  # start is aligned down
        (100, 100, 60, [60]),  # [60, 100) is not empty
        (120, 120, 60, []),
        (200, 100, 60, []),
        (0, 3 * DAY, DAY, [0, DAY, 2 * DAY]),
        (EXAMPLE_EPOCH, EXAMPLE_EPOCH + 10, 1, list(range(EXAMPLE_EPOCH, EXAMPLE_EPOCH + 10))),
    ],
)
def test_bucket_range(start: int, end: int, interval: int, starts: list[int]) -> None:
    assert list(bucket_range(start, end, interval)) == starts
    assert bucket_count(start, end, interval) == len(starts)


def test_merge() -> None:
    bucket = [0.0, 0.0, math.inf, -math.inf]
    merge(bucket, 1.0, 5.0, 5.0, 5.0)
    assert bucket == [1.0, 5.0, 5.0, 5.0]
    merge(bucket, 2.0, 3.0, 1.0, 2.0)
    assert bucket == [3.0, 8.0, 1.0, 5.0]
    merge(bucket, 10.0, 90.0, 9.0, 9.0)  # a |@0.1 sample of 9
    assert bucket == [13.0, 98.0, 1.0, 9.0]


@pytest.mark.parametrize(
    ("aggregation", "fill"),
    [("sum", "zero"), ("count", "zero"), ("rate", "zero"), ("avg", "null"),
     ("min", "null"), ("max", "null")],
)  # fmt: skip
def test_default_fill(aggregation: Aggregation, fill: Fill) -> None:
    assert default_fill(aggregation) == fill


# Two non-empty buckets at 0 and 120 in [0, 180) with interval 60; 60 is empty.
ROWS = [
    BucketRow(ts=0, cnt=4.0, sum=10.0, mn=1.0, mx=4.0),
    BucketRow(ts=120, cnt=2.0, sum=3.0, mn=0.5, mx=2.5),
]
EXPECTED: dict[str, tuple[float, float]] = {
    "sum": (10.0, 3.0),
    "count": (4.0, 2.0),
    "avg": (2.5, 1.5),  # sum / cnt
    "min": (1.0, 0.5),
    "max": (4.0, 2.5),
    "rate": (10.0 / 60, 3.0 / 60),  # sum / interval: per second
}


@pytest.mark.parametrize("fill", [*FILLS, None])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_series(aggregation: Aggregation, fill: Fill | None) -> None:
    first, third = EXPECTED[aggregation]
    effective = fill or ("zero" if aggregation in ("sum", "count", "rate") else "null")
    middle: list[tuple[int, float | None]] = {
        "zero": [(60, 0.0)],
        "null": [(60, None)],
        "none": [],
    }[effective]
    assert series(ROWS, 0, 180, 60, aggregation, fill) == [(0, first), *middle, (120, third)]


def test_series_covers_aligned_start_and_exclusive_end() -> None:
    points = series(ROWS, 30, 120, 60, "sum")
    assert points == [(0, 10.0), (60, 0.0)]  # 120 is the exclusive end
    assert series(ROWS, 30, 121, 60, "sum")[-1] == (120, 3.0)


def test_series_ignores_rows_outside_the_range() -> None:
    rows = [*ROWS, BucketRow(ts=600, cnt=1.0, sum=1.0, mn=1.0, mx=1.0)]
    assert series(rows, 60, 180, 60, "count") == [(60, 0.0), (120, 2.0)]


def test_series_treats_a_zero_count_row_as_empty() -> None:
    rows = [BucketRow(ts=0, cnt=0.0, sum=0.0, mn=math.inf, mx=-math.inf)]
    assert series(rows, 0, 60, 60, "avg") == [(0, None)]
    assert series(rows, 0, 60, 60, "max") == [(0, None)]
    assert series(rows, 0, 60, 60, "sum") == [(0, 0.0)]
    assert series(rows, 0, 60, 60, "min", "none") == []


def test_series_of_sampled_counts() -> None:
    # Ten lines of "x:1|c|@0.1" stand for 100 increments: cnt and sum are 100.
    bucket = [0.0, 0.0, math.inf, -math.inf]
    for _ in range(10):
        merge(bucket, 1 / 0.1, 1 * (1 / 0.1), 1.0, 1.0)
    row = BucketRow(0, *bucket)
    assert aggregate(row, "count", 10) == pytest.approx(100.0)
    assert aggregate(row, "sum", 10) == pytest.approx(100.0)
    assert aggregate(row, "rate", 10) == pytest.approx(10.0)
    assert aggregate(row, "avg", 10) == pytest.approx(1.0)


def test_series_day_buckets_start_at_utc_midnight() -> None:
    midnight = EXAMPLE_EPOCH - 14 * 3600
    rows = [BucketRow(midnight, 1.0, 86400.0, 1.0, 1.0)]
    points = series(rows, EXAMPLE_EPOCH, EXAMPLE_EPOCH + 1, DAY, "rate")
    assert points == [(midnight, 1.0)]
    assert format_timestamp(points[0][0]) == "2026-11-28T00:00:00Z"


@FAST
@given(
    cells=st.dictionaries(
        st.integers(min_value=0, max_value=19),
        st.tuples(
            st.integers(min_value=1, max_value=1000),
            st.integers(min_value=-1000, max_value=1000),
        ),
        max_size=20,
    ),
    aggregation=st.sampled_from(AGGREGATIONS),
    fill=st.sampled_from([*FILLS, None]),
)
def test_series_property(
    cells: dict[int, tuple[int, int]], aggregation: Aggregation, fill: Fill | None
) -> None:
    interval = 10
    rows = [BucketRow(i * interval, float(c), float(s), -1.0, 1.0) for i, (c, s) in cells.items()]
    points = series(rows, 0, 20 * interval, interval, aggregation, fill)
    effective = fill or default_fill(aggregation)
    if effective == "none":
        assert [ts for ts, _ in points] == sorted(i * interval for i in cells)
    else:
        assert [ts for ts, _ in points] == list(range(0, 20 * interval, interval))
    for ts, point in points:
        if ts // interval in cells:
            cnt, total = cells[ts // interval]
            expected = {
                "sum": total,
                "count": cnt,
                "avg": total / cnt,
                "min": -1.0,
                "max": 1.0,
                "rate": total / interval,
            }[aggregation]
            assert point == expected
        else:
            assert point == (0.0 if effective == "zero" else None)


# -- names ------------------------------------------------------------------------------

NAME_RULES = "may contain only A-Z a-z 0-9 _ - and '.', with no leading, trailing or doubled '.'"


@pytest.mark.parametrize(
    "name", ["a", "A", "foo.bar", "Foo.Bar-baz_9", "1", "-", "_", "a.b.c.d", "x" * 255]
)
def test_name_error_accepts(name: str) -> None:
    assert name_error(name) is None
    assert is_valid_name_bytes(name.encode())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "must be a string"),
        (1, "must be a string"),
        (b"foo", "must be a string"),
        (["foo"], "must be a string"),
        ("", "must not be empty"),
        ("x" * 256, f"must be at most {MAX_NAME_LENGTH} characters"),
        (".foo", NAME_RULES),
        ("foo.", NAME_RULES),
        ("foo..bar", NAME_RULES),
        (".", NAME_RULES),
        ("foo bar", NAME_RULES),
        ("foo\n", NAME_RULES),
        ("foo:bar", NAME_RULES),
        ("foo|bar", NAME_RULES),
        ("foo/bar", NAME_RULES),
        ("f\u00f3o", NAME_RULES),
        ("\uff46oo", NAME_RULES),  # FULLWIDTH LATIN SMALL LETTER F
        ("\u0661", NAME_RULES),  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_name_error_rejects(name: object, message: str) -> None:
    assert name_error(name) == message


@FAST
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=300))
def test_name_rules_agree_between_wire_and_http(name: str) -> None:
    assert (name_error(name) is None) == is_valid_name_bytes(name.encode("ascii"))


# -- tokens -----------------------------------------------------------------------------


def test_generate_token() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert is_token(token)
        assert len(token) == TOKEN_LENGTH == 35
        assert token.startswith("gf_")
        assert set(token[3:]) <= set(BASE62)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gf_",
        "gf_" + "a" * 31,
        "gf_" + "a" * 33,
        "GF_" + "a" * 32,
        "gx_" + "a" * 32,
        "gf-" + "a" * 32,
        "gf_" + "a" * 31 + "-",
        "gf_" + "a" * 31 + "_",
        "gf_" + "a" * 31 + "\u00e9",
        "gf_" + "a" * 31 + "\uff41",  # FULLWIDTH LATIN SMALL LETTER A
        "gf_" + "a" * 32 + "\n",
        " gf_" + "a" * 32,
        "gf_" + "a" * 32 + ".foo",
    ],
)
def test_is_token_rejects(text: str) -> None:
    assert not is_token(text)


def test_hash_token() -> None:
    token = generate_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode("ascii")).hexdigest()
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert hash_token(token) == digest  # deterministic
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_token(generate_token()) != digest


def test_display_prefix() -> None:
    token = generate_token()
    assert display_prefix(token) == token[:DISPLAY_PREFIX_LENGTH]
    assert len(display_prefix(token)) == 8
    assert display_prefix(token).startswith("gf_")


@pytest.mark.parametrize(
    ("text", "scopes"),
    [
        ("read", ("read",)),
        ("write", ("write",)),
        ("write,read", ("read", "write")),
        ("read,write", ("read", "write")),
        (" write , read ,", ("read", "write")),
        ("read,read", ("read",)),
        ("admin,read", ("admin", "read")),  # admin: alert rules
    ],
)
def test_parse_scopes(text: str, scopes: tuple[str, ...]) -> None:
    assert parse_scopes(text) == scopes


@pytest.mark.parametrize("text", ["", ",", " , ", "root", "read,root", "READ", "read write"])
def test_parse_scopes_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scopes(text)
