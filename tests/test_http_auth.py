"""API keys made and revoked with the CLI, against the live app: scopes, revocation
within the key-cache TTL, negative caching, per-key rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner, Result

from glowing_fiesta.cli import main
from query.app import make_app
from query.state import KEYS
from store import Store
from tests.http_support import assert_error, auth, config, new_key, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def cli(*args: str) -> Result:
    """Run the real CLI command (it runs its own event loop, hence the thread)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


async def test_cli_key_works_until_revoked_then_fails_within_the_ttl(
    store: Store, database_url: str
) -> None:
    created = await cli("keys", "create", "ci-writer", "--database-url", database_url)
    token = created.stdout.strip()
    assert token.startswith("gf_") and len(token) == 35
    clock = FakeClock()
    async with serve(store, config(key_cache_ttl=5.0), clock=clock) as api:
        async def status() -> int:
            response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                      headers=auth(token))
            return int(response.status)

        assert await status() == 200
        revoked = await cli("keys", "revoke", "ci-writer", "--database-url", database_url)
        assert "revoked 1 key" in revoked.stdout
        clock.now += 4.9
        assert await status() == 200  # still cached: revocation waits for the TTL
        clock.now += 0.2
        response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                  headers=auth(token))
        assert response.status == 401
        body = await response.json()
        assert_error(body, "unauthorized")
        assert "revoked" in body["error"]["message"]


async def test_cli_key_without_read_scope_cannot_query(store: Store, database_url: str) -> None:
    created = await cli("keys", "create", "ingest-only", "--scopes", "write",
                        "--database-url", database_url)
    token = created.stdout.strip()
    async with serve(store) as api:
        response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                  headers=auth(token))
        assert response.status == 200
        for path in ("/api/metrics", "/api/metrics/x"):
            response = await api.get(path, headers=auth(token))
            assert response.status == 403
            body = await response.json()
            assert_error(body, "forbidden")
            assert "'read'" in body["error"]["message"]


async def test_unknown_keys_are_cached_too(store: Store) -> None:
    """A flood of requests with one bad key costs one store lookup per TTL."""
    async with serve(store, config(key_cache_ttl=60)) as api:
        bad = "gf_" + "b" * 32
        for _ in range(20):
            response = await api.get("/api/metrics", headers=auth(bad))
            assert response.status == 401
        keys = api.server.app[KEYS]
        assert (keys.misses, keys.hits) == (1, 19)
        text = await (await api.get("/metrics")).text()
        assert "gf_http_key_cache_misses_total 1.0" in text
        assert "gf_http_key_cache_hits_total 19.0" in text


async def test_a_keys_own_rate_limit_beats_the_default(store: Store) -> None:
    slow = await new_key(store, rate_limit="1/m")
    default = await new_key(store)  # the server default below: 3/m
    async with serve(store, config(default_rate_limit="3/m")) as api:
        async def statuses(token: str, n: int) -> list[int]:
            out: list[int] = []
            for _ in range(n):
                response: Any = await api.get("/api/metrics", headers=auth(token))
                out.append(response.status)
            return out

        assert await statuses(slow, 2) == [200, 429]
        assert await statuses(default, 4) == [200, 200, 200, 429]


async def test_a_default_rate_limit_that_does_not_parse_is_refused_at_start(
    store: Store,
) -> None:
    with pytest.raises(ValueError, match="--default-rate-limit"):
        make_app(config(default_rate_limit="lots"), store)
