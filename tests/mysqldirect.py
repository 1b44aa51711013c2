"""A plain PyMySQL connection for a mysql:// URL (and ``fetch_all`` for either
backend's URL): tests seed and check the database directly, never through the store
under test."""

from __future__ import annotations

import sqlite3
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


def fetch_all(url: str, query: str) -> list[tuple[Any, ...]]:
    """Every row of ``query`` on the database of a sqlite:/// or mysql:// URL."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()
    server = connect(url)
    try:
        with server.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    finally:
        server.close()
