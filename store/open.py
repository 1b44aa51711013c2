"""Open a store from its URL: ``sqlite:///path`` or ``mysql://user:pass@host:port/db``."""

from __future__ import annotations

from store.base import Store


def open_store(url: str, *, pool_size: int = 4) -> Store:
    """A store for ``url``; nothing connects until first use (``ping`` or a query)."""
    if url.startswith("sqlite://"):
        from store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("mysql://", "mariadb://")):
        from store.mysql import MySQLStore

        return MySQLStore.from_url(url, pool_size=pool_size)
    raise ValueError("database URL must start with sqlite:// or mysql://")
