"""LineBuffer: newline framing of the TCP stream (STYLE practice 2, after h11's test_io).

The contract: feeding a stream in any chunking yields the same lines; the partial tail is
kept until its newline arrives (or handed back by ``finish()``); a line longer than the
cap is either dropped and counted once by the buffer (when it would otherwise have to be
buffered) or passed through for the parser to count as TOO_LONG (when it ends inside the
chunk), so each overlong line is counted exactly once and no other line is lost.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.framing import Framed, LineBuffer
from protocol.lines import LineParser, Reason

NOW = 1_700_000_000
FAST = settings(max_examples=300, deadline=None)


def feed_all(buffer: LineBuffer, chunks: list[bytes]) -> tuple[bytes, int]:
    """Feed every chunk; return all complete output followed by finish(), and the
    total overlong count."""
    out = []
    overlong = 0
    for chunk in chunks:
        framed = buffer.feed(chunk)
        assert isinstance(framed, Framed)
        out.append(framed.complete)
        overlong += framed.overlong
        # What is complete always ends a line; what is pending never exceeds the cap.
        assert framed.complete == b"" or framed.complete.endswith(b"\n")
        # (one byte more only for the "\r" of a CRLF line, which the parser strips)
        assert buffer.pending <= buffer.max_line_length or (
            buffer.pending == buffer.max_line_length + 1
        )
    out.append(buffer.finish())
    assert buffer.pending == 0
    return b"".join(out), overlong


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def split_stream(data: bytes) -> tuple[list[bytes], bytes]:
    """(newline-terminated lines without their "\\n", the unterminated rest)."""
    *lines, rest = data.split(b"\n")
    return lines, rest


def check_framing(data: bytes, chunks: list[bytes], cap: int) -> None:
    """The lines within the cap come out unchanged and in order; every overlong line is
    dropped-and-counted by the buffer or passed on whole for the parser, exactly once."""
    assert b"".join(chunks) == data
    out, overlong = feed_all(LineBuffer(cap), chunks)
    in_lines, in_rest = split_stream(data)
    out_lines, out_rest = split_stream(out)
    assert [x for x in out_lines if len(x) <= cap] == [x for x in in_lines if len(x) <= cap]
    # Overlong lines that come out are passed whole, not cut into pieces.
    assert all(x in in_lines for x in out_lines if len(x) > cap)
    passed_on = sum(1 for x in out_lines if len(x) > cap)
    expected_overlong = sum(1 for x in in_lines if len(x) > cap) + (len(in_rest) > cap)
    assert overlong + passed_on == expected_overlong
    assert out_rest == (in_rest if len(in_rest) <= cap else b"")


STREAM = b"foo:1|c\nbar:12.5|ms|@0.5\n\nbaz:3|g|#env:prod\r\nqux:4|c\n"


def test_fed_whole() -> None:
    buffer = LineBuffer(100)
    assert buffer.feed(STREAM) == Framed(STREAM, 0)
    assert buffer.pending == 0
    assert buffer.finish() == b""


def test_fed_one_byte_at_a_time() -> None:
    buffer = LineBuffer(100)
    out = []
    for chunk in bytewise(STREAM):
        framed = buffer.feed(chunk)
        assert framed.overlong == 0
        # A line comes out exactly when its newline arrives, and only then.
        if chunk != b"\n":
            assert framed.complete == b""
        else:
            assert framed.complete.endswith(b"\n")
            assert framed.complete.count(b"\n") == 1
        out.append(framed.complete)
    assert b"".join(out) == STREAM
    assert buffer.finish() == b""


def test_fed_one_byte_at_a_time_parses_the_same() -> None:
    parser = LineParser()
    out, overlong = feed_all(LineBuffer(100), bytewise(STREAM))
    assert overlong == 0
    assert parser.parse(out, NOW) == parser.parse(STREAM, NOW)


def test_trailing_data_is_kept_until_its_newline() -> None:
    buffer = LineBuffer(100)
    assert buffer.feed(b"foo:1|c\nbar:2") == Framed(b"foo:1|c\n", 0)
    assert buffer.pending == len(b"bar:2")
    assert buffer.feed(b"|c") == Framed(b"", 0)
    assert buffer.pending == len(b"bar:2|c")
    assert buffer.feed(b"\nbaz") == Framed(b"bar:2|c\n", 0)
    assert buffer.feed(b":3|c\n") == Framed(b"baz:3|c\n", 0)
    assert buffer.pending == 0
    assert buffer.finish() == b""


def test_trailing_data_without_newline_is_returned_by_finish() -> None:
    buffer = LineBuffer(100)
    assert buffer.feed(b"foo:1|c\nbar:2|c") == Framed(b"foo:1|c\n", 0)
    assert buffer.finish() == b"bar:2|c"
    assert buffer.pending == 0
    assert buffer.finish() == b""  # handed back once


def test_finish_of_an_empty_stream() -> None:
    buffer = LineBuffer(100)
    assert buffer.finish() == b""
    assert buffer.feed(b"") == Framed(b"", 0)
    assert buffer.finish() == b""


def test_empty_chunks_change_nothing() -> None:
    buffer = LineBuffer(100)
    assert buffer.feed(b"foo:1") == Framed(b"", 0)
    assert buffer.feed(b"") == Framed(b"", 0)
    assert buffer.pending == 5
    assert buffer.feed(b"|c\n") == Framed(b"foo:1|c\n", 0)


def test_a_line_of_exactly_the_cap_is_kept() -> None:
    buffer = LineBuffer(8)
    assert buffer.feed(b"abc:1|c") == Framed(b"", 0)
    assert buffer.feed(b"1") == Framed(b"", 0)  # 8 bytes pending: at the cap, not over
    assert buffer.pending == 8
    assert buffer.feed(b"\n") == Framed(b"abc:1|c1\n", 0)


def test_overlong_line_is_discarded_and_counted_once() -> None:
    buffer = LineBuffer(8)
    assert buffer.feed(b"ok:1|c\nxxxxx") == Framed(b"ok:1|c\n", 0)
    assert buffer.feed(b"xxxx") == Framed(b"", 1)  # 9 pending bytes: over the cap
    assert buffer.pending == 0
    assert buffer.feed(b"x" * 100) == Framed(b"", 0)  # still the same line: not recounted
    assert buffer.feed(b"x" * 100) == Framed(b"", 0)
    assert buffer.pending == 0
    assert buffer.feed(b"xx\na:1|c\nb:2|c\nc:") == Framed(b"a:1|c\nb:2|c\n", 0)
    assert buffer.feed(b"3|c\n") == Framed(b"c:3|c\n", 0)
    assert buffer.finish() == b""


def test_overlong_line_ending_in_the_chunk_after_the_one_that_overflowed() -> None:
    buffer = LineBuffer(8)
    assert buffer.feed(b"x" * 20) == Framed(b"", 1)
    assert buffer.feed(b"\nok:1|c\n") == Framed(b"ok:1|c\n", 0)


def test_overlong_lines_back_to_back_are_counted_each() -> None:
    buffer = LineBuffer(4)
    assert buffer.feed(b"ok\n" + b"x" * 10) == Framed(b"ok\n", 1)
    assert buffer.feed(b"x\n" + b"y" * 10) == Framed(b"", 1)
    assert buffer.feed(b"\n" + b"z" * 5) == Framed(b"", 1)
    assert buffer.feed(b"\nok\n") == Framed(b"ok\n", 0)


def test_overlong_unterminated_last_line_is_not_returned_by_finish() -> None:
    buffer = LineBuffer(8)
    assert buffer.feed(b"ok:1|c\n" + b"x" * 20) == Framed(b"ok:1|c\n", 1)
    assert buffer.finish() == b""


def test_overlong_line_inside_one_chunk_is_left_to_the_parser() -> None:
    # It ends in the chunk, so buffering it costs nothing: the parser counts it.
    cap = 8
    data = b"a:1|c\n" + b"x" * 20 + b"\nb:2|c\n"
    buffer = LineBuffer(cap)
    framed = buffer.feed(data)
    assert framed == Framed(data, 0)
    parsed = LineParser(max_line_length=cap).parse(framed.complete, NOW)
    assert [s.name for s in parsed.samples] == ["a", "b"]
    assert [e.reason for e in parsed.errors] == [Reason.TOO_LONG]


@pytest.mark.parametrize("split", ["whole", "bytewise", "halves"])
def test_each_overlong_line_is_counted_once_between_buffer_and_parser(split: str) -> None:
    cap = 10
    data = b"a:1|c\n" + b"x" * 30 + b"\nb:2|c\n" + b"y" * 11 + b"\nc:3|c\n" + b"z" * 12
    chunks = {
        "whole": [data],
        "bytewise": bytewise(data),
        "halves": [data[: len(data) // 2], data[len(data) // 2 :]],
    }[split]
    out, overlong = feed_all(LineBuffer(cap), chunks)
    parsed = LineParser(max_line_length=cap).parse(out, NOW)
    assert [s.name for s in parsed.samples] == ["a", "b", "c"]
    too_long = sum(1 for e in parsed.errors if e.reason is Reason.TOO_LONG)
    assert overlong + too_long == 3
    assert len(parsed.errors) == too_long


# -- properties -------------------------------------------------------------------------

CAP = 16
line_bytes = st.binary(max_size=2 * CAP + 4).map(lambda b: b.replace(b"\n", b""))
streams = st.builds(
    lambda lines, rest: b"".join(x + b"\n" for x in lines) + rest,
    st.lists(line_bytes, max_size=12),
    line_bytes | st.just(b""),
)


@FAST
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=30))
def test_random_chunkings(data: bytes, cuts: list[int]) -> None:
    check_framing(data, chunked(data, [c for c in cuts if c <= len(data)]), CAP)


@FAST
@given(data=streams)
def test_whole_and_bytewise(data: bytes) -> None:
    check_framing(data, [data], CAP)
    check_framing(data, bytewise(data), CAP)


@FAST
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=30))
def test_without_overlong_lines_output_equals_input(data: bytes, cuts: list[int]) -> None:
    chunks = chunked(data, [c for c in cuts if c <= len(data)])
    out, overlong = feed_all(LineBuffer(1000), chunks)
    assert out == data
    assert overlong == 0


@FAST
@given(
    lines=st.lists(
        st.sampled_from(
            [b"a:1|c", b"bb.cc:2.5|ms|@0.5", b"d:3|g|#env:x", b"e:1|s", b"", b"x" * 40]
        ),
        max_size=20,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=40),
)
def test_parsing_does_not_depend_on_chunking(lines: list[bytes], cuts: list[int]) -> None:
    cap = 20
    data = b"\n".join(lines)
    parser = LineParser(max_line_length=cap)
    reference = parser.parse(data, NOW)
    out, overlong = feed_all(LineBuffer(cap), chunked(data, [c for c in cuts if c <= len(data)]))
    parsed = parser.parse(out, NOW)
    assert parsed.samples == reference.samples
    assert parsed.tags_ignored == reference.tags_ignored
    other = [e.reason for e in parsed.errors if e.reason is not Reason.TOO_LONG]
    assert other == [e.reason for e in reference.errors if e.reason is not Reason.TOO_LONG]
    too_long = sum(1 for e in parsed.errors if e.reason is Reason.TOO_LONG)
    assert overlong + too_long == sum(1 for e in reference.errors if e.reason is Reason.TOO_LONG)


def test_crlf_line_at_the_cap_does_not_depend_on_chunking() -> None:
    cap = 5
    data = b"a:1|c\r\n"
    parser = LineParser(max_line_length=cap)
    assert len(parser.parse(data, NOW).samples) == 1  # fed whole: accepted
    out, overlong = feed_all(LineBuffer(cap), [b"a:1|c\r", b"\n"])
    assert overlong == 0
    assert len(parser.parse(out, NOW).samples) == 1
