"""Per-key token buckets: in-process, and shared through a real Redis.

Redis keys live under a prefix unique to each test and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from protocol.units import RateLimit, parse_rate_limit
from query.ratelimit import Decision, LocalRateLimiter, RedisRateLimiter
from store import Store
from tests.http_support import assert_error, auth, config, new_key, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- in-process ---------------------------------------------------------------------


def test_local_bucket_bursts_refills_and_says_when() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock)
    limit = parse_rate_limit("3/s")
    assert [limiter.take("k", limit).remaining for _ in range(3)] == [2, 1, 0]
    denied = limiter.take("k", limit)
    assert denied == Decision(False, 3, 0, pytest.approx(1 / 3))
    assert denied.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0",
                                "Retry-After": "1"}
    clock.now += 0.5  # 1.5 tokens back
    assert limiter.take("k", limit).allowed
    assert not limiter.take("k", limit).allowed
    assert limiter.take("other", limit).allowed  # buckets are per key
    clock.now += 60
    assert limiter.take("k", limit).remaining == 2  # refilled to the burst, not beyond


def test_retry_after_is_whole_seconds() -> None:
    limiter = LocalRateLimiter(clock=FakeClock())
    limit = parse_rate_limit("1/h")
    assert limiter.take("k", limit).allowed
    denied = limiter.take("k", limit)
    assert denied.headers()["Retry-After"] == "3600"


# -- Redis --------------------------------------------------------------------------


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    prefix = f"gf-test:{secrets.token_hex(6)}:"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Two independent connections: two processes, as far as Redis can tell."""
    opened = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    yield opened
    for client in opened:
        await client.aclose()


async def test_lease_size_is_small_and_bounded() -> None:
    client = Redis()  # never connects
    limiter = RedisRateLimiter(client, max_lease=50)
    await client.aclose()
    assert limiter.lease_size(parse_rate_limit("5/m")) == 1
    assert limiter.lease_size(parse_rate_limit("100/s")) == 5  # 50 ms of the rate
    assert limiter.lease_size(parse_rate_limit("20/s")) == 1
    assert limiter.lease_size(parse_rate_limit("100000/s")) == 50  # max_lease
    assert limiter.lease_size(RateLimit(rate=1000, burst=30)) == 3  # a tenth of the burst


@pytest.mark.redis
async def test_one_bucket_shared_by_two_limiters(
    clients: list[Redis], redis_prefix: str
) -> None:
    first, second = (RedisRateLimiter(c, prefix=redis_prefix) for c in clients)
    limit = parse_rate_limit("5/m")  # lease of 1: exact accounting
    assert [(await first.acquire("k", limit)).remaining for _ in range(3)] == [4, 3, 2]
    assert [(await second.acquire("k", limit)).allowed for _ in range(3)] == [True, True, False]
    denied = await first.acquire("k", limit)
    assert not denied.allowed and 1 <= int(denied.headers()["Retry-After"]) <= 12
    ttl = await clients[0].pttl(redis_prefix + "k")
    assert 0 < ttl <= 61_000  # idle buckets expire once they would be full again


@pytest.mark.redis
async def test_leases_save_round_trips_and_refusals_are_remembered(
    clients: list[Redis], redis_prefix: str
) -> None:
    limiter = RedisRateLimiter(clients[0], prefix=redis_prefix, max_lease=50)
    limit = parse_rate_limit("300000/m")  # 5000/s: lease 50
    for _ in range(200):
        assert (await limiter.acquire("k", limit)).allowed
    assert limiter.redis_calls == 4

    tight = parse_rate_limit("1/h")
    assert (await limiter.acquire("t", tight)).allowed
    calls = limiter.redis_calls
    for _ in range(100):  # a client hammering past its limit
        assert not (await limiter.acquire("t", tight)).allowed
    assert limiter.redis_calls == calls + 1  # one call learnt the wait; the rest local


