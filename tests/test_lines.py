"""The line protocol parser (DESIGN §2): a table of valid and invalid lines.

The lines come from the StatsD world: pystatsd's golden strings (``statsd/tests.py``),
DogStatsD's extensions (tags, origin fields, ``|T`` timestamps), and the edges of our own
grammar. Every case asserts the exact ``Sample`` or the exact ``Reason``.
"""

from __future__ import annotations

import re

import pytest

import protocol.lines
from protocol.lines import (
    DEFAULT_MAX_LINE_LENGTH,
    ERROR_SAMPLE_LENGTH,
    FUTURE_TOLERANCE,
    LineError,
    LineParser,
    Parsed,
    Reason,
    Sample,
    parse_packet,
)
from protocol.names import COUNTER, GAUGE, SET, VALUE

NOW = 1_700_000_000
MAX_AGE = 7 * 86400  # LineParser's default: raw retention
TOKEN = "gf_" + "0123456789ABCDEFGHIJKLMNOPQRSTUV"  # 32 base62 characters
assert len(TOKEN) == 35
TOKEN_SHAPE = re.compile(rb"gf_[0-9A-Za-z]{32}")
BODY_31 = "gf_" + "a" * 31  # one short of a token: just the start of a name
BODY_33 = "gf_" + "b" * 33  # token-shaped, then no ".": a typo'd key prefix (bad_key)


def counter(
    name: str,
    value: float,
    rate: float = 1.0,
    timestamp: int | None = None,
    token: str | None = None,
) -> Sample:
    return Sample(name, COUNTER, value, rate, timestamp, token)


def value(
    name: str,
    value: float,
    rate: float = 1.0,
    timestamp: int | None = None,
    token: str | None = None,
) -> Sample:
    return Sample(name, VALUE, value, rate, timestamp, token)


def gauge(
    name: str,
    value: float,
    rate: float = 1.0,
    timestamp: int | None = None,
    token: str | None = None,
    *,
    delta: bool = False,
) -> Sample:
    return Sample(name, GAUGE, value, rate, timestamp, token, None, delta)


def set_(
    name: str,
    member: str,
    rate: float = 1.0,
    timestamp: int | None = None,
    token: str | None = None,
) -> Sample:
    return Sample(name, SET, 1.0, rate, timestamp, token, member)


