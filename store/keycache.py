"""API-key lookup with a TTL cache, shared by the HTTP service and the collector.

Both hits and misses are cached, so a flood of requests with bad keys costs one
database lookup per distinct key per TTL, not one per request. Revocation therefore
takes effect within the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from protocol.tokens import hash_token
from store.base import ApiKey, Store

_MISSING: Final = object()


class KeyCache:
    def __init__(
        self,
        store: Store,
        ttl: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.hits = 0
        self.misses = 0
        # token hash -> (expires at, key or None for "no such key")
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._inflight: dict[str, asyncio.Future[ApiKey | None]] = {}

    def peek(self, token: str) -> ApiKey | object | None:
        """The cached answer, or ``KeyCache.MISSING`` if a lookup is needed. Never waits."""
        entry = self._entries.get(hash_token(token))
        if entry is None or entry[0] < self.clock():
            return _MISSING
        self.hits += 1
        return entry[1]

    MISSING: Final = _MISSING

    async def get(self, token: str) -> ApiKey | None:
        """The key for ``token`` (revoked keys included: callers check ``revoked_at``),
        or None. Raises StoreUnavailable if it is not cached and the store is down."""
        key_hash = hash_token(token)
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] >= self.clock():
            self.hits += 1
            return entry[1]
        inflight = self._inflight.get(key_hash)
        if inflight is not None:  # one lookup per key, however many requests wait on it
            return await asyncio.shield(inflight)
        self.misses += 1
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            key = await self.store.find_key(key_hash)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        else:
            future.set_result(key)
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # bounded memory under a flood of distinct keys
            self._entries[key_hash] = (self.clock() + self.ttl, key)
            return key
        finally:
            del self._inflight[key_hash]


def usable(key: ApiKey | None, scope: str) -> bool:
    return key is not None and key.revoked_at is None and scope in key.scopes
