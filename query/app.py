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

from protocol.points import BatchReader
from protocol.units import parse_rate_limit
from query import alerts, graphite, ingest, read, stathat
from query.auth import guard_middleware
from query.commit import GroupCommitter
from query.config import HttpConfig
from query.dashboard import add_routes as add_dashboard_routes
from query.errors import JSON, error_middleware, json_response
from query.openapi import openapi_document
from query.ratelimit import LocalRateLimiter, RedisRateLimiter
from query.selfmetrics import HttpStats, exposition, metrics_middleware, new_registry
from query.state import (
    BATCH_READER,
    COMMITTER,
    CONFIG,
    EXTRA_METRICS,
    KEYS,
    KINDS,
    LIMITER,
    OPENAPI,
    REGISTRY,
    SCOPES,
    STATS,
    STORE,
    WALL_CLOCK,
    WRITER,
)
from store.base import Store, StoreError
from store.durable import BatchWrite, DurableWriter, WriterStats, new_writer_id
from store.keycache import KeyCache
from store.spool import Quarantine, Spool

REDIS_TIMEOUT: Final = 0.5  # seconds; past it a rate-limit check fails open
SHUTDOWN_WRITE_TIMEOUT: Final = 10.0  # seconds to write (or spool) what waits at shutdown


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    name: str
    scope: str | None  # the key scope it needs; None: no key


async def healthz(request: web.Request) -> web.Response:
    """503 when the store does not answer; else 200, "ok" or "degraded" (refused rows
    in the quarantine, writes failing), with the write backlog."""
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        return json_response({"status": "unavailable", "error": str(exc)}, status=503)
    return json_response(await request.app[COMMITTER].writer.health())


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
    Route("GET", "/api/metrics/{name}/histogram", read.get_histogram, "get_histogram",
          "read"),
    # Alert rules: read keys list and read them, admin keys change them.
    Route("POST", "/api/alerts", alerts.create_rule, "alerts_create", "admin"),
    Route("GET", "/api/alerts", alerts.list_rules, "alerts_list", "read"),
    Route("GET", "/api/alerts/{id}", alerts.get_rule, "alerts_get", "read"),
    Route("PUT", "/api/alerts/{id}", alerts.replace_rule, "alerts_replace", "admin"),
    Route("DELETE", "/api/alerts/{id}", alerts.delete_rule, "alerts_delete", "admin"),
    Route("GET", "/api/alerts/{id}/history", alerts.rule_history, "alerts_history", "read"),
    Route("GET", "/api/openapi.json", openapi_json, "openapi", None),
    Route("GET", "/healthz", healthz, "healthz", None),
    Route("GET", "/metrics", self_metrics, "self_metrics", None),
    # StatHat's API: the key is a form or JSON field, checked by the handlers
    # (query.stathat), so no scope here.
    Route("GET", "/ez", stathat.ez_get, "stathat_ez_get", None),
    Route("POST", "/ez", stathat.ez_post, "stathat_ez_post", None),
    Route("GET", "/c", stathat.classic_count, "stathat_count_get", None),
    Route("POST", "/c", stathat.classic_count, "stathat_count_post", None),
    Route("GET", "/v", stathat.classic_value, "stathat_value_get", None),
    Route("POST", "/v", stathat.classic_value, "stathat_value_post", None),
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
    writer: DurableWriter | None = None,
    write: BatchWrite | None = None,
    spool: Spool | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    redis_prefix: str = "gf:ratelimit:",
    extra_metrics: Callable[[], dict[str, tuple[str, float]]] | None = None,
) -> web.Application:
    """The HTTP service on an already opened store (its owner closes it).

    ``writer``: the process's durable writer, shared with its collector (its owner
    starts and closes it, after the app's cleanup). Without one the app runs its own:
    ``write`` (default ``store.write_batch``) through ``spool``, an open spool (its
    owner closes it, after the app's cleanup) where a batch goes when the store is
    down, acknowledged once fsync'd, and which the writer drains; without a spool,
    ingest answers 503 while the store is down. Rows the store refuses for good go to
    the quarantine in ``config.state_dir`` (with a spool; else they are logged and
    dropped). ``clock`` times the key cache
    and in-process rate limits, ``wall_clock`` is "now" for timestamps; tests pass their
    own. ``extra_metrics``: more self-metrics for /metrics (the runner's alert evaluator).
    Raises ValueError for a default rate limit that does not parse.
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
    if extra_metrics is not None:
        app[EXTRA_METRICS] = extra_metrics
    registry, latency = new_registry(stats, lambda: _component_counters(app))
    app[REGISTRY] = registry
    app.middlewares.extend([metrics_middleware(stats, latency), error_middleware,
                            guard_middleware])
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    add_dashboard_routes(app)  # the pages at / (no key: login is how one gets in)
    app.cleanup_ctx.append(_rate_limiter(redis_prefix, clock))
    if writer is None:
        app.cleanup_ctx.append(_own_writer(write or store.write_batch, spool))
    else:
        app[WRITER] = writer
    app.cleanup_ctx.append(_committer)
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


def _own_writer(
    write: BatchWrite, spool: Spool | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        # The quarantine lives in the state directory, beside the spool: a process
        # without a spool (tests) has no state directory to write to.
        quarantine = Quarantine(config.state_dir) if spool is not None else None
        writer = DurableWriter(write, new_writer_id("http"), spool=spool,
                               quarantine=quarantine, spool_after=0.0)
        writer.start()
        app[WRITER] = writer
        try:
            yield
        finally:  # after the committer's cleanup (cleanup runs in reverse)
            await writer.close(SHUTDOWN_WRITE_TIMEOUT)

    return context


async def _committer(app: web.Application) -> AsyncIterator[None]:
    committer = GroupCommitter(app[WRITER], window=app[CONFIG].commit_window)
    app[COMMITTER] = committer
    try:
        yield
    finally:
        await committer.close()  # answer what waits before the writer closes


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
        out["gf_http_commit_failures"] = (
            "Group commits neither written nor spooled (answered 503).", s.failures)
        out["gf_http_commit_quarantined"] = (
            "Group commits some of whose rows the database refused for good.", s.quarantined)
        out["gf_http_commit_pending"] = ("Groups waiting to be committed.", committer.pending)
        out["gf_http_commit_spooled"] = (
            "Group commits acknowledged once spooled (the database was down).", s.spooled)
        out["gf_http_commit_spooled_rows"] = (
            "Point rows in the group commits spooled.", s.spooled_rows)
        w: WriterStats = committer.writer.stats
        out["gf_http_commit_retries"] = ("Database writes that failed and were retried.",
                                         w.flush_failures)
        out["gf_http_commit_spool_failures"] = (
            "Spool writes or reads that failed.", w.spool_failures)
        out["gf_http_spool_replayed"] = (
            "Spooled batches replayed into the database by this process's writer.",
            w.spool_replayed_batches)
        out["gf_http_spool_replayed_rows"] = (
            "Point rows of the spooled batches replayed.", w.spool_replayed_rows)
        out["gf_http_spool_replay_conflicts"] = (
            "Metrics whose replayed points were dropped for a kind conflict.",
            w.replay_conflicts)
        out["gf_http_spool_pending"] = ("Batches waiting in the spool.", w.spool_batches)
        out["gf_http_quarantined_rows"] = (
            "Point rows the database refused for good, set aside in the quarantine.",
            w.quarantined_rows)
    extra = app.get(EXTRA_METRICS)
    if extra is not None:
        out.update(extra())
    return out
