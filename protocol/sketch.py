"""Quantile sketches: DDSketch (Masson, Rim, Lee, VLDB 2019), the reference implementation.

A sketch keeps, for each value sample, a weight in one logarithmically spaced bin: bin
``k`` holds the values ``x`` with ``gamma**(k-1) < |x| <= gamma**k``, where
``gamma = (1 + alpha) / (1 - alpha)``. Every value of a bin is within ``alpha``
relative error of the bin's representative value ``2 * gamma**k / (gamma + 1)``, so a
quantile read off the bins is within ``alpha`` of the exact quantile of the samples.
Adding two sketches is adding their bins: sketches of any number of writers, seconds
and minutes merge exactly (the merge of A and B is the sketch of A's and B's samples).

Negative values have a store of their own (keyed by ``|x|``), and values with
``|x| < MIN_INDEXABLE`` count in a zero bin. A store keeps at most ``MAX_BINS``
consecutive keys, the highest ones: a weight whose key is below that window adds to the
window's lowest key (DDSketch's "collapsing lowest" store), which keeps every quantile
above that point exact to ``alpha`` and bounds memory whatever a sender sends. At
``alpha`` = 1% 2,048 bins span a ratio of 6e17 (a nanosecond to 19 years in ms).

The bytes (``to_bytes``) are what the store keeps: version 1, ``alpha`` in basis
points (u16 little-endian), the zero bin's weight, then each store as a varint bin
count followed by (zigzag varint key delta, weight) pairs in ascending key order.
A weight is ``varint(2 * n)`` for an integer ``n < 2**53`` (the common case: one
byte for up to 63 samples) or ``0x01`` and a little-endian float64 (a weight from a
sample rate, ``1/0.3``). A busy timer-minute takes 1-2 KB (docs/sketches.md).
Reading checks every field: a varint has at most 64 bits, a store at most ``MAX_BINS``
bins, keys ascend strictly and lie between the keys of ``MIN_INDEXABLE`` and of the
largest float64, a weight is finite, >= 0 and at most ``MAX_WEIGHT``, nothing trails.
Bytes that fail raise SketchError and leave a sketch unchanged.

``PySketch`` is the reference. protocol/_sketch.c is the same sketch in C, the same
bins, weights, bytes and answers bit for bit (held equal by tests/test_sketch.py), with
an O(1) add; ``Sketch`` is the C type where the extension is built, else ``PySketch``.
collector/_fastfeed.c adds to the C type through its capsule (protocol/sketch_capi.h).
"""

from __future__ import annotations

import math
import operator
import struct
import sys
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Final

VERSION: Final = 1
DEFAULT_ALPHA_BP: Final = 100  # alpha in basis points: 1%
MIN_ALPHA_BP: Final = 1  # 0.01%
MAX_ALPHA_BP: Final = 1000  # 10%
MIN_INDEXABLE: Final = 1e-9  # |x| below this counts as zero
MAX_BINS: Final = 2048  # per store (positive, negative)
# A sample's weight (1/rate) is at most 2**100, so no sum of weights ever reaches
# infinity (it would take 2**900 merges of such bins); the collector's weights are <= 1e6.
MAX_WEIGHT: Final = float(2**100)
_DOUBLE: Final = struct.Struct("<d")
_U16: Final = struct.Struct("<H")
_MAX_EXACT: Final = 2**53
_MAX_VARINT: Final = 2**64 - 1
_EXP_SAFE: Final = 709.0  # 2 * exp(709) is finite
_DBL_MAX: Final = sys.float_info.max


class SketchError(ValueError):
    """Bytes that are not a sketch, or sketches that cannot be merged."""


def ln_gamma(alpha_bp: int) -> float:
    """log(gamma) for ``alpha = alpha_bp / 10000``; C computes the same double."""
    alpha = alpha_bp / 10000.0
    return math.log1p(2.0 * alpha / (1.0 - alpha))


def bin_key(magnitude: float, ln_g: float) -> int:
    """The bin of ``magnitude`` (> 0, finite, >= MIN_INDEXABLE): ceil(log_gamma(x))."""
    return math.ceil(math.log(magnitude) / ln_g)


def bin_value(key: int, ln_g: float) -> float:
    """The representative value of bin ``key``: within alpha of every value in it.
    Finite for every key (the top bins of values near the largest float64 are
    clamped to it, which is nearer to each of their values)."""
    x = key * ln_g
    if x < _EXP_SAFE:
        return 2.0 * math.exp(x) / (1.0 + math.exp(ln_g))
    try:
        return math.exp(x - math.log((1.0 + math.exp(ln_g)) / 2.0))
    except OverflowError:
        return _DBL_MAX


