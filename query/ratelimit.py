"""Per-key token buckets: in-process, or shared by every HTTP process through Redis.

A key's limit is a ``RateLimit`` (``rate`` tokens per second, at most ``burst`` saved
up); each request spends one token. Both limiters answer a ``Decision`` that carries
the ``X-RateLimit-*`` and ``Retry-After`` headers.

The shared limiter: one Lua script, leases, and a local memory of refusals
--------------------------------------------------------------------------
The bucket lives in one Redis hash per key, updated only by ``TAKE_SCRIPT`` (run with
EVALSHA, so atomic, and timed by Redis's own clock, so process clocks may disagree).
A Redis round trip costs ~150 µs, several times the rest of a request, so a process
does not spend one per request:

- **Leases.** A process takes a small lease of tokens from the shared bucket at once
  (``lease_size``: ~50 ms worth of the key's rate, at most a tenth of its burst, at
  most ``max_lease``, at least 1) and spends them locally without Redis until they
  run out. A key at 1,000 requests/s costs ~20 Redis calls/s, not 1,000.
- **Refusals are remembered.** When Redis grants nothing, the script says how long
  until the next token; until then the process refuses that key locally, so a
  client hammering past its limit costs no Redis traffic.
- **One call in flight per key.** Concurrent requests that find the lease empty share
  one reservation instead of racing N calls.

Bounds. Tokens are taken from the shared bucket *before* they are spent, so all
processes together never admit more than the bucket grants; the only slack is in
time: a leased token is spent at most ``lease_ttl`` after Redis granted it (unspent
tokens lapse then, they are never returned). So over any interval the whole fleet
admits at most what one exact bucket would, plus the tokens leased but unspent at the
interval's start: at most P x lease for P processes. The same P x lease is the most a
client can be refused early (tokens stranded in other processes' leases). Keys with
small limits get a lease of 1, i.e. exact accounting with one call per request.

Redis unreachable or failing: fail open (the request is served), count it in
``fail_open``, log at most every ``LOG_INTERVAL`` seconds, and do not try Redis again
for ``retry_after_failure`` seconds, so an outage adds no per-request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from protocol.units import RateLimit

log = logging.getLogger(__name__)

LOG_INTERVAL: Final = 10.0
MAX_BUCKETS: Final = 100_000  # per process; past it, state is dropped (buckets refill)

# KEYS[1]: the bucket hash. ARGV: rate (tokens/s), burst, tokens wanted.
# Returns {tokens granted, tokens left (string), seconds until one token (string)}:
# Lua numbers come back from Redis as integers, hence the strings.
TAKE_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
elseif now > last then
  tokens = math.min(burst, tokens + (now - last) * rate)
  last = now
end
local granted = math.max(0, math.min(wanted, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(last))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
local wait = 0
if granted == 0 then
  wait = (1 - tokens) / rate
end
return {granted, tostring(tokens), tostring(wait)}
"""


class Decision(NamedTuple):
    allowed: bool
    limit: int  # the burst: X-RateLimit-Limit
    remaining: int  # whole tokens left (shared: as last seen): X-RateLimit-Remaining
    retry_after: float  # seconds until a token is available; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
        }
        if not self.allowed:  # whole seconds (RFC 9110), never 0: "now" would be a lie
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RateLimiter(Protocol):
    async def acquire(self, bucket: str, limit: RateLimit) -> Decision:
        """Spend one token of ``bucket`` (an opaque per-key id) under ``limit``."""
        ...


