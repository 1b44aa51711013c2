"""Distinct counts for sets (``user:alice|s``): a HyperLogLog per metric-minute.

Apache DataSketches' ``hll_sketch`` (the library's C++ through its Python binding): a
well-kept, mergeable implementation whose serialized form is stable across versions and
languages. At ``LG_K`` = 14 its relative standard error is 0.8% (the issue asks for
<= 2%); below a few hundred members it keeps the members' hashes themselves (list and
set modes), so small counts are exact. A union of the sketches of two collectors is the
sketch of both member sets: sets merge across writers, minutes and hours like counters.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Final

import datasketches

LG_K: Final = 14
_TYPE: Final = datasketches.tgt_hll_type.HLL_4  # 8 KB at most per stored sketch


class DistinctCount:
    """The members seen of one set metric over some time."""

    __slots__ = ("_sketch",)

    def __init__(self) -> None:
        self._sketch = datasketches.hll_sketch(LG_K, _TYPE)

    def add(self, member: str) -> None:
        self._sketch.update(member)

    @property
    def estimate(self) -> float:
        return float(self._sketch.get_estimate())

    def to_bytes(self) -> bytes:
        return bytes(self._sketch.serialize_compact())


def union(blobs: Iterable[bytes]) -> bytes:
    """The serialized union of serialized sketches (raises ValueError on bad bytes)."""
    merged = datasketches.hll_union(LG_K)
    for blob in blobs:
        merged.update(_load(blob))
    return bytes(merged.get_result(_TYPE).serialize_compact())


def estimate(blob: bytes) -> float:
    return float(_load(blob).get_estimate())


# The library's deserializer trusts the bytes' fields: a list count above the list's
# capacity is a heap overflow, a bad lg_k or an HLL_4 "exception" register (15) without
# an exceptions table a segfault (found by fuzzing under valgrind: tests/test_hll.py).
# So a blob is read only in the form our own sketches are written in: the compact
# serialization of an HLL_4 sketch of lg_k LG_K, each field in its range, the length
# exactly what the counts say. What the library then reads, it reads safely.
_K: Final = 1 << LG_K
_LIST, _SET, _HLL = 0, 1, 2  # modes (byte 7, low 2 bits; HLL_4 is 0 in bits 2-3)
_PREINTS: Final = {_LIST: 2, _SET: 3, _HLL: 10}
_COMPACT: Final = 0x08
_FLAGS: Final = 0x04 | _COMPACT | 0x10  # empty, compact, out of order
_LIST_CAPACITY: Final = 7  # a list of 8 coupons becomes a set
_SET_LG_ARR: Final = range(5, LG_K - 3 + 1)
_HLL_HEADER: Final = 40
_HLL_4_BYTES: Final = _K // 2
_MAX_CUR_MIN: Final = 63  # a coupon's value has 6 bits: a union's cur_min is at most 63
_MAX_LG_AUX: Final = LG_K + 1  # the exceptions' hash table: up to k entries at 3/4 load
_HAS_NIBBLE_15: Final = bytes(
    int(byte & 0x0F == 0x0F or byte >> 4 == 0x0F) for byte in range(256)
)
_ESTIMATOR: Final = struct.Struct("<3d2I")  # hip, kxq0, kxq1, num_at_cur_min, aux_count


def _check(blob: bytes) -> None:
    """Raise ValueError unless ``blob`` has the form ``DistinctCount.to_bytes`` writes."""
    if len(blob) < 8:
        raise ValueError("not a HyperLogLog sketch: too short")
    mode, flags = blob[7], blob[5]
    if blob[1:4] != bytes((1, 7, LG_K)) or mode not in _PREINTS or blob[0] != _PREINTS[mode]:
        raise ValueError(f"not a HyperLogLog sketch (HLL_4, lg_k {LG_K}) of ours")
    if not flags & _COMPACT or flags & ~_FLAGS:
        raise ValueError("not a compact HyperLogLog sketch")
    if mode == _LIST:
        count = blob[6]
        if blob[4] != 3 or count > _LIST_CAPACITY or len(blob) != 8 + 4 * count:
            raise ValueError("a bad HyperLogLog list")
        return
    if mode == _SET:
        if len(blob) < 12 or blob[4] not in _SET_LG_ARR or blob[6] != 0:
            raise ValueError("a bad HyperLogLog set")
        count = int.from_bytes(blob[8:12], "little")
        if len(blob) != 12 + 4 * count:
            raise ValueError("a bad HyperLogLog set: its length is not its count's")
        return
    if len(blob) < _HLL_HEADER + _HLL_4_BYTES or blob[4] > _MAX_LG_AUX or blob[6] > _MAX_CUR_MIN:
        raise ValueError("a bad HyperLogLog array")
    hip, kxq0, kxq1, at_cur_min, aux_count = _ESTIMATOR.unpack_from(blob, 8)
    if not all(math.isfinite(x) and x >= 0.0 for x in (hip, kxq0, kxq1)):
        raise ValueError("a bad HyperLogLog array: its estimators are not finite")
    if at_cur_min > _K or aux_count > _K:
        raise ValueError("a bad HyperLogLog array: counts over k")
    if len(blob) != _HLL_HEADER + _HLL_4_BYTES + 4 * aux_count:
        raise ValueError("a bad HyperLogLog array: its length is not its count's")
    registers = blob[_HLL_HEADER : _HLL_HEADER + _HLL_4_BYTES]
    if aux_count == 0 and 1 in registers.translate(_HAS_NIBBLE_15):
        raise ValueError("a bad HyperLogLog array: an exception register without exceptions")


def _load(blob: bytes) -> datasketches.hll_sketch:
    _check(blob)
    try:
        return datasketches.hll_sketch.deserialize(blob)
    except Exception as exc:  # the binding raises RuntimeError and others on bad bytes
        raise ValueError(f"not a HyperLogLog sketch: {exc}") from exc
