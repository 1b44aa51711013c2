"""protocol.summary.merge, kind by kind: what write_batch does with each SketchRow."""

from __future__ import annotations

import math
import random
import struct

import pytest

from protocol import hll, summary
from protocol.sketch import PySketch, Sketch, SketchError


def _sketch(values: list[float], alpha_bp: int = 100) -> bytes:
    s = Sketch(alpha_bp)
    for v in values:
        s.add(v)
    return s.to_bytes()


def _set(members: list[str]) -> bytes:
    d = hll.DistinctCount()
    for m in members:
        d.add(m)
    return d.to_bytes()


# ------------------------------------------------------------------- value


def test_value_merge_adds_the_bins() -> None:
    rng = random.Random(1)
    parts = [[rng.lognormvariate(1, 2) for _ in range(500)] for _ in range(4)]
    blobs = [_sketch(p) for p in parts]
    merged = summary.merge("value", blobs)
    assert merged == _sketch([v for p in parts for v in p])  # integer weights: exact
    assert Sketch.from_bytes(merged).count == 2000
    # associative: merging merges is merging all (as the minute and hour rows do)
    assert summary.merge("value", [summary.merge("value", blobs[:2]),
                                   summary.merge("value", blobs[2:])]) == merged
    # the reference reads what the C wrote
    assert PySketch.from_bytes(merged).to_bytes() == merged


def test_value_merge_of_one_blob_is_that_blob_checked() -> None:
    blob = _sketch([1.0, 2.0])
    assert summary.merge("value", [blob]) is blob
    with pytest.raises(ValueError):
        summary.merge("value", [blob[:-1]])


def test_value_merge_of_another_alpha_keeps_the_first() -> None:
    merged = summary.merge("value", [_sketch([1.0, 10.0], 100), _sketch([100.0], 200)])
    s = Sketch.from_bytes(merged)
    assert s.alpha_bp == 100 and s.count == 3


@pytest.mark.parametrize("bad", [b"", b"\x01", b"\x02\x64\x00\x00\x00\x00",
                                 b"\x01\x64\x00\x00\x00\x00\x00", b"not a sketch"])
def test_value_merge_of_bad_bytes(bad: bytes) -> None:
    good = _sketch([5.0])
    for blobs in ([bad], [good, bad], [bad, good]):
        with pytest.raises(SketchError):
            summary.merge("value", blobs)


# ------------------------------------------------------------------- set


def test_set_merge_is_the_union() -> None:
    merged = summary.merge("set", [_set(["a", "b"]), _set(["b", "c"]), _set([])])
    assert round(hll.estimate(merged)) == 3
    assert summary.merge("set", [merged]) == hll.union([merged])


@pytest.mark.parametrize("bad", [b"", b"\x02\x01\x07\x0e", _sketch([1.0])])
def test_set_merge_of_bad_bytes(bad: bytes) -> None:
    for blobs in ([bad], [_set(["a"]), bad]):
        with pytest.raises(ValueError):
            summary.merge("set", blobs)


# ------------------------------------------------------------------- gauge


def test_gauge_last_wins() -> None:
    blobs = [summary.encode_last(v) for v in (1.0, -5.0, 42.5)]
    assert summary.merge("gauge", blobs) == blobs[-1]
    assert summary.decode_last(summary.merge("gauge", blobs)) == 42.5
    assert summary.decode_last(summary.merge("gauge", blobs[:1])) == 1.0


@pytest.mark.parametrize("value", [0.0, -0.0, -1e300, 5e-324, 1.7976931348623157e308])
def test_gauge_last_round_trips(value: float) -> None:
    got = summary.decode_last(summary.encode_last(value))
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 7, b"\x00" * 9, struct.pack("<d", math.nan),
                                 struct.pack("<d", math.inf), struct.pack("<d", -math.inf)])
def test_gauge_bad_last(bad: bytes) -> None:
    with pytest.raises(ValueError):
        summary.decode_last(bad)
    with pytest.raises(ValueError):
        summary.merge("gauge", [summary.encode_last(1.0), bad])


# ------------------------------------------------------------------- none


def test_counters_have_no_summary() -> None:
    with pytest.raises(ValueError):
        summary.merge("counter", [b"\x00"])


def test_nothing_to_merge() -> None:
    for kind in ("value", "set", "gauge"):
        with pytest.raises(ValueError):
            summary.merge(kind, [])
