"""API-key lookup with a TTL cache, shared by the HTTP service and the collector.

Both hits and misses are cached, so a flood of requests with bad keys costs one
database lookup per distinct key per TTL, not one per request. Revocation therefore
takes effect within the TTL. ``max_concurrent`` caps the lookups that run at once (the
collector's unauthenticated UDP must not hold every connection of the pool); more wait
their turn.
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
        max_concurrent: int | None = None,
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
        self._slots = None if max_concurrent is None else asyncio.Semaphore(max_concurrent)
        self.lookups_running = 0  # store lookups in progress now

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
            key = await self._find(key_hash)
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


    async def _find(self, key_hash: str) -> ApiKey | None:
        if self._slots is None:
            return await self._find_now(key_hash)
        async with self._slots:
            return await self._find_now(key_hash)

    async def _find_now(self, key_hash: str) -> ApiKey | None:
        self.lookups_running += 1
        try:
            return await self.store.find_key(key_hash)
        finally:
            self.lookups_running -= 1


def usable(key: ApiKey | None, scope: str) -> bool:
    return key is not None and key.revoked_at is None and scope in key.scopes
