"""Properties of the line parser: it never raises, accounts for every line, is line-local,
and gives back exactly what a client formatted."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.buckets import RATE_FLOOR
from protocol.lines import (
    FUTURE_TOLERANCE,
    KIND_BY_TYPE,
    MAX_MEMBER_LENGTH,
    LineParser,
    Parsed,
    Sample,
)
from protocol.names import GAUGE, KINDS, SET, is_valid_name_bytes
from protocol.tokens import BASE62, TOKEN_PREFIX

NOW = 1_700_000_000
MAX_AGE = 7 * 86400
FAST = settings(max_examples=300, deadline=None)

NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

names = (
    st.lists(st.text(NAME_CHARS, min_size=1, max_size=30), min_size=1, max_size=10)
    .map(".".join)
    .filter(lambda name: len(name) <= 255)
)
tokens = st.text(BASE62, min_size=32, max_size=32).map(lambda body: TOKEN_PREFIX + body)
finite = st.floats(allow_nan=False, allow_infinity=False)
rates = st.floats(min_value=RATE_FLOOR, max_value=1.0)
timestamps = st.integers(min_value=NOW - MAX_AGE, max_value=NOW + FUTURE_TOLERANCE)
type_codes = st.sampled_from(sorted(KIND_BY_TYPE))
# set members: printable ASCII but "|" (which would end the field)
MEMBER_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "|")
members = st.text(MEMBER_CHARS, min_size=1, max_size=40) | st.text(
    MEMBER_CHARS, min_size=MAX_MEMBER_LENGTH, max_size=MAX_MEMBER_LENGTH)
tag_fields = st.lists(
    st.text(NAME_CHARS + ":.", min_size=1, max_size=12), min_size=0, max_size=3
).map(lambda tags: "#" + ",".join(tags))


@st.composite
def formatted(draw: st.DrawFn) -> tuple[bytes, Sample, bool]:
    """A line as a StatsD/DogStatsD client would write it, and the sample it stands for."""
    name = draw(names)
    token = draw(st.none() | tokens)
    type_code = draw(type_codes)
    number = draw(finite)
    # repr() writes a "-" on negative numbers: on |g that is a delta (pystatsd's
    # gauge(-5, delta=True) writes "-5|g" too)
    delta = type_code == b"g" and math.copysign(1.0, number) < 0
    member = draw(members) if type_code == b"s" else None
    rate = draw(st.none() | rates)
    timestamp = draw(st.none() | timestamps)
    tags = draw(st.none() | tag_fields)
    fields = [f"{number!r}" if member is None else member, type_code.decode()]
    if rate is not None:
        fields.append(f"@{rate!r}")
    if tags is not None:
        fields.append(tags)
    if timestamp is not None:
        fields.append(f"T{timestamp}")
    extra = draw(st.permutations(fields[2:]))  # the optional fields in any order
    head = name if token is None else f"{token}.{name}"
    line = f"{head}:{'|'.join(fields[:2] + extra)}".encode()
    sample = Sample(
        name,
        KIND_BY_TYPE[type_code],
        number if member is None else 1.0,
        1.0 if rate is None else rate,
        timestamp,
        token,
        member,
        delta,
    )
    return line, sample, tags is not None


def assert_same(got: Sample, expected: Sample) -> None:
    assert got == expected
    # "Exactly": == would let -0.0 pass for 0.0, so compare the representations too.
    assert repr(got.value) == repr(expected.value)
    assert repr(got.rate) == repr(expected.rate)


def nonempty_lines(data: bytes) -> int:
    """Lines the parser must account for: non-empty once one trailing \\r is removed."""
    return sum(1 for line in data.split(b"\n") if line.removesuffix(b"\r"))


def check_accounting(parser: LineParser, data: bytes) -> Parsed:
    parsed = parser.parse(data, NOW)
    assert len(parsed.samples) + len(parsed.errors) == nonempty_lines(data)
    assert parsed.tags_ignored >= 0
    for sample in parsed.samples:
        assert is_valid_name_bytes(sample.name.encode("ascii"))
        assert sample.kind in KINDS
        assert math.isfinite(sample.value)
        assert (sample.member is not None) == (sample.kind == SET)
        assert not sample.delta or sample.kind == GAUGE
        assert RATE_FLOOR <= sample.rate <= 1.0
        assert sample.timestamp is None or (
            NOW - parser.max_age <= sample.timestamp <= NOW + FUTURE_TOLERANCE
        )
    for error in parsed.errors:
        assert len(error.line) <= 120
    return parsed


@FAST
@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=b"\r")
@example(data=b":|")
@example(data=b"gf_" + b"a" * 32 + b".:1|c")
@example(data=b"a:1|c|T" + b"9" * 12)
@example(data=b"a:1|c|@" + b"9" * 400)
@example(data=b"a:" + b"9" * 400 + b"|v")
def test_random_bytes_never_raise(data: bytes) -> None:
    check_accounting(LineParser(), data)


# Bytes that matter to the grammar, so random lines get past the first checks.
grammar_bytes = st.binary(max_size=4) | st.sampled_from(
    [b":", b"|", b"|@", b"|#", b"|T", b"|c", b"|g", b"|ms", b"\n", b"\r\n", b".", b"-", b"+",
     b"e", b"1", b"0.5", b"gf_", b"nan", b"inf", b"\xff", b"c:", b"|s", b"~"]
)  # fmt: skip
grammar_soup = st.lists(grammar_bytes, max_size=40).map(b"".join)


@FAST
@given(data=grammar_soup)
def test_grammar_soup_never_raises(data: bytes) -> None:
    check_accounting(LineParser(max_line_length=40, max_age=3600), data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid datagram with a few bytes inserted, deleted or replaced."""
    lines = draw(st.lists(formatted(), min_size=1, max_size=5))
    data = bytearray(b"\n".join(line for line, _, _ in lines))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        byte = draw(
            st.sampled_from(list(b":|@#T.\n\r-+e gf_")) | st.integers(min_value=0, max_value=255)
        )
        if op == "insert":
            data.insert(at, byte)
        elif data and op == "delete":
            del data[at]
        elif data:
            data[at] = byte
    return bytes(data)


