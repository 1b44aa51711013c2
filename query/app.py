"""The aiohttp application factory: routes, middleware, shared state, resources.

Middleware, outermost first:

    metrics   counts and times every answer (by route template and status)
    errors    turns every error, ours or aiohttp's, into the JSON error model
    guard     API key, scope and rate limit for the routes that need them

Resources that need the running loop or closing (the Redis client and the rate
limiter, the group committer) are opened and closed in ``app.cleanup_ctx``. The store
and the spool are opened and closed by the owner of the app (``glowing_fiesta.runner``),
after the app's cleanup has committed (or spooled) what was still waiting.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Final, NamedTuple

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from collector.flusher import new_writer_id
from collector.spool import BatchWriter, Spool
from protocol.points import BatchReader
from protocol.units import parse_rate_limit
from query import graphite, ingest, read
from query.auth import guard_middleware
from query.commit import GroupCommitter
from query.config import HttpConfig
from query.errors import JSON, error_middleware, json_response
from query.openapi import openapi_document
from query.ratelimit import LocalRateLimiter, RedisRateLimiter
from query.selfmetrics import HttpStats, exposition, metrics_middleware, new_registry
from query.state import (
    BATCH_READER,
    COMMITTER,
    CONFIG,
    KEYS,
    KINDS,
    LIMITER,
    OPENAPI,
    REGISTRY,
    SCOPES,
    STATS,
    STORE,
    WALL_CLOCK,
)
from store.base import Store, StoreError
from store.keycache import KeyCache

REDIS_TIMEOUT: Final = 0.5  # seconds; past it a rate-limit check fails open


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    name: str
    scope: str | None  # the key scope it needs; None: no key


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        return json_response({"status": "unavailable", "error": str(exc)}, status=503)
    return json_response({"status": "ok"})


async def self_metrics(request: web.Request) -> web.Response:
    return exposition(request.app[REGISTRY])


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=JSON)


ROUTES: Final = (
    Route("POST", "/api/metrics/counter", ingest.post_counter, "ingest_counter", "write"),
    Route("POST", "/api/metrics/value", ingest.post_value, "ingest_value", "write"),
    Route("POST", "/api/metrics/batch", ingest.post_batch, "ingest_batch", "write"),
    Route("GET", "/api/metrics", read.list_metrics, "list_metrics", "read"),
    Route("GET", "/api/metrics/{name}", read.get_series, "get_series", "read"),
    Route("GET", "/api/openapi.json", openapi_json, "openapi", None),
    Route("GET", "/healthz", healthz, "healthz", None),
    Route("GET", "/metrics", self_metrics, "self_metrics", None),
    # The Graphite read API (query/graphite.py), for Grafana's Graphite data source.
    Route("GET", "/render", graphite.render, "graphite_render_get", "read"),
    Route("POST", "/render", graphite.render, "graphite_render_post", "read"),
    Route("GET", "/metrics/find", graphite.find, "graphite_find_get", "read"),
    Route("POST", "/metrics/find", graphite.find, "graphite_find_post", "read"),
    Route("GET", "/metrics/expand", graphite.expand, "graphite_expand_get", "read"),
    Route("POST", "/metrics/expand", graphite.expand, "graphite_expand_post", "read"),
    Route("GET", "/functions", graphite.functions, "graphite_functions", "read"),
    Route("GET", "/version", graphite.version, "graphite_version", "read"),
    Route("GET", "/tags/autoComplete/tags", graphite.tags_autocomplete, "graphite_tags",
          "read"),
    Route("GET", "/tags/autoComplete/values", graphite.tags_autocomplete,
          "graphite_tag_values", "read"),
)


def make_app(
    config: HttpConfig,
    store: Store,
    *,
    write: BatchWriter | None = None,
    writer_id: str | None = None,
    spool: Spool | None = None,
    drain_spool: bool = False,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    redis_prefix: str = "gf:ratelimit:",
) -> web.Application:
    """The HTTP service on an already opened store (its owner closes it).

    ``write`` commits a group's batch (default ``store.write_batch``). ``spool``: an
    open spool (its owner closes it, after the app's cleanup) where a batch goes when
    the store is down, acknowledged once fsync'd (``query.commit``); without one, ingest
    answers 503 while the store is down. ``drain_spool``: the app replays that spool
    into the store itself (a spool no collector drains). ``clock`` times the key cache
    and in-process rate limits, ``wall_clock`` is "now" for timestamps; tests pass their
    own. Raises ValueError for a default rate limit that does not parse.
    """
    try:
        parse_rate_limit(config.default_rate_limit)
    except ValueError as exc:  # else every request would fail
        raise ValueError(f"--default-rate-limit: {exc}") from None
    stats = HttpStats()
    app = web.Application(client_max_size=config.max_body_size)
    app[CONFIG] = config
    app[STORE] = store
    app[STATS] = stats
    app[KEYS] = KeyCache(store, config.key_cache_ttl, clock=clock)
    app[KINDS] = {}
    app[BATCH_READER] = BatchReader()
    app[WALL_CLOCK] = wall_clock
    app[SCOPES] = {route.name: route.scope for route in ROUTES if route.scope is not None}
    app[OPENAPI] = orjson.dumps(openapi_document(config))
    registry, latency = new_registry(stats, lambda: _component_counters(app))
    app[REGISTRY] = registry
    app.middlewares.extend([metrics_middleware(stats, latency), error_middleware,
                            guard_middleware])
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    app.cleanup_ctx.append(_rate_limiter(redis_prefix, clock))
    app.cleanup_ctx.append(_committer(write or store.write_batch, writer_id, spool, drain_spool))
    return app


def _rate_limiter(
    prefix: str, clock: Callable[[], float]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        url = app[CONFIG].redis_url
        if url is None:
            app[LIMITER] = LocalRateLimiter(clock=clock)
            yield
            return
        client = Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 1),  # one reconnect (a restarted Redis), no backoff
        )
        app[LIMITER] = RedisRateLimiter(client, prefix=prefix, clock=clock)
        try:
            yield
        finally:
            await client.aclose()

    return context


def _committer(
    write: BatchWriter, writer_id: str | None, spool: Spool | None, drain: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        committer = GroupCommitter(write, writer_id or new_writer_id("http"),
                                   window=app[CONFIG].commit_window, spool=spool,
                                   drain=drain)
        app[COMMITTER] = committer
        try:
            yield
        finally:
            await committer.close()  # answer what waits before the store closes

    return context


def _component_counters(app: web.Application) -> dict[str, tuple[str, float]]:
    """Counters owned by the key cache, the limiter and the committer, for /metrics."""
    keys = app[KEYS]
    out: dict[str, tuple[str, float]] = {
        "gf_http_key_cache_hits": ("API-key lookups answered from the cache.", keys.hits),
        "gf_http_key_cache_misses": ("API-key lookups that asked the store.", keys.misses),
    }
    limiter = app.get(LIMITER)
    fail_open = limiter.fail_open if isinstance(limiter, RedisRateLimiter) else 0
    out["gf_http_rate_limit_fail_open"] = (
        "Requests let through unchecked because Redis failed.", fail_open)
    if isinstance(limiter, RedisRateLimiter):
        out["gf_http_rate_limit_redis_calls"] = (
            "Rate-limit reservations made in Redis.", limiter.redis_calls)
    committer = app.get(COMMITTER)
    if committer is not None:
        s = committer.stats
        out["gf_http_commit_batches"] = ("Group commits written (one transaction each).",
                                         s.batches)
        out["gf_http_commit_requests"] = ("Ingest requests acknowledged by group commits.",
                                          s.requests)
        out["gf_http_commit_rows"] = ("Point rows written by group commits.", s.rows)
        out["gf_http_commit_retries"] = ("Commit attempts repeated after StoreUnavailable.",
                                         s.retries)
        out["gf_http_commit_failures"] = ("Group commits that failed for good.", s.failures)
        out["gf_http_commit_pending"] = ("Groups waiting to be committed.", committer.pending)
        if committer.spool is not None:
            out["gf_http_commit_spooled"] = (
                "Group commits acknowledged once spooled (the database was down).", s.spooled)
            out["gf_http_commit_spooled_rows"] = (
                "Point rows in the group commits spooled.", s.spooled_rows)
            out["gf_http_commit_spool_failures"] = (
                "Group commits the spool could not take.", s.spool_failures)
            out["gf_http_spool_replayed"] = (
                "Spooled batches replayed into the database by this service.", s.replayed)
            out["gf_http_spool_replayed_rows"] = (
                "Point rows of the spooled batches replayed.", s.replayed_rows)
            out["gf_http_spool_replay_conflicts"] = (
                "Metrics whose replayed points were dropped for a kind conflict.",
                s.replay_conflicts)
            out["gf_http_spool_pending"] = ("Batches waiting in the spool.",
                                            committer.spool.batches)
    return out