VALID: list[tuple[bytes, Sample]] = [
    # pystatsd golden strings
    (b"foo:1|c", counter("foo", 1.0)),
    (b"foo:10|c", counter("foo", 10.0)),
    (b"foo:1|c|@0.5", counter("foo", 1.0, rate=0.5)),
    (b"foo:-1|c", counter("foo", -1.0)),  # decrement
    (b"foo:-5|c", counter("foo", -5.0)),
    (b"foo:70|g", gauge("foo", 70.0)),
    (b"foo:70|g|@0.5", gauge("foo", 70.0, rate=0.5)),  # parsed; the aggregator ignores it
    (b"foo:0|g", gauge("foo", 0.0)),
    (b"foo:-5|g", gauge("foo", -5.0, delta=True)),  # pystatsd's gauge(-5, delta=True)
    (b"foo:+10|g", gauge("foo", 10.0, delta=True)),
    (b"foo:1|s", set_("foo", "1")),  # pystatsd's set("foo", 1)
    (b"foo:12.5|ms", value("foo", 12.5)),
    (b"foo:500|ms", value("foo", 500.0)),
    (b"foo:2000|ms|@0.1", value("foo", 2000.0, rate=0.1)),
    # every value type maps to VALUE; c is the only counter
    (b"foo:12.5|v", value("foo", 12.5)),
    (b"foo:12.5|h", value("foo", 12.5)),
    (b"foo:12.5|d", value("foo", 12.5)),
    (b"foo:-5|v", value("foo", -5.0)),  # a negative value is not a gauge delta
    (b"foo:-5|ms", value("foo", -5.0)),
    (b"foo:+5|c", counter("foo", 5.0)),
    # gauges: a plain number sets, an explicit sign is a delta (StatsD)
    (b"foo:12.5|g", gauge("foo", 12.5)),
    (b"foo:1e3|g", gauge("foo", 1000.0)),
    (b"foo:.5|g", gauge("foo", 0.5)),
    (b"foo:+0|g", gauge("foo", 0.0, delta=True)),
    (b"foo:-0|g", gauge("foo", -0.0, delta=True)),
    (b"foo:-0.5|g|@0.5", gauge("foo", -0.5, rate=0.5, delta=True)),
    (b"foo:+1.5e2|g|#a:b", gauge("foo", 150.0, delta=True)),
    (b"foo:-1e-3|g|T1700000000", gauge("foo", -0.001, timestamp=NOW, delta=True)),
    # sets: the member is 1..255 bytes of printable ASCII, kept as text
    (b"users:alice|s", set_("users", "alice")),
    (b"users:1.0|s", set_("users", "1.0")),  # a string: not the member "1"
    (b"users:007|s", set_("users", "007")),
    (b"users:-5|s", set_("users", "-5")),
    (b"users:nan|s", set_("users", "nan")),
    (b"users:alice@example.com|s", set_("users", "alice@example.com")),
    (b"users:a b|s", set_("users", "a b")),  # space is printable
    (b"users: |s", set_("users", " ")),
    (b"users:host:8080|s", set_("users", "host:8080")),  # ":" after the first one
    (b"users:#x|s|#env:prod", set_("users", "#x")),
    (b"users:~!@#$%^&*()|s", set_("users", "~!@#$%^&*()")),
    (b"users:" + b"m" * 255 + b"|s", set_("users", "m" * 255)),
    (b"users:alice|s|@0.5", set_("users", "alice", rate=0.5)),
    (b"users:alice|s|T1700000000", set_("users", "alice", timestamp=NOW)),
    (f"{TOKEN}.users:bob|s".encode(), set_("users", "bob", token=TOKEN)),
    # number syntax
    (b"foo:007|c", counter("foo", 7.0)),
    (b"foo:1.|v", value("foo", 1.0)),
    (b"foo:.5|v", value("foo", 0.5)),
    (b"foo:1e3|v", value("foo", 1000.0)),
    (b"foo:1E-3|v", value("foo", 0.001)),
    (b"foo:-1.5e+2|ms", value("foo", -150.0)),
    (b"foo:1.7976931348623157e308|v", value("foo", 1.7976931348623157e308)),
    (b"foo:5e-324|v", value("foo", 5e-324)),
    # sample rates in (0, 1]
    (b"foo:1|c|@1", counter("foo", 1.0)),
    (b"foo:1|c|@1.0", counter("foo", 1.0)),
    (b"foo:1|c|@.5", counter("foo", 1.0, rate=0.5)),
    (b"foo:1|c|@1e-6", counter("foo", 1.0, rate=1e-6)),  # RATE_FLOOR itself
    (b"foo:1|c|@0.000001", counter("foo", 1.0, rate=1e-6)),
    (b"foo:1|c|@1e-1", counter("foo", 1.0, rate=0.1)),
    (b"foo:1|c|@0.001", counter("foo", 1.0, rate=0.001)),
    # DogStatsD: tags accepted and ignored, origin fields ignored, |T epoch
    (b"page.views:1|c|#env:prod,host:a", counter("page.views", 1.0)),
    (b"users.online:1|c|@0.5|#country:china", counter("users.online", 1.0, rate=0.5)),
    (b"users.online:1|c|#country:china|@0.5", counter("users.online", 1.0, rate=0.5)),
    (b"page.views:1|c|#", counter("page.views", 1.0)),
    (b"latency:12|d|#env:prod|T1699999000", value("latency", 12.0, timestamp=1699999000)),
    (b"foo:1|c|T1700000000", counter("foo", 1.0, timestamp=NOW)),
    (
        b"foo:1|c|@0.5|#a:b|T1699999999",
        counter("foo", 1.0, rate=0.5, timestamp=NOW - 1),
    ),
    (b"foo:1|c|c:83c0a99c0a54c0c187f461c798", counter("foo", 1.0)),
    (b"foo:1|c|c:ci-1234", counter("foo", 1.0)),
    (b"foo:1|c|e:it-false,cn-nginx,pu-1234", counter("foo", 1.0)),
    (b"foo:1|c|#a:b|c:abc|e:x|T1700000000", counter("foo", 1.0, timestamp=NOW)),
    # |T window: [now - max_age, now + 300], both ends inclusive
    (f"foo:1|c|T{NOW - MAX_AGE}".encode(), counter("foo", 1.0, timestamp=NOW - MAX_AGE)),
    (
        f"foo:1|c|T{NOW + FUTURE_TOLERANCE}".encode(),
        counter("foo", 1.0, timestamp=NOW + FUTURE_TOLERANCE),
    ),
    # names: [A-Za-z0-9_.-], case-sensitive, up to 255
    (b"a:1|c", counter("a", 1.0)),
    (b"Foo:1|c", counter("Foo", 1.0)),
    (b"A.b-c_d.9:1|c", counter("A.b-c_d.9", 1.0)),
    (b"1.2.3:1|c", counter("1.2.3", 1.0)),
    (b"-:1|c", counter("-", 1.0)),
    (b"_.-:1|c", counter("_.-", 1.0)),
    (b"x" * 255 + b":1|c", counter("x" * 255, 1.0)),
    # key prefix: gf_ + 32 base62 + "." is the token, the rest the name
    (f"{TOKEN}.foo.bar:1|c".encode(), counter("foo.bar", 1.0, token=TOKEN)),
    (f"{TOKEN}.x:2.5|ms|@0.5".encode(), value("x", 2.5, rate=0.5, token=TOKEN)),
    (f"{TOKEN}.{'x' * 255}:1|c".encode(), counter("x" * 255, 1.0, token=TOKEN)),
    (
        f"{TOKEN}.api.hits:1|c|#env:prod|T{NOW}".encode(),
        counter("api.hits", 1.0, timestamp=NOW, token=TOKEN),
    ),
    # not a token: a plain (valid) name that merely starts with gf_
    (f"{BODY_31}.foo:1|c".encode(), counter(f"{BODY_31}.foo", 1.0)),
    (f"{TOKEN[:-1]}-.foo:1|c".encode(), counter(f"{TOKEN[:-1]}-.foo", 1.0)),  # "-" not base62
    (f"GF_{TOKEN[3:]}.foo:1|c".encode(), counter(f"GF_{TOKEN[3:]}.foo", 1.0)),
    (f"app.{BODY_31}.hits:1|c".encode(), counter(f"app.{BODY_31}.hits", 1.0)),
    # line endings
    (b"foo:1|c\n", counter("foo", 1.0)),
    (b"foo:1|c\r\n", counter("foo", 1.0)),
    (b"\n\nfoo:1|c\n\n", counter("foo", 1.0)),
    (b"\r\nfoo:1|c\r\n\r\n", counter("foo", 1.0)),
    # the longest accepted line is exactly the default cap
    (
        b"foo:" + b"0" * (DEFAULT_MAX_LINE_LENGTH - 7) + b"1|c",
        counter("foo", 1.0),
    ),
]

