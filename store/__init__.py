"""Persistence: one Store protocol, two backends (SQLite, MySQL/MariaDB)."""

from store.base import (
    ApiKey,
    Batch,
    MetricInfo,
    PointRow,
    SketchRow,
    Store,
    StoreError,
    StoreUnavailable,
    WriteResult,
)
from store.open import open_store

__all__ = [
    "ApiKey",
    "Batch",
    "MetricInfo",
    "PointRow",
    "SketchRow",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WriteResult",
    "open_store",
]
