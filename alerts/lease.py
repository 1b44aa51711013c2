"""The evaluator's lease: a row in the database, so that one process evaluates and
notifies at a time among all those (on any host) that share the database.

A holder renews the lease every evaluation; one that stops (killed, partitioned, its
database connection gone) loses it when it expires, and the next process to try takes
it over. The save of an evaluation checks the lease in its own transaction
(``Store.save_evaluation``), so a process that lost it unawares stores nothing. Expiry
compares the holders' clocks: hosts sharing a database keep them in sync (NTP); a skew
shorter than the TTL is harmless.
"""

from __future__ import annotations

import secrets
import socket
from typing import Final

from store.base import Store

NAME: Final = "alerts"


def new_holder() -> str:
    """This process's name in the lease row: host, then random (unique per process)."""
    return f"{socket.gethostname()[:40]}-{secrets.token_hex(6)}"


class Lease:
    def __init__(self, store: Store, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = holder or new_holder()
        self.held = False

    async def acquire(self, now: float) -> bool:
        """Take or renew the lease; True while this process holds it. Raises StoreError."""
        self.held = await self.store.acquire_lease(NAME, self.holder, now, self.ttl)
        return self.held

    async def release(self) -> None:
        """Give the lease up (at shutdown): another process takes over at once."""
        if self.held:
            await self.store.release_lease(NAME, self.holder)
            self.held = False