INVALID: list[tuple[bytes, Reason]] = [
    # structure
    (b"foo", Reason.PARSE_ERROR),
    (b"foo:1", Reason.PARSE_ERROR),
    (b"foo1|c", Reason.PARSE_ERROR),
    (b"foo:1|c|", Reason.PARSE_ERROR),  # an empty |field
    (b"foo:1|c|x", Reason.PARSE_ERROR),  # an unknown |field
    (b"foo:1|c|x:y", Reason.PARSE_ERROR),
    (b"_sc|my.service|0", Reason.PARSE_ERROR),  # DogStatsD service check
    # gauge deltas are numbers like any value
    (b"foo:+|g", Reason.BAD_VALUE),
    (b"foo:-|g", Reason.BAD_VALUE),
    (b"foo:+-5|g", Reason.BAD_VALUE),
    (b"foo:-inf|g", Reason.BAD_VALUE),
    (b"foo:+1e999|g", Reason.BAD_VALUE),
    (b"foo:-5|g|@2", Reason.BAD_RATE),
    # set members: 1..255 bytes of printable ASCII
    (b"users:|s", Reason.BAD_VALUE),
    (b"users:" + b"m" * 256 + b"|s", Reason.BAD_VALUE),
    ("users:j\u00fcrgen|s".encode(), Reason.BAD_VALUE),  # not ASCII
    (b"users:\xff|s", Reason.BAD_VALUE),
    (b"users:a\tb|s", Reason.BAD_VALUE),  # control characters
    (b"users:a\x00|s", Reason.BAD_VALUE),
    (b"users:a\x7f|s", Reason.BAD_VALUE),
    (b"users:a\r|s", Reason.BAD_VALUE),
    (b"users:alice|s|@0", Reason.BAD_RATE),
    (b"users:alice|s|T1", Reason.BAD_TIMESTAMP),
    (b"users:alice|s|x", Reason.PARSE_ERROR),
    (b"bad..set:alice|s", Reason.BAD_NAME),
    # types
    (b"foo:1|S", Reason.UNKNOWN_TYPE),
    (b"foo:1|sg", Reason.UNKNOWN_TYPE),
    (b"foo:1|", Reason.UNKNOWN_TYPE),
    (b"foo:1|C", Reason.UNKNOWN_TYPE),
    (b"foo:1|MS", Reason.UNKNOWN_TYPE),
    (b"foo:1|kv", Reason.UNKNOWN_TYPE),
    (b"foo:1|ms2", Reason.UNKNOWN_TYPE),
    (b"foo:1|c |@0.5", Reason.UNKNOWN_TYPE),
    (b"foo:1|@0.5|c", Reason.UNKNOWN_TYPE),
    (b"_e{5,4}:title|text", Reason.UNKNOWN_TYPE),  # DogStatsD event
    # sample rates outside (0, 1] or not numbers
    (b"foo:1|c|@0", Reason.BAD_RATE),
    (b"foo:1|c|@0.0", Reason.BAD_RATE),
    (b"foo:1|c|@-0.0", Reason.BAD_RATE),
    (b"foo:1|c|@1e-400", Reason.BAD_RATE),  # underflows to 0
    (b"foo:1|c|@1.5", Reason.BAD_RATE),
    (b"foo:1|c|@2", Reason.BAD_RATE),
    (b"foo:1|c|@1.0000001", Reason.BAD_RATE),
    (b"foo:1|c|@-0.5", Reason.BAD_RATE),
    (b"foo:1|c|@-1", Reason.BAD_RATE),
    (b"foo:1|c|@abc", Reason.BAD_RATE),
    (b"foo:1|c|@nan", Reason.BAD_RATE),
    (b"foo:1|c|@inf", Reason.BAD_RATE),
    (b"foo:1|c|@", Reason.BAD_RATE),
    (b"foo:1|c|@ 0.5", Reason.BAD_RATE),
    (b"foo:1|c|@0,5", Reason.BAD_RATE),
    (b"foo:1|c|#env:prod|@2", Reason.BAD_RATE),
    (b"x:0|c|@1e-320", Reason.BAD_RATE),  # subnormal: 1/rate would be inf (issue 9)
    (b"foo:1|c|@9.99e-7", Reason.BAD_RATE),  # below RATE_FLOOR = 1e-6
    (b"foo:1|c|@0.0000001", Reason.BAD_RATE),
    # timestamps outside [now - max_age, now + 300] or not epoch seconds
    (f"foo:1|c|T{NOW - MAX_AGE - 1}".encode(), Reason.BAD_TIMESTAMP),
    (f"foo:1|c|T{NOW + FUTURE_TOLERANCE + 1}".encode(), Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T0", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T-1", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T+1700000000", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T1700000000.5", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T1.7e9", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|Tabc", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T 1700000000", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T99999999999999999999", Reason.BAD_TIMESTAMP),
    (b"foo:1|c|T1700000000000", Reason.BAD_TIMESTAMP),  # milliseconds
    # names
    (b":1|c", Reason.BAD_NAME),
    (b".foo:1|c", Reason.BAD_NAME),
    (b"foo.:1|c", Reason.BAD_NAME),
    (b"foo..bar:1|c", Reason.BAD_NAME),
    (b".:1|c", Reason.BAD_NAME),
    (b"x" * 256 + b":1|c", Reason.BAD_NAME),
    ("f\u00f3o:1|c".encode(), Reason.BAD_NAME),  # non-ASCII
    ("\u043c\u0435\u0442\u0440\u0438\u043a\u0430:1|c".encode(), Reason.BAD_NAME),
    (b"\xff\xfe:1|c", Reason.BAD_NAME),  # not even UTF-8
    (b"foo bar:1|c", Reason.BAD_NAME),
    (b" foo:1|c", Reason.BAD_NAME),
    (b"foo :1|c", Reason.BAD_NAME),
    (b"foo\tbar:1|c", Reason.BAD_NAME),
    (b"foo/bar:1|c", Reason.BAD_NAME),
    (b"foo|bar:1|c", Reason.BAD_NAME),
    (b"foo,env=prod:1|c", Reason.BAD_NAME),
    (b"foo\x00:1|c", Reason.BAD_NAME),
    # names behind a key prefix follow the same rules
    (f"{TOKEN}.:1|c".encode(), Reason.BAD_NAME),  # token "." and no name: trailing "."
    (f"{TOKEN}..foo:1|c".encode(), Reason.BAD_NAME),
    (f"{TOKEN}.foo.:1|c".encode(), Reason.BAD_NAME),
    (f"{TOKEN}.{'x' * 256}:1|c".encode(), Reason.BAD_NAME),
    (f"{TOKEN}.foo bar:1|c".encode(), Reason.BAD_NAME),
    (f"{BODY_31}.:1|c".encode(), Reason.BAD_NAME),
    (f"{BODY_31}..foo:1|c".encode(), Reason.BAD_NAME),
    (f"{BODY_31}.{'x' * 221}:1|c".encode(), Reason.BAD_NAME),  # 256 as one name
    # a head that starts like a token (gf_ + 32 base62) is a key prefix: without the "."
    # after it the key would be stored in a metric name (issue 9)
    (f"{TOKEN}web.hits:1|c".encode(), Reason.BAD_KEY),
    (f"{BODY_33}.foo:1|c".encode(), Reason.BAD_KEY),
    (f"{TOKEN}:1|c".encode(), Reason.BAD_KEY),
    (f"{TOKEN}foo:1|c".encode(), Reason.BAD_KEY),
    (f"{TOKEN}-foo:1|c|@0.5".encode(), Reason.BAD_KEY),
    (f"{TOKEN}_:1|c".encode(), Reason.BAD_KEY),
    # a token anywhere else in the name: a key never becomes part of a name
    (f"app.{TOKEN}.hits:1|c".encode(), Reason.BAD_KEY),
    (f"x{TOKEN}.y:1|c".encode(), Reason.BAD_KEY),
    (f"{TOKEN}.{TOKEN}.z:1|c".encode(), Reason.BAD_KEY),
    (f"{TOKEN}.app.{BODY_33}:1|c".encode(), Reason.BAD_KEY),
    # values: finite decimal or float literals only
    (b"foo:nan|v", Reason.BAD_VALUE),
    (b"foo:NaN|v", Reason.BAD_VALUE),
    (b"foo:inf|v", Reason.BAD_VALUE),
    (b"foo:-inf|v", Reason.BAD_VALUE),
    (b"foo:Infinity|v", Reason.BAD_VALUE),
    (b"foo:1e999|v", Reason.BAD_VALUE),
    (b"foo:-1e999|ms", Reason.BAD_VALUE),
    (b"foo:1e999|c", Reason.BAD_VALUE),
    (b"foo:" + b"9" * 400 + b"|c", Reason.BAD_VALUE),  # all digits, but overflows
    (b"foo:1_000|c", Reason.BAD_VALUE),
    (b"foo: 1|c", Reason.BAD_VALUE),
    (b"foo:1 |c", Reason.BAD_VALUE),
    (b"foo:|c", Reason.BAD_VALUE),
    (b"foo:|g", Reason.BAD_VALUE),
    (b"foo:0x10|c", Reason.BAD_VALUE),
    (b"foo:1,5|v", Reason.BAD_VALUE),
    (b"foo:1.2.3|v", Reason.BAD_VALUE),
    (b"foo:e5|v", Reason.BAD_VALUE),
    (b"foo:1e|v", Reason.BAD_VALUE),
    (b"foo:.|v", Reason.BAD_VALUE),
    (b"foo:+|c", Reason.BAD_VALUE),
    (b"foo:-|c", Reason.BAD_VALUE),
    (b"foo:--1|c", Reason.BAD_VALUE),
    (b"foo:+-1|c", Reason.BAD_VALUE),
    (b"foo:bar:1|c", Reason.BAD_VALUE),
    ("foo:\u0661|c".encode(), Reason.BAD_VALUE),  # ARABIC-INDIC DIGIT ONE
    ("foo:\uff11|c".encode(), Reason.BAD_VALUE),  # FULLWIDTH DIGIT ONE
    (b"foo:1\x00|c", Reason.BAD_VALUE),
    # too long: one byte over the default cap
    (b"foo:" + b"0" * (DEFAULT_MAX_LINE_LENGTH - 6) + b"1|c", Reason.TOO_LONG),
    (b"x" * (DEFAULT_MAX_LINE_LENGTH + 1), Reason.TOO_LONG),
    (b"foo:1|c|#" + b"t" * DEFAULT_MAX_LINE_LENGTH, Reason.TOO_LONG),
]


