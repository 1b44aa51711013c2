"""A metric-minute's summary beside its (cnt, sum, min, max): what percentiles, distinct
counts and a gauge's last value are read from. One blob per metric and minute (and
hour), merged by kind when two writers or two flushes meet (store.base.SketchRow):

- value: a quantile sketch (protocol.sketch): merging adds the bins;
- set: a HyperLogLog (protocol.hll): merging is the union;
- gauge: the last value, a little-endian float64: the later write wins (by arrival at
  the store: across writers, the latest flush).

Counters have none.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

from protocol import hll
from protocol.names import Kind
from protocol.sketch import Sketch, SketchError

_DOUBLE: Final = struct.Struct("<d")


def encode_last(value: float) -> bytes:
    return _DOUBLE.pack(value)


def decode_last(data: bytes) -> float:
    if len(data) != 8:
        raise SketchError("a gauge's last value is 8 bytes")
    (value,) = _DOUBLE.unpack(data)
    if not math.isfinite(value):
        raise SketchError("a gauge's last value is not finite")
    return float(value)


def merge(kind: Kind, blobs: Sequence[bytes]) -> bytes:
    """The summary of all of ``blobs`` (oldest first), of a metric of ``kind``.
    Raises ValueError (SketchError) on bytes that are not a summary of that kind."""
    if not blobs:
        raise ValueError("nothing to merge")
    if kind == "gauge":
        decode_last(blobs[-1])
        return blobs[-1]
    if kind == "set":
        return hll.union(blobs)
    if kind == "value":
        if len(blobs) == 1:
            Sketch.from_bytes(blobs[0])  # validated: never store what cannot be read
            return blobs[0]
        sketch = Sketch.from_bytes(blobs[0])
        for blob in blobs[1:]:
            sketch.merge_bytes(blob)
        return sketch.to_bytes()
    raise ValueError(f"a {kind} has no summary")
