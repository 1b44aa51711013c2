"""Self-metrics of the HTTP service, exposed at ``GET /metrics`` (Prometheus text format).

The hot path only bumps plain ints in ``HttpStats`` and observes one histogram; a
custom collector turns the ints into metric families at scrape time. Every app gets
its own ``CollectorRegistry`` (never the process-global one), so a process may hold
several apps: tests do, and ``run`` could register the collector's metrics beside ours.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds: from a cached read (~0.3 ms) to a commit waiting on a slow disk.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# A source's name ending so is a gauge (a level now), any other a counter (a total).
GAUGE_SUFFIXES = ("_pending", "_seconds", "_leader", "_retrying")


@dataclass
class HttpStats:
    """Counters bumped by the middleware and handlers; read at scrape time."""

    # (route, method, status) -> answers
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    rate_limited: int = 0  # 429 answers
    points_accepted: int = 0  # points in 200 ingest answers
    ingest_conflicts: int = 0  # 409 answers
    ingest_unavailable: int = 0  # 503 ingest answers: the commit failed


class StatsCollector(Collector):
    """Reads ``HttpStats`` and the gauges of other components when scraped."""

    def __init__(self, stats: HttpStats, sources: Callable[[], dict[str, tuple[str, float]]]):
        self.stats = stats
        self.sources = sources  # name -> (help, value): counters owned by other objects

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily(
            "gf_http_requests", "HTTP requests answered, by route, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(stats.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        yield CounterMetricFamily("gf_http_rate_limited", "Requests answered 429.",
                                  value=stats.rate_limited)
        yield CounterMetricFamily("gf_http_points_accepted",
                                  "Points acknowledged by ingest (committed).",
                                  value=stats.points_accepted)
        yield CounterMetricFamily("gf_http_ingest_conflicts",
                                  "Ingest requests refused for a kind conflict (409).",
                                  value=stats.ingest_conflicts)
        yield CounterMetricFamily("gf_http_ingest_unavailable",
                                  "Ingest requests answered 503: the commit failed.",
                                  value=stats.ingest_unavailable)
        for name, (help_text, value) in self.sources().items():
            family = (GaugeMetricFamily if name.endswith(GAUGE_SUFFIXES)
                      else CounterMetricFamily)
            yield family(name, help_text, value=value)


def new_registry(
    stats: HttpStats, sources: Callable[[], dict[str, tuple[str, float]]]
) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, sources))
    latency = Histogram(
        "gf_http_request_duration_seconds", "Time to answer a request, by route.",
        ["route"], registry=registry, buckets=LATENCY_BUCKETS,
    )
    return registry, latency


def route_label(request: web.Request) -> str:
    """The route template (``/api/metrics/{name}``), never the raw path: bounded labels."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(stats: HttpStats, latency: Histogram) -> Middleware:
    """Outermost middleware: counts every answer by route and status, times it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # only non-errors get past the error middleware
            status = exc.status
            raise
        finally:
            route = route_label(request)
            stats.requests[(route, request.method, status)] += 1
            latency.labels(route).observe(time.perf_counter() - started)

    return middleware


def exposition(registry: CollectorRegistry) -> web.Response:
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