def _id(case: bytes) -> str:
    text = case.decode("ascii", "backslashreplace")
    return text if len(text) <= 60 else f"{text[:40]}...({len(case)} bytes)"


@pytest.mark.parametrize(("line", "expected"), VALID, ids=[_id(c[0]) for c in VALID])
def test_valid_line(line: bytes, expected: Sample) -> None:
    parsed = parse_packet(line, NOW)
    assert parsed.errors == []
    assert parsed.samples == [expected]
    got = parsed.samples[0]
    # NamedTuple equality is value equality; the types must be exact too.
    assert type(got.value) is float
    assert type(got.rate) is float
    assert got.timestamp is None or type(got.timestamp) is int


@pytest.mark.parametrize(("line", "reason"), INVALID, ids=[_id(c[0]) for c in INVALID])
def test_invalid_line(line: bytes, reason: Reason) -> None:
    parsed = parse_packet(line, NOW)
    assert parsed.samples == []
    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert error.reason is reason
    token = TOKEN_SHAPE.search(line)
    if token:  # the log sample shows the display prefix only
        assert TOKEN_SHAPE.search(error.line) is None
        assert token.group()[:8] + b"..." in error.line
    else:
        assert error.line == line[:ERROR_SAMPLE_LENGTH]
    assert isinstance(error.detail, str)
    assert error.detail