@cache
def key_range(alpha_bp: int) -> tuple[int, int]:
    """The lowest and highest key a value can have: those of MIN_INDEXABLE and of the
    largest float64. A key outside is not from a sketch (and would overflow exp)."""
    ln_g = ln_gamma(alpha_bp)
    return bin_key(MIN_INDEXABLE, ln_g), bin_key(_DBL_MAX, ln_g)


class _Store:
    """Bins of one sign: key -> weight, keys within (hi - MAX_BINS, hi]."""

    __slots__ = ("bins", "hi")

    def __init__(self) -> None:
        self.bins: dict[int, float] = {}
        self.hi = 0

    def add(self, key: int, weight: float) -> None:
        bins = self.bins
        if not bins:
            self.hi = key
        elif key > self.hi:
            self.hi = key
            floor = key - MAX_BINS + 1
            fallen = [k for k in bins if k < floor]
            if fallen:  # the bins below the new window collapse into its lowest key
                total = 0.0
                for k in sorted(fallen):
                    total += bins.pop(k)
                bins[floor] = bins.get(floor, 0.0) + total
        elif key <= self.hi - MAX_BINS:
            key = self.hi - MAX_BINS + 1
        bins[key] = bins.get(key, 0.0) + weight

    def sorted_bins(self) -> list[tuple[int, float]]:
        return sorted(self.bins.items())


