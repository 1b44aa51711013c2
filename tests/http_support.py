"""Helpers shared by the HTTP tests: a live app on port 0, API keys, store snapshots,
and a real scrape of a /metrics endpoint.

Holds no tests itself. The app runs in aiohttp's real ``TestServer`` (a real socket on
an ephemeral port, kept open) and is driven through a real ``TestClient``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from protocol.tokens import display_prefix, generate_token, hash_token
from query.app import make_app
from query.config import HttpConfig
from store.base import Store

# Generous by default: tests that are not about rate limits must never meet one.
TEST_CONFIG = HttpConfig(default_rate_limit="1000000/s", commit_window=0.002)


def config(**changes: Any) -> HttpConfig:
    return replace(TEST_CONFIG, **changes)


@asynccontextmanager
async def serve(
    store: Store, http_config: HttpConfig | None = None, **app_kwargs: Any
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client of a live app on 127.0.0.1:0; server and client closed on exit."""
    app = make_app(http_config or TEST_CONFIG, store, **app_kwargs)
    async with TestServer(app) as server, TestClient(server) as client:
        yield client


async def new_key(
    store: Store,
    *,
    scopes: tuple[str, ...] = ("read", "write"),
    rate_limit: str | None = None,
    name: str | None = None,
) -> str:
    """Create a key the way ``keys create`` does; return its token."""
    token = generate_token()
    await store.create_key(name or f"test-{token[3:11]}", hash_token(token),
                           display_prefix(token), scopes, rate_limit, int(time.time()))
    return token


def auth(token: str) -> dict[str, str]:
    return {"X-API-Key": token}


async def stored_points(store: Store) -> dict[str, list[tuple[int, float, float, float, float]]]:
    """Every stored metric's per-second rows: the ground truth after a request."""
    out: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for info in await store.list_metrics("", 10_000, None):
        rows = await store.read_buckets(info.id, 0, 2**40, 1)
        out[info.name] = [(r.ts, r.cnt, r.sum, r.mn, r.mx) for r in rows]
    return out


def assert_error(body: Any, code: str) -> None:
    """The one error model: {"error": {"code", "message", "details": [...]}}."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    for detail in error["details"]:
        assert set(detail) == {"index", "field", "message"}, detail


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from a real GET /metrics."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return figures[(name, tuple(sorted(labels.items())))]