@pytest.mark.parametrize(("line", "reason"), INVALID, ids=[_id(c[0]) for c in INVALID])
def test_bad_line_never_affects_its_neighbours(line: bytes, reason: Reason) -> None:
    before = b"a.b:1|c|@0.5"
    after = f"{TOKEN}.c.d:2.5|ms|T{NOW}".encode()
    expected = [
        counter("a.b", 1.0, rate=0.5),
        value("c.d", 2.5, timestamp=NOW, token=TOKEN),
    ]
    parser = LineParser()
    for datagram, bad_lines in (
        (b"\n".join([before, line, after]), 1),
        (b"\r\n".join([before, line, after]) + b"\r\n", 1),
        (b"\n".join([line, before, line, after, line]), 3),
    ):
        parsed = parser.parse(datagram, NOW)
        assert parsed.samples == expected
        assert [e.reason for e in parsed.errors] == [reason] * bad_lines
        sample = parse_packet(line, NOW).errors[0].line  # redacted if it holds a token
        assert all(e.line == sample for e in parsed.errors)


def test_every_valid_line_in_one_datagram() -> None:
    datagram = b"\n".join(line.strip(b"\r\n") for line, _ in VALID)
    parsed = parse_packet(datagram, NOW)
    assert parsed.errors == []
    assert parsed.samples == [expected for _, expected in VALID]


