"""The quantile sketch: the C type (protocol/_sketch.c) equals the reference
(protocol.sketch.PySketch) bit for bit, and both keep the DDSketch guarantee.

The accuracy bound, and why these tests can hold it exactly (no slack):

1. Bin ``k`` holds the magnitudes ``gamma**(k-1) < |x| <= gamma**k`` and answers
   ``r = 2 * gamma**k / (gamma + 1)``. With ``gamma = (1 + a) / (1 - a)``, both
   ``(gamma**k - r) / gamma**k`` and ``(r - gamma**(k-1)) / gamma**(k-1)`` equal
   ``(gamma - 1) / (gamma + 1) = a``, and the relative error ``|r - |x|| / |x|`` is
   largest at the edges: ``<= a`` for every ``|x|`` in the bin (equality only at the top
   edge). A sample therefore moves by at most ``a * |x|`` to its bin's value,
   and moving every sample by at most ``a`` relative moves the ``j``-th smallest by at
   most ``a`` relative (``x -> x +- a|x|`` is increasing, so at least ``j`` moved samples
   lie below ``x_(j) + a|x_(j)|`` and at most ``j - 1`` below ``x_(j) - a|x_(j)|``).
2. ``quantile(q)`` walks the bins in value order and answers the first whose cumulative
   weight exceeds ``rank = q * (n - 1)``: the bin of the sample of 0-based rank
   ``floor(q * (n - 1))``. numpy's ``method="lower"`` takes the sample at index
   ``floor((n - 1) * q)``, the same float64 product: the same sample.
3. The preconditions: no sample in the zero bin but 0 itself (|x| < 1e-9 answers 0), and
   no collapsed bin (the samples span fewer than MAX_BINS keys). The tests check both.
4. Floating point: the key is ``ceil(log|x| / ln_gamma)`` in float64, so a value within
   ~1e-15 relative of a bin edge may land in the neighbouring bin and miss the bound by
   ~1e-15 relative. With seeded samples no quantile sample falls that close (the chance
   is ~1e-12 per sample); the tests are deterministic, so this is checked once, not hoped.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import sketch as sketch_module
from protocol.sketch import (
    MAX_BINS,
    MAX_WEIGHT,
    MIN_INDEXABLE,
    PySketch,
    Sketch,
    SketchError,
    bin_key,
    bin_value,
    key_range,
    ln_gamma,
)

try:
    from protocol._sketch import Sketch as CSketch
except ImportError:  # built without a compiler: the reference alone
    CSketch = None

needs_c = pytest.mark.skipif(CSketch is None, reason="protocol._sketch is not built")
IMPLEMENTATIONS = [PySketch] + ([CSketch] if CSketch is not None else [])
impls = pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__module__)
QS = [0, 0.001, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_sketch_is_the_c_type_when_built() -> None:
    assert Sketch is (CSketch if CSketch is not None else PySketch)


# ---------------------------------------------------------------- (a) C == Python

magnitudes = st.one_of(
    st.floats(min_value=-12, max_value=300).map(lambda e: 10.0**e),
    st.floats(min_value=0, max_value=1.7976931348623157e308),
    st.sampled_from([0.0, 1e-9, 9.99e-10, 1e-12, 5e-324, 1.7976931348623157e308, 1.0]),
)
values = st.builds(lambda m, negative: -m if negative else m, magnitudes, st.booleans())
weights = st.one_of(
    st.sampled_from([1.0, 1 / 0.3, 2.0, 10.0, 0.5, 1e6, 1e-6]),
    st.floats(min_value=1e-6, max_value=1e6),
)
samples = st.lists(st.tuples(values, weights), max_size=60)
alphas = st.sampled_from([1, 50, 100, 200, 1000])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), values, weights),
        st.tuples(st.just("merge_bytes"), alphas, samples),
        st.tuples(st.just("merge"), alphas, samples),
        st.tuples(st.just("self")),
    ),
    max_size=80,
)


def _filled(impl: type, alpha_bp: int, items: list[tuple[float, float]]) -> Any:
    s = impl(alpha_bp)
    for value, weight in items:
        s.add(value, weight)
    return s


def _apply(s: Any, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "add":
        s.add(op[1], op[2])
    elif kind == "merge_bytes":
        s.merge_bytes(_filled(PySketch, op[1], op[2]).to_bytes())
    elif kind == "merge":
        s.merge(_filled(type(s), op[1], op[2]))
    else:
        s.merge(s)  # into itself: doubles


def _same(c: Any, p: Any) -> None:
    assert c.to_bytes() == p.to_bytes()
    assert c.count == p.count
    assert bool(c) is bool(p)
    assert c.alpha_bp == p.alpha_bp and c.alpha == p.alpha
    assert c.quantiles(QS) == p.quantiles(QS)
    bounds = [-1e300, -1.0, -1e-9, 0.0, 1e-9, 1.0, 100.0, 1e300, math.inf, -math.inf]
    assert c.count_le(bounds) == p.count_le(bounds)


@needs_c
@FAST
@given(alphas, operations)
@example(100, [("add", 1.0, 1.0), ("add", 1e300, 1.0), ("add", 1e-12, 1.0)])
@example(1000, [("add", 1.7976931348623157e308, 1.0), ("add", -1.7976931348623157e308, 3.0)])
def test_c_equals_python(alpha_bp: int, ops: list[tuple[Any, ...]]) -> None:
    c, p = CSketch(alpha_bp), PySketch(alpha_bp)
    for op in ops:
        _apply(c, op)
        _apply(p, op)
    _same(c, p)
    blob = p.to_bytes()
    _same(CSketch.from_bytes(blob), PySketch.from_bytes(blob))
    c2, p2 = CSketch(alpha_bp), PySketch(alpha_bp)
    c2.merge_bytes(blob)
    p2.merge_bytes(blob)
    _same(c2, p2)


@needs_c
def test_c_equals_python_on_a_window_that_slides() -> None:
    """Ever higher values (each a few bins up): the store's window slides and collapses
    its lowest bins at every step; then ever lower ones (redirected to the floor)."""
    rng = random.Random(7)
    for alpha_bp in (1, 100, 1000):
        c, p = CSketch(alpha_bp), PySketch(alpha_bp)
        ln_g = ln_gamma(alpha_bp)
        key = bin_key(1e-9, ln_g)
        top = key_range(alpha_bp)[1]
        while key < top - 10:
            v = math.exp(key * ln_g) * 0.999
            w = rng.choice([1.0, 1 / 0.3])
            c.add(v, w)
            p.add(v, w)
            c.add(-v, w)
            p.add(-v, w)
            key += rng.randint(1, 3 * MAX_BINS if rng.random() < 0.01 else 7)
        for _ in range(3000):
            v = 10.0 ** rng.uniform(-9, 300)
            c.add(v)
            p.add(v)
        _same(c, p)
        assert len(c.to_bytes()) < 2 * MAX_BINS * 12


@needs_c
@pytest.mark.parametrize("distinct", [1, 42, 43, 64, 128, 129, 5000])
def test_c_equals_python_across_the_log_limit(distinct: int) -> None:
    """The C store keeps its first 128 samples as a log, then turns dense: the same
    bytes and answers at either side (each of three rounds adds every key once), with
    keys repeated, out of order, and a collapse (a key 2048 bins above the lowest)
    that comes while the store is still a log."""
    rng = random.Random(distinct)
    ln_g = ln_gamma(100)
    keys = [rng.randrange(-600, 600) for _ in range(distinct)]
    c, p = CSketch(100), PySketch(100)
    for _ in range(3):
        for key in keys:
            v = math.exp(key * ln_g) * 0.999 * rng.choice([1, -1])
            w = rng.choice([1.0, 1 / 0.3, 10.0])
            c.add(v, w)
            p.add(v, w)
        _same(c, p)
    for v in (math.exp((max(keys) + MAX_BINS) * ln_g), 1e-9, 1e300, -1e300):
        c.add(v)
        p.add(v)
        _same(c, p)


# ------------------------------------------------------------------- API basics


@impls
def test_empty(impl: type) -> None:
    s = impl()
    assert not s
    assert s.count == 0.0
    assert s.quantile(0.5) is None
    assert s.quantiles([0, 1]) == [None, None]
    assert s.count_le([1.0]) == [0.0]
    assert impl.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes() == b"\x01\x64\x00\x00\x00\x00"
    assert s.alpha_bp == 100 and s.alpha == 0.01


@impls
@pytest.mark.parametrize("alpha_bp", [0, 1001, -1, 2**70])
def test_bad_alpha(impl: type, alpha_bp: int) -> None:
    with pytest.raises(SketchError):
        impl(alpha_bp)


@impls
@pytest.mark.parametrize(
    ("value", "weight"),
    [(math.nan, 1.0), (math.inf, 1.0), (-math.inf, 1.0), (1.0, 0.0), (1.0, -1.0),
     (1.0, math.nan), (1.0, math.inf), (1.0, MAX_WEIGHT * 2)],
)
def test_add_rejects_what_is_not_a_sample(impl: type, value: float, weight: float) -> None:
    s = impl()
    with pytest.raises(SketchError):
        s.add(value, weight)
    assert not s


@impls
def test_quantile_outside_0_1(impl: type) -> None:
    s = impl()
    s.add(1.0)
    for q in (-0.1, 1.1, math.nan):
        with pytest.raises(SketchError):
            s.quantile(q)


@impls
def test_add_keywords(impl: type) -> None:
    s = impl()
    s.add(value=2.0, weight=3.0)
    s.add(2.0, weight=1.0)
    assert s.count == 4.0
    with pytest.raises(TypeError):
        s.add(1.0, wieght=2.0)


@impls
def test_the_largest_floats_answer_finite(impl: type) -> None:
    s = impl(1000)
    s.add(1.7976931348623157e308)
    s.add(-1.7976931348623157e308)
    top, bottom = s.quantile(1), s.quantile(0)
    assert top is not None and bottom is not None
    assert math.isfinite(top) and math.isfinite(bottom)
    assert abs(top - 1.7976931348623157e308) <= 0.1 * 1.7976931348623157e308
    assert impl.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()


def test_bin_value_within_alpha_at_the_edges() -> None:
    for alpha_bp in (1, 100, 1000):
        ln_g, alpha = ln_gamma(alpha_bp), alpha_bp / 10000
        low, high = key_range(alpha_bp)
        for key in (low, low + 1, -1, 0, 1, high - 1, high):
            r = bin_value(key, ln_g)
            assert math.isfinite(r)
            # the edges computed here carry float64 rounding (exp of a product near
            # +-700: ~1e-13 relative), which at alpha = 0.01% is not negligible
            bottom = math.exp((key - 1) * ln_g)
            assert abs(r - bottom) <= (alpha + 1e-13) * bottom
            if key * ln_g < 709.0:  # the top edge is a float64
                top = math.exp(key * ln_g)
                assert abs(r - top) <= (alpha + 1e-13) * top


# ------------------------------------------------------------------- (b) accuracy


def _distributions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    n = 200_000
    return {
        "lognormal": rng.lognormal(mean=3.0, sigma=2.0, size=n),
        "uniform": rng.uniform(0.0, 1000.0, size=n),
        "bimodal": np.concatenate(
            [rng.normal(20.0, 2.0, n // 2), rng.normal(900.0, 50.0, n - n // 2)]
        ),
        "mixed-sign": np.concatenate(
            [rng.normal(-50.0, 30.0, n // 2), rng.lognormal(2.0, 1.0, n // 4),
             np.zeros(n // 20), -rng.lognormal(-3.0, 2.0, n - n // 2 - n // 4 - n // 20)]
        ),
    }


def _check_preconditions(data: np.ndarray, alpha_bp: int) -> None:
    magnitudes = np.abs(data)
    assert not np.any((magnitudes > 0) & (magnitudes < MIN_INDEXABLE)), "a sample in the zero bin"
    ln_g = ln_gamma(alpha_bp)
    for sign in (data > 0, data < 0):
        if sign.any():
            span = bin_key(float(magnitudes[sign].max()), ln_g) - bin_key(
                float(magnitudes[sign].min()), ln_g)
            assert span < MAX_BINS, "collapsed bins"


def _assert_within_alpha(s: Any, data: np.ndarray, alpha: float) -> None:
    got = s.quantiles(QS)
    for q, answer in zip(QS, got, strict=True):
        exact = float(np.quantile(data, q, method="lower"))
        assert answer is not None
        assert abs(answer - exact) <= alpha * abs(exact), (q, answer, exact)


@pytest.mark.parametrize("alpha_bp", [100, 200, 1000])
@pytest.mark.parametrize("name", ["lognormal", "uniform", "bimodal", "mixed-sign"])
def test_accuracy(name: str, alpha_bp: int) -> None:
    data = _distributions()[name]
    _check_preconditions(data, alpha_bp)
    s = Sketch(alpha_bp)
    for x in data.tolist():
        s.add(x)
    assert s.count == len(data)
    _assert_within_alpha(s, data, alpha_bp / 10000)


def test_accuracy_a_million_lognormal_and_the_reference() -> None:
    data = np.random.default_rng(5).lognormal(0.0, 3.0, 1_000_000)
    _check_preconditions(data, 100)
    s = Sketch()
    for x in data.tolist():
        s.add(x)
    _assert_within_alpha(s, data, 0.01)
    p = PySketch()
    for x in data[:200_000].tolist():
        p.add(x)
    _assert_within_alpha(p, data[:200_000], 0.01)


def test_accuracy_weighted() -> None:
    """Weight 10 (rate 0.1): the rank is over the total weight, so the answer is within
    alpha of the lower quantile of the samples each repeated ten times."""
    rng = np.random.default_rng(11)
    data = rng.lognormal(1.0, 1.5, 20_000)
    s = Sketch()
    for x in data.tolist():
        s.add(x, 10.0)
    repeated = np.repeat(data, 10)
    _assert_within_alpha(s, repeated, 0.01)


# ------------------------------------------------------------------- (c) merges


@impls
def test_merge_of_disjoint_parts_is_the_whole(impl: type) -> None:
    rng = np.random.default_rng(3)
    data = np.concatenate([rng.lognormal(2.0, 2.0, 30_000), -rng.lognormal(0.0, 1.0, 5_000),
                           np.zeros(100)])
    rng.shuffle(data)
    whole = impl()
    for x in data.tolist():
        whole.add(x)
    parts = np.array_split(data, 7)
    by_merge, by_bytes = impl(), impl()
    for part in reversed(parts):  # another order than the whole's
        s = impl()
        for x in part.tolist():
            s.add(x)
        by_merge.merge(s)
        by_bytes.merge_bytes(s.to_bytes())
    # integer weights: every bin's sum is exact whatever the order, so the bytes agree
    assert by_merge.to_bytes() == by_bytes.to_bytes() == whole.to_bytes()


@impls
def test_merge_of_disjoint_parts_with_rates(impl: type) -> None:
    rng = random.Random(4)
    items = [(rng.lognormvariate(0, 2) * rng.choice([1, -1]), 1 / rng.choice([0.3, 0.1, 1.0]))
             for _ in range(20_000)]
    whole = impl()
    for v, w in items:
        whole.add(v, w)
    merged = impl()
    for start in range(0, len(items), 3000):
        part = impl()
        for v, w in items[start:start + 3000]:
            part.add(v, w)
        merged.merge_bytes(part.to_bytes())
    assert math.isclose(merged.count, whole.count, rel_tol=1e-12)
    for a, b in zip(merged.quantiles(QS), whole.quantiles(QS), strict=True):
        # float sums in another order can differ in the last bits, which can move a
        # rank across a bin boundary only if it falls within that rounding of it
        assert a == b
    for a, b in zip(merged.count_le([-1, 0, 1, 10]), whole.count_le([-1, 0, 1, 10]),
                    strict=True):
        assert math.isclose(a, b, rel_tol=1e-12)


@impls
def test_collapsed_merge_is_the_whole(impl: type) -> None:
    """Values over far more than MAX_BINS keys: the lowest collapse, the same way
    whatever the order of adds and merges (integer weights)."""
    rng = random.Random(9)
    values = [10.0 ** rng.uniform(-9, 300) for _ in range(20_000)]
    whole = impl()
    for v in values:
        whole.add(v)
    merged = impl()
    for start in range(0, len(values), 1000):
        merged.merge_bytes(_filled(impl, 100, [(v, 1.0) for v in values[start:start + 1000]])
                           .to_bytes())
    assert merged.to_bytes() == whole.to_bytes()


# ------------------------------------------------------------------- (d) count_le


@pytest.mark.parametrize("name", ["lognormal", "mixed-sign", "bimodal"])
def test_count_le_within_the_alpha_band(name: str) -> None:
    """A sample x counts under bound b when its bin's value is <= b, and that value is
    within alpha of x: every x with x + alpha|x| <= b counts, no x with x - alpha|x| > b
    does."""
    data = _distributions()[name]
    alpha = 0.01
    s = Sketch()
    for x in data.tolist():
        s.add(x)
    bounds = [float(b) for b in np.quantile(data, [0.001, 0.1, 0.5, 0.9, 0.999])]
    bounds += [-100.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0]
    for bound, got in zip(bounds, s.count_le(bounds), strict=True):
        surely = int(np.count_nonzero(data + alpha * np.abs(data) <= bound))
        maybe = int(np.count_nonzero(data - alpha * np.abs(data) <= bound))
        assert surely <= got <= maybe, (bound, surely, got, maybe)
    assert s.count_le([math.inf]) == [len(data)]
    assert s.count_le([-math.inf]) == [0.0]


# ------------------------------------------------------------------- (e) bad bytes


def _valid_blobs() -> list[bytes]:
    rng = random.Random(1)
    blobs = [PySketch().to_bytes()]
    for alpha_bp in (1, 100, 1000):
        s = PySketch(alpha_bp)
        for _ in range(300):
            s.add(rng.lognormvariate(0, 4) * rng.choice([1, -1]), rng.choice([1.0, 1 / 0.3]))
        s.add(0.0)
        blobs.append(s.to_bytes())
    return blobs


def _outcome(impl: type, blob: bytes) -> tuple[bytes, bytes] | None:
    """The bytes of the blob's sketch and of a sketch merged with it, or None for
    SketchError (after which the sketch merged into is unchanged)."""
    base = impl()
    base.add(3.0)
    before = base.to_bytes()
    try:
        base.merge_bytes(blob)
    except SketchError:
        assert base.to_bytes() == before
        try:
            impl.from_bytes(blob)
        except SketchError:
            return None
        raise AssertionError("merge_bytes refused what from_bytes took") from None
    return impl.from_bytes(blob).to_bytes(), base.to_bytes()


def _both(blob: bytes) -> tuple[bytes, bytes] | None:
    results = {impl: _outcome(impl, blob) for impl in IMPLEMENTATIONS}
    assert len(set(results.values())) == 1, results
    return results[PySketch]


def test_truncated_and_extended_blobs() -> None:
    for blob in _valid_blobs():
        assert _both(blob) is not None
        for end in range(len(blob)):
            assert _both(blob[:end]) is None
        assert _both(blob + b"\x00") is None


def test_mutated_blobs() -> None:
    rng = random.Random(2)
    for blob in _valid_blobs():
        for _ in range(400):
            mutated = bytearray(blob)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            _both(bytes(mutated))  # either refused by both, or the same sketch in both


@FAST
@given(st.binary(max_size=64))
@example(b"")
@example(b"\x01")
@example(b"\x01\x64\x00")
@example(b"\x01\x64\x00\x00\x00")
def test_random_bytes(blob: bytes) -> None:
    _both(blob)
    _both(b"\x01\x64\x00" + blob)
    _both(b"\x01\x64\x00\x00" + blob)


@FAST
@given(st.lists(st.integers(min_value=0, max_value=255), max_size=40))
def test_random_store_bytes(tail: list[int]) -> None:
    """Random bins after a valid header: varints of every length, both weight forms."""
    _both(b"\x01\x64\x00\x02" + bytes(tail))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(d: int) -> int:
    return (d << 1) ^ (d >> 63)


HEADER = b"\x01\x64\x00"
BAD_BLOBS = {
    "version": b"\x02\x64\x00\x00\x00\x00",
    "alpha 0": b"\x01\x00\x00\x00\x00\x00",
    "alpha 1001": b"\x01" + struct.pack("<H", 1001) + b"\x00\x00\x00",
    "odd weight": HEADER + b"\x03\x00\x00",
    "nan weight": HEADER + b"\x01" + struct.pack("<d", math.nan) + b"\x00\x00",
    "inf weight": HEADER + b"\x01" + struct.pack("<d", math.inf) + b"\x00\x00",
    "negative weight": HEADER + b"\x01" + struct.pack("<d", -1.0) + b"\x00\x00",
    "huge weight": HEADER + b"\x01" + struct.pack("<d", 1e300) + b"\x00\x00",
    "truncated double": HEADER + b"\x01\x00\x00",
    "varint over 64 bits": HEADER + b"\xff" * 9 + b"\x02" + b"\x00\x00",
    "varint over 10 bytes": HEADER + b"\x80" * 10 + b"\x00" + b"\x00\x00",
    "too many bins": HEADER + b"\x00" + _varint(MAX_BINS + 1) + b"\x02\x02" * (MAX_BINS + 1)
    + b"\x00",
    "huge bin count": HEADER + b"\x00" + _varint(2**63) + b"\x00",
    "keys out of order": HEADER + b"\x00\x02" + _varint(_zigzag(5)) + b"\x02"
    + _varint(_zigzag(-1)) + b"\x02\x00",
    "duplicate key": HEADER + b"\x00\x02\x0a\x02\x00\x02\x00",
    "key too high": HEADER + b"\x00\x01" + _varint(_zigzag(10**6)) + b"\x02\x00",
    "key too low": HEADER + b"\x00\x01" + _varint(_zigzag(-10**6)) + b"\x02\x00",
    "key delta 2**62": HEADER + b"\x00\x02\x02\x02" + _varint(_zigzag(2**62)) + b"\x02\x00",
    "trailing": HEADER + b"\x00\x00\x00\x00",
    "missing negative store": HEADER + b"\x00\x00",
}


@impls
@pytest.mark.parametrize("name", sorted(BAD_BLOBS))
def test_bad_blobs(impl: type, name: str) -> None:
    with pytest.raises(SketchError):
        impl.from_bytes(BAD_BLOBS[name])
    assert issubclass(SketchError, ValueError)


@impls
def test_the_limits_of_a_valid_blob(impl: type) -> None:
    low, high = key_range(100)
    edge = HEADER + b"\x00\x02" + _varint(_zigzag(low)) + b"\x00" + _varint(
        _zigzag(high - low)) + b"\x02\x00"
    s = impl.from_bytes(edge)
    assert s.count == 1.0
    assert s.quantile(1) is not None and math.isfinite(s.quantile(1))
    full = HEADER + b"\x00" + _varint(MAX_BINS) + b"\x02\x02" * MAX_BINS + b"\x00"
    assert impl.from_bytes(full).count == MAX_BINS
    assert impl.from_bytes(full).to_bytes() == full
    zero_weight = HEADER + b"\x00\x01\x02\x00\x00"  # a bin of weight 0 is kept
    assert impl.from_bytes(zero_weight).to_bytes() == zero_weight
    assert bool(impl.from_bytes(zero_weight))
    assert impl.from_bytes(zero_weight).quantile(0.5) is None


@needs_c
def test_buffers_other_than_bytes() -> None:
    blob = _valid_blobs()[2]
    for wrapped in (bytearray(blob), memoryview(blob)):
        assert CSketch.from_bytes(wrapped).to_bytes() == PySketch.from_bytes(wrapped).to_bytes()
    with pytest.raises(TypeError):
        CSketch.from_bytes("not bytes")
    with pytest.raises(TypeError):
        CSketch().merge(PySketch())


# ------------------------------------------------------------------- (f) alphas


@impls
@pytest.mark.parametrize(("mine", "theirs"), [(100, 200), (200, 100), (100, 1000), (50, 100)])
def test_merge_of_another_alpha_rebins(impl: type, mine: int, theirs: int) -> None:
    """Their samples move by at most a2 to their bins' values, which move by at most a1
    to ours: |r - x| <= ((1 + a1)(1 + a2) - 1)|x|, about a1 + a2 (the increasing maps
    x -> x +- e|x| carry this to every order statistic, as in the module docstring)."""
    rng = np.random.default_rng(mine * 7 + theirs)
    ours_data = rng.lognormal(2.0, 1.5, 50_000)
    their_data = np.concatenate([rng.lognormal(3.0, 1.0, 50_000), -rng.lognormal(0, 1, 5_000)])
    _check_preconditions(np.concatenate([ours_data, their_data]), mine)
    _check_preconditions(their_data, theirs)
    ours, theirs_sketch = impl(mine), impl(theirs)
    for x in ours_data.tolist():
        ours.add(x)
    for x in their_data.tolist():
        theirs_sketch.add(x)
    ours.merge_bytes(theirs_sketch.to_bytes())
    assert ours.alpha_bp == mine
    assert ours.count == len(ours_data) + len(their_data)
    a1, a2 = mine / 10000, theirs / 10000
    _assert_within_alpha(ours, np.concatenate([ours_data, their_data]), (1 + a1) * (1 + a2) - 1)
    again = impl(mine)
    for x in ours_data.tolist():
        again.add(x)
    again.merge(theirs_sketch)
    assert again.to_bytes() == ours.to_bytes()


# ------------------------------------------------------------------- (g) weights


@impls
def test_weight_ten_is_ten_samples(impl: type) -> None:
    rng = random.Random(10)
    values = [rng.lognormvariate(0, 3) * rng.choice([1, -1, 0]) for _ in range(2000)]
    weighted, repeated = impl(), impl()
    for v in values:
        weighted.add(v, 10.0)
        for _ in range(10):
            repeated.add(v)
    assert weighted.to_bytes() == repeated.to_bytes()
    assert weighted.quantiles(QS) == repeated.quantiles(QS)
    assert weighted.count == repeated.count == 20_000


# ------------------------------------------------------------------- the capsule


@needs_c
def test_capsule_api() -> None:
    """The C API through ctypes: what collector/_fastfeed.c calls."""
    import ctypes

    from protocol import _sketch

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(_sketch._C_API, b"protocol._sketch._C_API")

    class CAPI(ctypes.Structure):
        _fields_ = [
            ("type", ctypes.c_void_p),
            ("new_sketch", ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_int)),
            ("add", ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_double,
                                      ctypes.c_double)),
            ("add_many", ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_ssize_t)),
        ]

    class Sample(ctypes.Structure):
        _fields_ = [("sketch", ctypes.py_object), ("value", ctypes.c_double),
                    ("weight", ctypes.c_double)]

    api = CAPI.from_address(address)
    assert api.type == id(CSketch)
    s = api.new_sketch(100)
    assert type(s) is CSketch
    p = PySketch(100)
    for v, w in [(12.5, 1.0), (-3.0, 1 / 0.3), (0.0, 2.0), (1e300, 1.0)]:
        assert api.add(s, v, w) == 0
        p.add(v, w)
    assert s.to_bytes() == p.to_bytes()
    with pytest.raises(SketchError):
        api.add(s, math.nan, 1.0)
    with pytest.raises(SketchError):
        api.add(s, 1.0, 0.0)
    with pytest.raises(TypeError):
        api.add(p, 1.0, 1.0)
    with pytest.raises(SketchError):
        api.new_sketch(0)
    assert s.to_bytes() == p.to_bytes()

    # add_many: n adds in order, over chunks of 64, into several sketches
    rng = random.Random(3)
    sketches = [api.new_sketch(100) for _ in range(3)]
    references = [PySketch(100) for _ in range(3)]
    items = [(rng.randrange(3), rng.lognormvariate(0, 4) * rng.choice([1, -1, 0]),
              rng.choice([1.0, 10.0, 1 / 0.3])) for _ in range(1000)]
    batch = (Sample * len(items))(*[(sketches[i], v, w) for i, v, w in items])
    assert api.add_many(ctypes.addressof(batch), len(items)) == 0
    for i, v, w in items:
        references[i].add(v, w)
    for mine, reference in zip(sketches, references, strict=True):
        assert mine.to_bytes() == reference.to_bytes()
    # a bad sample stops the batch there: those before it are added
    good = api.new_sketch(100)
    batch = (Sample * 4)((good, 1.0, 1.0), (good, 2.0, 1.0), (good, math.inf, 1.0),
                         (good, 3.0, 1.0))
    with pytest.raises(SketchError):
        api.add_many(ctypes.addressof(batch), 4)
    assert good.count == 2.0
    batch = (Sample * 2)((good, 5.0, 1.0), (p, 1.0, 1.0))
    with pytest.raises(TypeError):
        api.add_many(ctypes.addressof(batch), 2)
    assert good.count == 3.0


def test_reference_module_constants() -> None:
    assert sketch_module.DEFAULT_ALPHA_BP == 100
    assert key_range(100) == (bin_key(1e-9, ln_gamma(100)), bin_key(1.7976931348623157e308,
                                                                     ln_gamma(100)))