class LocalRateLimiter:
    """Token buckets in this process's memory: exact, free, not shared."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # bucket -> [tokens, last refill]

    async def acquire(self, bucket: str, limit: RateLimit) -> Decision:
        return self.take(bucket, limit)

    def take(self, bucket: str, limit: RateLimit) -> Decision:
        now = self.clock()
        state = self._buckets.get(bucket)
        if state is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()  # bounded memory; every bucket starts full again
            state = self._buckets[bucket] = [limit.burst, now]
        else:
            state[0] = min(limit.burst, state[0] + (now - state[1]) * limit.rate)
            state[1] = now
        burst = int(limit.burst)
        if state[0] >= 1.0:
            state[0] -= 1.0
            return Decision(True, burst, int(state[0]), 0.0)
        return Decision(False, burst, 0, (1.0 - state[0]) / limit.rate)


@dataclass(slots=True)
class _Lease:
    tokens: int = 0  # granted by Redis, not yet spent here
    expires: float = 0.0  # when unspent tokens lapse (local monotonic clock)
    remaining: float = 0.0  # tokens left in the shared bucket after our last call
    denied_until: float = 0.0  # Redis said "none left" until then
    waiters: int = 0  # requests waiting on the reservation in flight
    inflight: asyncio.Future[None] | None = None


class RedisRateLimiter:
    """Token buckets shared through Redis, with local leases (see the module doc)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "gf:ratelimit:",
        clock: Callable[[], float] = time.monotonic,
        lease_seconds: float = 0.05,
        max_lease: int = 50,
        lease_ttl: float = 1.0,
        retry_after_failure: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.max_lease = max_lease
        self.lease_ttl = lease_ttl
        self.retry_after_failure = retry_after_failure
        self.redis_calls = 0
        self.fail_open = 0  # requests let through because Redis failed
        self._script = client.register_script(TAKE_SCRIPT)
        self._leases: dict[str, _Lease] = {}
        self._down_until = 0.0
        self._last_log = -math.inf
        self._unlogged = 0

    def lease_size(self, limit: RateLimit) -> int:
        """Tokens taken per Redis call for ``limit``."""
        size = min(limit.rate * self.lease_seconds, limit.burst / 10, self.max_lease)
        return max(1, int(size))

    async def acquire(self, bucket: str, limit: RateLimit) -> Decision:
        lease = self._leases.get(bucket)
        if lease is None:
            if len(self._leases) >= MAX_BUCKETS:
                self._leases.clear()
            lease = self._leases[bucket] = _Lease()
        burst = int(limit.burst)
        while True:
            now = self.clock()
            if lease.tokens > 0 and now < lease.expires:
                lease.tokens -= 1
                return Decision(True, burst, int(lease.remaining) + lease.tokens, 0.0)
            if now < lease.denied_until:
                return Decision(False, burst, 0, lease.denied_until - now)
            if now < self._down_until:
                return self._open(burst)
            if lease.inflight is not None:  # share the reservation another request makes
                lease.waiters += 1
                try:
                    await asyncio.shield(lease.inflight)
                finally:
                    lease.waiters -= 1
                continue
            if not await self._reserve(bucket, lease, limit, now):
                return self._open(burst)

    async def _reserve(self, bucket: str, lease: _Lease, limit: RateLimit, now: float) -> bool:
        """Take a lease from Redis into ``lease``; False if Redis failed."""
        future = asyncio.get_running_loop().create_future()
        lease.inflight = future
        wanted = min(self.lease_size(limit) + lease.waiters, max(self.max_lease, 1))
        try:
            self.redis_calls += 1
            granted, left, wait = await self._script(
                keys=[self.prefix + bucket], args=[limit.rate, limit.burst, wanted]
            )
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._down_until = self.clock() + self.retry_after_failure
            self._log_failure(exc)
            return False
        finally:
            lease.inflight = None
            future.set_result(None)
        lease.tokens = int(granted)
        lease.expires = now + self.lease_ttl
        lease.remaining = float(left)
        if not lease.tokens:
            lease.denied_until = now + float(wait)
        return True

    def _open(self, burst: int) -> Decision:
        self.fail_open += 1
        self._unlogged += 1
        return Decision(True, burst, burst, 0.0)

    def _log_failure(self, exc: BaseException) -> None:
        now = self.clock()
        if now - self._last_log >= LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "rate limiting through Redis failed (%s: %s); failing open for %.1fs "
                "(%d request(s) let through unchecked since the last message)",
                type(exc).__name__, exc, self.retry_after_failure, self._unlogged,
            )
            self._unlogged = 0