def test_every_line_of_the_table_in_one_datagram() -> None:
    lines = [line.strip(b"\r\n") for line, _ in VALID]
    bad = [line for line, _ in INVALID]
    datagram = b"\n".join(x for pair in zip(bad, lines, strict=False) for x in pair)
    datagram += b"\n" + b"\n".join(bad[len(lines) :])
    parsed = parse_packet(datagram, NOW)
    assert parsed.samples == [expected for _, expected in VALID]
    assert [e.reason for e in parsed.errors] == [reason for _, reason in INVALID]


@pytest.mark.parametrize(
    ("datagram", "expected", "reasons"),
    [
        # pystatsd: a gauge set below zero is sent as "0" then the delta "-5"
        (b"foo:0|g\nfoo:-5|g", [gauge("foo", 0.0), gauge("foo", -5.0, delta=True)], []),
        (b"foo:70|g\nfoo:+10|g", [gauge("foo", 70.0), gauge("foo", 10.0, delta=True)], []),
        (
            b"foo:1|c\nbar:12.5|ms\nbaz:70|g|@0.5\nqux:u1|s",
            [counter("foo", 1.0), value("bar", 12.5), gauge("baz", 70.0, rate=0.5),
             set_("qux", "u1")],
            [],
        ),
        (
            b"foo:1|c\nbar:2|c\n",  # trailing newline
            [counter("foo", 1.0), counter("bar", 2.0)],
            [],
        ),
        (
            b"foo:1|c\r\nbar:2|c\r\n",  # CRLF throughout
            [counter("foo", 1.0), counter("bar", 2.0)],
            [],
        ),
        (
            b"foo:1|c\r\nbar:2|c\nbaz:3|c\r\n",  # mixed
            [counter("foo", 1.0), counter("bar", 2.0), counter("baz", 3.0)],
            [],
        ),
        (b"\n\nfoo:1|c\n\n\r\n\nbar:1|q\n", [counter("foo", 1.0)], [Reason.UNKNOWN_TYPE]),
        (b"foo:1|c\rbar:2|c", [], [Reason.UNKNOWN_TYPE]),  # a bare \r is not a separator
        (b"foo:1|c\n\r\r\n", [counter("foo", 1.0)], [Reason.PARSE_ERROR]),  # one \r only
        (b"", [], []),
        (b"\n", [], []),
        (b"\r\n", [], []),
        (b"\n\r\n\n\r\n", [], []),
        (b"foo:1|c\nfoo:1|c", [counter("foo", 1.0), counter("foo", 1.0)], []),
        (
            b"foo:1|c\nfoo:1|ms",  # kind conflicts are the aggregator's business
            [counter("foo", 1.0), value("foo", 1.0)],
            [],
        ),
        (
            b"foo:1|c\nfoo:1|x\nfoo\nfoo:nan|v",
            [counter("foo", 1.0)],
            [
                Reason.UNKNOWN_TYPE,
                Reason.PARSE_ERROR,
                Reason.BAD_VALUE,
            ],
        ),
    ],
)
def test_datagram(datagram: bytes, expected: list[Sample], reasons: list[Reason]) -> None:
    parsed = parse_packet(datagram, NOW)
    assert parsed.samples == expected
    assert [e.reason for e in parsed.errors] == reasons


