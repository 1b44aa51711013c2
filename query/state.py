"""Typed keys for what the application shares between middleware and handlers."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from protocol.names import Kind
from protocol.points import BatchReader
from query.commit import GroupCommitter
from query.config import HttpConfig
from query.ratelimit import RateLimiter
from query.selfmetrics import HttpStats
from store.base import Store
from store.durable import DurableWriter
from store.keycache import KeyCache

CONFIG: web.AppKey[HttpConfig] = web.AppKey("config", HttpConfig)
STORE: web.AppKey[Store] = web.AppKey("store")
KEYS: web.AppKey[KeyCache] = web.AppKey("keys", KeyCache)
STATS: web.AppKey[HttpStats] = web.AppKey("stats", HttpStats)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
WALL_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("wall_clock")
# route name -> the scope a key needs for it; routes not listed need no key
SCOPES: web.AppKey[dict[str, str]] = web.AppKey("scopes")
# metric name -> kind, as stored: answers most kind checks without the store
KINDS: web.AppKey[dict[str, Kind]] = web.AppKey("kinds")
BATCH_READER: web.AppKey[BatchReader] = web.AppKey("batch_reader", BatchReader)
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi", bytes)
# opened in cleanup_ctx (they need the running loop, and closing)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter")
COMMITTER: web.AppKey[GroupCommitter] = web.AppKey("committer", GroupCommitter)
# self-metrics of components the runner starts beside the app (the alert evaluator):
# name -> (help, value), read at scrape time
EXTRA_METRICS: web.AppKey[Callable[[], dict[str, tuple[str, float]]]] = web.AppKey(
    "extra_metrics")
# the process's durable writer: the app's own, or the one it shares with the collector
WRITER: web.AppKey[DurableWriter] = web.AppKey("writer", DurableWriter)