@FAST
@given(data=mutated())
def test_mutated_datagrams_never_raise(data: bytes) -> None:
    check_accounting(LineParser(), data)


@FAST
@given(
    lines=st.lists(
        formatted().map(lambda case: case[0])
        | st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
        max_size=10,
    ),
    crlf=st.booleans(),
)
def test_lines_are_independent(lines: list[bytes], crlf: bool) -> None:
    """A datagram parses as the concatenation of its lines parsed one by one."""
    parser = LineParser()
    data = (b"\r\n" if crlf else b"\n").join(lines)
    whole = check_accounting(parser, data)
    one_by_one = [parser.parse(line, NOW) for line in data.split(b"\n")]
    assert whole.samples == [s for p in one_by_one for s in p.samples]
    assert whole.errors == [e for p in one_by_one for e in p.errors]


@FAST
@given(case=formatted())
@example(case=(b"a:-0.0|v", Sample("a", "value", -0.0, 1.0, None, None), False))
@example(case=(b"a:5e-324|c|@1e-06", Sample("a", "counter", 5e-324, 1e-06, None, None), False))
def test_round_trip_one_line(case: tuple[bytes, Sample, bool]) -> None:
    line, expected, tagged = case
    parsed = LineParser().parse(line, NOW)
    assert parsed.errors == []
    assert len(parsed.samples) == 1
    assert_same(parsed.samples[0], expected)
    assert parsed.tags_ignored == int(tagged)


@FAST
@given(cases=st.lists(formatted(), max_size=20), crlf=st.booleans(), trailing=st.booleans())
def test_round_trip_datagram(
    cases: list[tuple[bytes, Sample, bool]], crlf: bool, trailing: bool
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    data = newline.join(line for line, _, _ in cases) + (newline if trailing else b"")
    parser = LineParser()
    for _ in range(2):  # the second pass goes through the name cache
        parsed = parser.parse(data, NOW)
        assert parsed.errors == []
        assert len(parsed.samples) == len(cases)
        for got, (_, expected, _) in zip(parsed.samples, cases, strict=True):
            assert_same(got, expected)
        assert parsed.tags_ignored == sum(tagged for _, _, tagged in cases)