def test_error_keeps_only_the_start_of_the_line() -> None:
    line = b"bad name " * 50 + b":1|c"
    (error,) = parse_packet(line, NOW).errors
    assert error.reason is Reason.BAD_NAME
    assert error.line == line[:ERROR_SAMPLE_LENGTH]
    assert len(error.line) == ERROR_SAMPLE_LENGTH


def test_error_line_excludes_the_line_ending() -> None:
    parsed = parse_packet(b"foo:1|q\r\nbar:1|q\n", NOW)
    assert parsed.errors == [
        LineError(Reason.UNKNOWN_TYPE, b"foo:1|q", parsed.errors[0].detail),
        LineError(Reason.UNKNOWN_TYPE, b"bar:1|q", parsed.errors[1].detail),
    ]


def test_tags_ignored_counts_tagged_lines() -> None:
    datagram = b"\n".join(
        [
            b"a:1|c|#env:prod,host:a",
            b"b:1|c",
            b"c:2|ms|@0.5|#env:prod",
            b"d:3|g|#",
            f"{TOKEN}.e:1|c|#x|T{NOW}".encode(),
            b"f:1|c|c:container",  # an origin field is not a tag
        ]
    )
    parsed = parse_packet(datagram, NOW)
    assert len(parsed.samples) == 6
    assert parsed.errors == []
    assert parsed.tags_ignored == 4


def test_tags_ignored_is_zero_without_tags() -> None:
    assert parse_packet(b"a:1|c\nb:2|v\n", NOW) == Parsed(
        [counter("a", 1.0), value("b", 2.0)], [], 0
    )


@pytest.mark.parametrize(
    "line",
    [
        b"foo:1|c|#env:prod|@2",
        b"foo:1|c|#env:prod|T0",
        b"foo:1|c|#env:prod|x",
    ],
)
def test_tags_ignored_does_not_count_dropped_lines(line: bytes) -> None:
    parsed = parse_packet(line, NOW)
    assert len(parsed.errors) == 1
    assert parsed.tags_ignored == 0


