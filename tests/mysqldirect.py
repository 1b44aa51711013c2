"""A plain PyMySQL connection for a mysql:// URL: tests seed and check the server
directly, never through the store under test."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pymysql


def connect(url: str, *, database: bool = True) -> Any:
    """Autocommit connection to the server of ``url`` (and its database, unless
    ``database=False``, for creating and dropping databases)."""
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") if database else None,
        connect_timeout=5,
        autocommit=True,
    )
