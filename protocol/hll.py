"""Distinct counts for sets (``user:alice|s``): a HyperLogLog per metric-minute.

Apache DataSketches' ``hll_sketch`` (the library's C++ through its Python binding): a
well-kept, mergeable implementation whose serialized form is stable across versions and
languages. At ``LG_K`` = 14 its relative standard error is 0.8% (the issue asks for
<= 2%); below a few hundred members it keeps the members' hashes themselves (list and
set modes), so small counts are exact. A union of the sketches of two collectors is the
sketch of both member sets: sets merge across writers, minutes and hours like counters.
"""

from __future__ import annotations

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


def _load(blob: bytes) -> datasketches.hll_sketch:
    try:
        return datasketches.hll_sketch.deserialize(blob)
    except Exception as exc:  # the binding raises RuntimeError and others on bad bytes
        raise ValueError(f"not a HyperLogLog sketch: {exc}") from exc