def test_tags_ignored_counts_each_line_once() -> None:
    parsed = parse_packet(b"foo:1|c|#a:b|#c:d", NOW)
    assert parsed.samples == [counter("foo", 1.0)]
    assert parsed.tags_ignored == 1


def test_timestamp_window_follows_max_age() -> None:
    parser = LineParser(max_age=60)
    parsed = parser.parse(
        f"a:1|c|T{NOW - 60}\nb:1|c|T{NOW - 61}\nc:1|c|T{NOW + 300}\nd:1|c|T{NOW + 301}".encode(),
        NOW,
    )
    assert parsed.samples == [
        counter("a", 1.0, timestamp=NOW - 60),
        counter("c", 1.0, timestamp=NOW + 300),
    ]
    assert [e.reason for e in parsed.errors] == [Reason.BAD_TIMESTAMP] * 2
    assert [e.line[:1] for e in parsed.errors] == [b"b", b"d"]


def test_timestamp_window_moves_with_now() -> None:
    parser = LineParser()
    line = f"a:1|c|T{NOW}".encode()
    assert parser.parse(line, NOW).samples == [counter("a", 1.0, timestamp=NOW)]
    assert parser.parse(line, NOW - FUTURE_TOLERANCE).samples
    assert parser.parse(line, NOW - FUTURE_TOLERANCE - 1).errors[0].reason is (Reason.BAD_TIMESTAMP)
    assert parser.parse(line, NOW + MAX_AGE).samples
    assert parser.parse(line, NOW + MAX_AGE + 1).errors[0].reason is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize("cap", [5, 10, 100])
def test_max_line_length_is_configurable(cap: int) -> None:
    parser = LineParser(max_line_length=cap)
    exact = b"a:" + b"0" * (cap - 5) + b"1|c"
    assert len(exact) == cap
    over = b"a:" + b"0" * (cap - 4) + b"1|c"
    parsed = parser.parse(b"\n".join([exact, over, exact + b"\r"]), NOW)
    assert parsed.samples == [counter("a", 1.0), counter("a", 1.0)]
    assert parsed.errors == [LineError(Reason.TOO_LONG, over, parsed.errors[0].detail)]


def test_parser_reuse_and_name_cache() -> None:
    parser = LineParser()
    datagram = f"a:1|c\n{TOKEN}.a:2|c\na..b:1|c\na:3|ms".encode()
    first = parser.parse(datagram, NOW)
    second = parser.parse(datagram, NOW)
    assert first == second
    assert first.samples == [counter("a", 1.0), counter("a", 2.0, token=TOKEN), value("a", 3.0)]
    assert [e.reason for e in first.errors] == [Reason.BAD_NAME]


def test_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol.lines, "_NAME_CACHE_LIMIT", 3)
    parser = LineParser()
    for round_ in range(3):
        names = [f"m{i}" for i in range(10)]
        datagram = "\n".join(f"{name}:{round_}|c" for name in names).encode()
        parsed = parser.parse(datagram, NOW)
        assert parsed.samples == [counter(name, float(round_)) for name in names]
        assert len(parser._heads) <= 3


def test_parse_packet_uses_default_limits() -> None:
    assert parse_packet(b"a:1|c", NOW) == LineParser().parse(b"a:1|c", NOW)


def test_reason_values_are_stable_labels() -> None:
    # The values are self-metric label values; dashboards and alerts depend on them.
    assert {r.name: r.value for r in Reason} == {
        "PARSE_ERROR": "parse_error",
        "BAD_NAME": "bad_name",
        "BAD_VALUE": "bad_value",
        "UNKNOWN_TYPE": "unknown_type",
        "BAD_RATE": "bad_rate",
        "BAD_TIMESTAMP": "bad_timestamp",
        "TOO_LONG": "too_long",
        "BAD_KEY": "bad_key",
        "NO_KEY": "no_key",
        "KIND_CONFLICT": "kind_conflict",
        "TOO_MANY_METRICS": "too_many_metrics",
        "OVERLOAD": "overload",
        "OVERFLOW": "overflow",
    }