@pytest.mark.redis
async def test_concurrent_requests_share_one_reservation(
    clients: list[Redis], redis_prefix: str
) -> None:
    limiter = RedisRateLimiter(clients[0], prefix=redis_prefix, max_lease=50)
    limit = parse_rate_limit("6000/m")  # 100/s: lease 5, grown by the waiters
    decisions = await asyncio.gather(*(limiter.acquire("k", limit) for _ in range(40)))
    assert all(d.allowed for d in decisions)
    assert limiter.redis_calls <= 3


@pytest.mark.redis
async def test_leased_tokens_bound_the_error_across_processes(
    clients: list[Redis], redis_prefix: str
) -> None:
    """With leases of up to 16 tokens, two processes together admit no more than the
    bucket holds, and at most one lease fewer."""
    first, second = (RedisRateLimiter(c, prefix=redis_prefix, lease_seconds=100)
                     for c in clients)
    limit = parse_rate_limit("600/h")  # refills 1 token per 6 s: negligible here
    lease = first.lease_size(limit)
    assert lease == 16
    admitted = 0
    for _ in range(100):
        admitted += (await first.acquire("k", limit)).allowed
    while (await second.acquire("k", limit)).allowed:
        admitted += 1
    assert 600 - lease <= admitted <= 600 + 1


async def test_redis_unreachable_fails_open_without_a_timeout_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    client = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(client, clock=clock, retry_after_failure=1.0)
    limit = parse_rate_limit("1/h")
    try:
        for _ in range(3):
            assert (await limiter.acquire("k", limit)).allowed  # over the limit: open
        assert (limiter.fail_open, limiter.redis_calls) == (3, 1)  # one attempt per second
        clock.now += 1.5
        assert (await limiter.acquire("k", limit)).allowed
        assert (limiter.fail_open, limiter.redis_calls) == (4, 2)
        # logged once: the second failure came within the log interval
        assert caplog.text.count("failing open") == 1
    finally:
        await client.aclose()


# -- through the app ------------------------------------------------------------------


async def post(api: Any, token: str) -> Any:
    return await api.post("/api/metrics/counter", json={"metric": "limited"},
                          headers=auth(token))


@pytest.mark.redis
async def test_two_app_instances_share_a_key_budget(
    sqlite_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Two servers (as two `serve` processes would) with one Redis: the second sees
    what the first spent."""
    from store import open_store

    store: Store = open_store(sqlite_url)
    await store.migrate()
    try:
        token = await new_key(store, rate_limit="5/m")
        http = config(redis_url=redis_url)
        async with serve(store, http, redis_prefix=redis_prefix) as one, \
                serve(store, http, redis_prefix=redis_prefix) as two:
            assert [(await post(one, token)).status for _ in range(3)] == [200] * 3
            response = await post(two, token)
            assert response.status == 200
            assert response.headers["X-RateLimit-Remaining"] == "1"
            assert (await post(two, token)).status == 200
            response = await post(two, token)
            assert response.status == 429
            assert_error(await response.json(), "rate_limited")
            assert response.headers["X-RateLimit-Limit"] == "5"
            assert int(response.headers["Retry-After"]) >= 1
            assert (await post(one, token)).status == 429
            text = await (await two.get("/metrics")).text()
            assert "gf_http_rate_limited_total 1.0" in text
            assert "gf_http_rate_limit_fail_open_total 0.0" in text
    finally:
        await store.close()


async def test_app_serves_when_redis_is_unreachable(store: Store) -> None:
    token = await new_key(store, rate_limit="1/h")
    async with serve(store, config(redis_url="redis://127.0.0.1:1")) as api:
        statuses = [(await post(api, token)).status for _ in range(3)]
        assert statuses == [200, 200, 200]  # over the limit, but failing open
        text = await (await api.get("/metrics")).text()
        assert "gf_http_rate_limit_fail_open_total 3.0" in text
        assert "gf_http_points_accepted_total 3.0" in text