class PySketch:
    """A DDSketch of weighted values. ``add`` takes finite values; ``weight`` > 0."""

    __slots__ = ("_ln_gamma", "alpha_bp", "negative", "positive", "zero")

    def __init__(self, alpha_bp: int = DEFAULT_ALPHA_BP) -> None:
        alpha_bp = operator.index(alpha_bp)
        if not MIN_ALPHA_BP <= alpha_bp <= MAX_ALPHA_BP:
            raise SketchError(f"alpha must be {MIN_ALPHA_BP}..{MAX_ALPHA_BP} basis points")
        self.alpha_bp = alpha_bp
        self._ln_gamma = ln_gamma(alpha_bp)
        self.zero = 0.0
        self.positive = _Store()
        self.negative = _Store()

    @property
    def alpha(self) -> float:
        return self.alpha_bp / 10000.0

    @property
    def count(self) -> float:
        """The total weight: the number of samples (1/rate each)."""
        return (self.zero + math.fsum(self.positive.bins.values())
                + math.fsum(self.negative.bins.values()))

    def __bool__(self) -> bool:
        return bool(self.zero or self.positive.bins or self.negative.bins)

    def add(self, value: float, weight: float = 1.0) -> None:
        """One sample of ``value`` (finite) counted ``weight`` times (0 < weight <=
        MAX_WEIGHT: 1/rate); SketchError otherwise."""
        if not math.isfinite(value):
            raise SketchError("a sketch takes finite values")
        if not 0.0 < weight <= MAX_WEIGHT:
            raise SketchError("a sample's weight must be > 0 and at most 2**100")
        self._add(value, weight)

    def _add(self, value: float, weight: float) -> None:
        if value >= MIN_INDEXABLE:
            self.positive.add(bin_key(value, self._ln_gamma), weight)
        elif value <= -MIN_INDEXABLE:
            self.negative.add(bin_key(-value, self._ln_gamma), weight)
        else:
            self.zero += weight

    def merge(self, other: PySketch) -> None:
        """Add ``other``'s bins to this sketch (of another alpha: re-binned, see
        ``_add_bins``)."""
        self._add_bins(other.alpha_bp, other.zero, other.positive.sorted_bins(),
                       other.negative.sorted_bins())

    def merge_bytes(self, data: bytes) -> None:
        """``merge(Sketch.from_bytes(data))`` without building the other sketch."""
        self._add_bins(*_decode(data))

    def _add_bins(self, alpha_bp: int, zero: float, positive: Iterable[tuple[int, float]],
                  negative: Iterable[tuple[int, float]]) -> None:
        """Bins in ascending key order. Of the same alpha, key for key; of another
        (alpha changed in the configuration), each bin's representative value goes
        into this sketch's bins: the error of such a merge is up to
        ``(1 + a1) * (1 + a2) - 1``, about the sum of the two alphas (docs/sketches.md)."""
        self.zero += zero
        if alpha_bp == self.alpha_bp:
            for key, weight in positive:
                self.positive.add(key, weight)
            for key, weight in negative:
                self.negative.add(key, weight)
            return
        other_ln = ln_gamma(alpha_bp)
        for key, weight in positive:
            self._add(bin_value(key, other_ln), weight)
        for key, weight in negative:
            self._add(-bin_value(key, other_ln), weight)

    def to_bytes(self) -> bytes:
        out = bytearray((VERSION,))
        out += _U16.pack(self.alpha_bp)
        _put_weight(out, self.zero)
        for store in (self.positive, self.negative):
            bins = store.sorted_bins()
            _put_varint(out, len(bins))
            previous = 0
            for key, weight in bins:
                delta = key - previous
                _put_varint(out, (delta << 1) ^ (delta >> 63))
                _put_weight(out, weight)
                previous = key
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> PySketch:
        alpha_bp, zero, positive, negative = _decode(data)
        sketch = cls(alpha_bp)
        sketch._add_bins(alpha_bp, zero, positive, negative)
        return sketch

    def _ordered(self) -> list[tuple[float, float]]:
        """(value, weight) of every bin from the lowest value to the highest."""
        ln_g = self._ln_gamma
        out = [(-bin_value(k, ln_g), w) for k, w in reversed(self.negative.sorted_bins())]
        if self.zero:
            out.append((0.0, self.zero))
        out.extend((bin_value(k, ln_g), w) for k, w in self.positive.sorted_bins())
        return out

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), within alpha relative error of the exact
        "lower" quantile of the samples (the sample of rank floor(q * (n - 1))), or None
        for an empty sketch. One value: use ``quantiles`` for several."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        ordered = self._ordered()
        total = math.fsum(w for _v, w in ordered)
        answers: list[float | None] = []
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise SketchError(f"quantile {q} is outside 0..1")
            if total <= 0.0:
                answers.append(None)
                continue
            rank = q * (total - 1.0)
            cumulative = 0.0
            answer = ordered[-1][0]
            for value, weight in ordered:
                cumulative += weight
                if cumulative > rank:
                    answer = value
                    break
            answers.append(answer)
        return answers

    def count_le(self, bounds: Iterable[float]) -> list[float]:
        """For each bound, the weight of the samples at most that bound (a sample
        within alpha of a bound may count on either side of it)."""
        ordered = self._ordered()
        answers = []
        for bound in bounds:
            answers.append(math.fsum(w for v, w in ordered if v <= bound))
        return answers


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_weight(out: bytearray, weight: float) -> None:
    if 0.0 <= weight < _MAX_EXACT and weight == int(weight):
        _put_varint(out, int(weight) << 1)
    else:
        out.append(1)
        out += _DOUBLE.pack(weight)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        data = self.data
        n = shift = 0
        while True:
            if self.pos >= len(data) or shift > 63:
                raise SketchError("truncated or overlong varint in a sketch")
            byte = data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if n > _MAX_VARINT:
                raise SketchError("a varint over 64 bits in a sketch")
            if byte < 0x80:
                return n
            shift += 7

    def weight(self) -> float:
        n = self.varint()
        if n != 1:
            if n & 1:
                raise SketchError("bad weight in a sketch")
            return float(n >> 1)
        if self.pos + 8 > len(self.data):
            raise SketchError("truncated weight in a sketch")
        (weight,) = _DOUBLE.unpack_from(self.data, self.pos)
        self.pos += 8
        if not (math.isfinite(weight) and 0.0 <= weight <= MAX_WEIGHT):
            raise SketchError("non-finite, negative or too large weight in a sketch")
        return float(weight)

    def store(self, lowest: int, highest: int) -> list[tuple[int, float]]:
        size = self.varint()
        if size > MAX_BINS:
            raise SketchError("too many bins in a sketch")
        out = []
        key = 0
        for i in range(size):
            z = self.varint()
            delta = (z >> 1) ^ -(z & 1)
            if i and delta <= 0:
                raise SketchError("bin keys out of order in a sketch")
            key += delta
            if not lowest <= key <= highest:
                raise SketchError("bin key out of range in a sketch")
            out.append((key, self.weight()))
        return out


def _decode(data: bytes) -> tuple[int, float, list[tuple[int, float]], list[tuple[int, float]]]:
    if len(data) < 4 or data[0] != VERSION:
        raise SketchError("not a version 1 sketch")
    (alpha_bp,) = _U16.unpack_from(data, 1)
    if not MIN_ALPHA_BP <= alpha_bp <= MAX_ALPHA_BP:
        raise SketchError("bad alpha in a sketch")
    reader = _Reader(data)
    reader.pos = 3
    zero = reader.weight()
    lowest, highest = key_range(alpha_bp)
    positive = reader.store(lowest, highest)
    negative = reader.store(lowest, highest)
    if reader.pos != len(data):
        raise SketchError("trailing bytes after a sketch")
    return alpha_bp, zero, positive, negative


if TYPE_CHECKING:
    from protocol._sketch import Sketch as Sketch
else:
    try:
        from protocol._sketch import Sketch
    except ImportError:  # built without a C compiler: the reference, same bytes
        Sketch = PySketch
