"""The collector's self-metrics, read from its counters when they are asked for.

The hot path only does plain ``int`` increments on ``CollectorStats``; nothing here
runs until a scrape (``CollectorMetrics.collect``) or a self-metrics tick
(``SelfMetrics.record``) reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from collector.daemon import Collector
from collector.stats import Histogram
from protocol.lines import Reason, Sample
from protocol.names import COUNTER, VALUE, Kind

PREFIX = "gf_collector_"  # beside the query service's gf_http_*


class CollectorMetrics:
    """A prometheus_client collector over one daemon's counters (read at scrape time)."""

    def __init__(self, daemon: Collector) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        stats = daemon.stats

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield counter("datagrams", "UDP datagrams received.", stats.datagrams)
        yield counter("tcp_reads", "Chunks of TCP data received.", stats.tcp_chunks)
        yield counter("lines", "Lines received over UDP and TCP, good or bad.", stats.lines)
        yield counter("samples", "Samples accepted into the aggregator.", stats.samples)
        yield counter("tags_ignored", "Accepted lines whose DogStatsD |#tags were ignored.",
                      stats.tags_ignored)
        yield counter("carbon_lines", "Graphite plaintext lines received (also in lines).",
                      stats.carbon_lines)
        dropped = CounterMetricFamily(PREFIX + "lines_dropped", "Lines dropped, by reason.",
                                      labels=["reason"])
        for reason in Reason:  # every reason, zeros included, so rate() works from the start
            dropped.add_metric([reason.value], stats.drops[reason])
        yield dropped
        kernel_drops = daemon.kernel_drops()
        if kernel_drops is not None:
            yield counter(
                "udp_kernel_drops",
                "Datagrams the kernel dropped for our UDP socket (receive buffer full), "
                "from /proc/net/udp.",
                kernel_drops,
            )
        yield counter("gc_seconds", "Time this process spent in Python's cyclic garbage "
                      "collector (objects made at start-up are frozen out of it).",
                      daemon.gc_clock.seconds)
        yield counter("flushes", "Batches written to the store.", stats.flushes)
        yield counter("flush_failures", "Batch writes that failed (retried with backoff).",
                      stats.flush_failures)
        yield counter("flush_duplicates",
                      "Retried batches the store had applied already (not applied again).",
                      stats.flush_duplicates)
        yield counter("rows_flushed", "Per-second point rows upserted.", stats.rows_flushed)
        yield histogram("flush_duration_seconds", "Time to write one batch to the store.",
                        stats.flush_durations)
        yield gauge("pending_buckets", "Metric-seconds in memory, not yet handed to a flush.",
                    daemon.aggregator.pending_buckets + daemon.flusher.converting)
        yield gauge("pending_batches", "Batches in memory waiting to be written to the store.",
                    stats.pending_batches)
        yield gauge("pending_rows", "Point rows in the batches waiting to be written.",
                    stats.pending_rows)
        yield counter("backpressure_skips",
                      "Flush ticks that left buckets in the aggregator (too much pending).",
                      stats.backpressure_skips)
        yield counter("flush_ticks_merged",
                      "Flush ticks that did not cut (the last write was slow or unfinished): "
                      "the next batch holds several seconds.",
                      stats.flush_ticks_merged)
        yield gauge("store_ready", "1 once the database has answered and is migrated.",
                    stats.store_ready)
        yield counter("flush_timeouts", "Batch writes abandoned after --flush-timeout.",
                      stats.flush_timeouts)
        yield counter("rows_spooled", "Point rows written to the local spool (database down).",
                      stats.spooled_rows)
        yield counter("rows_replayed", "Spooled point rows written to the database since.",
                      stats.spool_replayed_rows)
        yield counter("batches_spooled", "Batches written to the local spool.",
                      stats.spooled_batches)
        yield counter("batches_replayed", "Spooled batches written to the database since.",
                      stats.spool_replayed_batches)
        spool = daemon.writer.spool
        yield counter("spool_corrupt_rows",
                      "Point rows of damaged spool batches discarded (a torn or altered file).",
                      0 if spool is None else spool.corrupt_rows)
        yield counter("spool_failures", "Spool writes or reads that failed.",
                      stats.spool_failures)
        yield gauge("spool_batches", "Batches in the spool now.", stats.spool_batches)
        yield gauge("spool_rows", "Point rows in the spool now.", stats.spool_rows)
        yield gauge("spool_bytes", "Size of the spool file.", stats.spool_bytes)
        yield counter("batches_quarantined",
                      "Parts of batches the store refused for good, set aside in the quarantine.",
                      stats.quarantined_batches)
        yield counter("rows_quarantined", "Point rows set aside in the quarantine.",
                      stats.quarantined_rows)
        yield counter("quarantine_failures",
                      "Refused rows the quarantine could not take (the batch is retried).",
                      stats.quarantine_failures)
        yield counter("rows_lost", "Point rows neither written nor spooled at shutdown.",
                      stats.rows_lost)
        yield counter("retention_passes", "Retention passes run.", stats.retention_passes)
        yield counter("retention_rows_deleted", "Expired point rows deleted.",
                      stats.retention_rows_deleted)
        yield counter("retention_flush_records_deleted",
                      "Expired exactly-once flush records deleted.",
                      stats.retention_flush_records_deleted)
        yield counter("retention_failures", "Retention passes that failed.",
                      stats.retention_failures)
        yield gauge("samples_awaiting_key",
                    "Keyed samples held until their API key's lookup answers.",
                    sum(len(held) for held in daemon.aggregator.held.values()))
        yield gauge("metric_names", "Distinct metric names tracked (capped by --max-metrics).",
                    len(daemon.aggregator.kinds))
        yield gauge("tcp_connections_open", "Open TCP connections.",
                    daemon.open_tcp_connections)
        yield counter("tcp_connections", "TCP connections accepted.", stats.tcp_connections)
        yield counter("tcp_refused", "TCP connections refused (--max-tcp-connections).",
                      stats.tcp_refused)
        yield counter("tcp_idle_closed", "TCP connections closed for idleness.",
                      stats.tcp_idle_closed)
        yield counter("tcp_closed_too_long",
                      "TCP connections closed for a line over --max-line-length.",
                      stats.tcp_closed_too_long)
        yield counter("metric_names_evicted",
                      "Names forgotten after --metric-idle-ttl without samples.",
                      daemon.aggregator.evicted)
        yield gauge("key_lookups_waiting",
                    "Distinct API keys waiting for (or in) a store lookup.",
                    daemon.key_lookups_waiting)
        yield gauge("key_lookups_running", "API-key store lookups in progress.",
                    daemon.keys.lookups_running)
        yield counter("key_lookups_shed",
                      "Keyed lines dropped (overload): too many distinct keys waiting "
                      "for a lookup.", stats.key_lookups_shed)
        yield counter("key_cache_hits", "API-key lookups answered from the cache.",
                      daemon.keys.hits)
        yield counter("key_cache_misses", "API-key lookups that went to the store.",
                      daemon.keys.misses)


def histogram(name: str, doc: str, source: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(source.bounds, source.counts, strict=False):
        cumulative += count
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", cumulative + source.counts[-1]))
    return HistogramMetricFamily(PREFIX + name, doc, buckets=buckets, sum_value=source.total)


def make_registry(daemon: Collector) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): the daemon's figures
    and this process's CPU, memory and file descriptors."""
    registry = CollectorRegistry()
    registry.register(CollectorMetrics(daemon))
    ProcessCollector(registry=registry)
    return registry


# -- self-metrics in the store (--self-metrics) ---------------------------------

SELF_PREFIX = "glowing_fiesta.collector."

# CollectorStats counters recorded, under the same names.
_COUNTERS = ("datagrams", "lines", "samples", "flushes", "flush_failures", "rows_flushed")


class SelfMetrics:
    """Records the collector's own figures as ``glowing_fiesta.collector.*`` metrics
    through its own aggregator, so they are flushed, stored and queried like any other.

    Counters become counter samples of their increase since the last tick (only when
    non-zero: idle figures cost no rows); ``pending_buckets``, ``pending_rows`` and
    ``flush_seconds`` become value samples. Several collectors writing the same names
    add up to fleet totals. They are not counted in ``samples`` (what clients sent).
    """

    def __init__(self, daemon: Collector) -> None:
        self.daemon = daemon
        self._last: dict[str, int] = {}

    async def run(self, interval: float) -> None:
        """Record a tick every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.record()

    def record(self, now: int | None = None) -> int:
        """Add one tick of samples to the aggregator; return how many were added."""
        when = int(time.time()) if now is None else now
        samples = self.snapshot()
        stats = self.daemon.stats
        received = stats.samples
        for name, kind, value in samples:
            self.daemon.aggregator.add(Sample(name, kind, value, 1.0, None, None), when)
        # ``samples`` counts what clients sent; our own would feed back into it.
        stats.samples = received
        return len(samples)

    def snapshot(self) -> list[tuple[str, Kind, float]]:
        """The samples of one tick, as (name, kind, value); advances the counters' base."""
        daemon = self.daemon
        stats = daemon.stats
        totals = {name: int(getattr(stats, name)) for name in _COUNTERS}
        totals["dropped"] = stats.dropped
        totals.update({f"dropped.{reason.value}": n for reason, n in stats.drops.items()})
        kernel_drops = daemon.kernel_drops()
        if kernel_drops is not None:
            totals["udp_kernel_drops"] = kernel_drops
        out: list[tuple[str, Kind, float]] = []
        flushed = False
        for name, total in totals.items():
            increase = total - self._last.get(name, 0)
            self._last[name] = total
            if increase:
                out.append((SELF_PREFIX + name, COUNTER, float(increase)))
                flushed = flushed or name == "flushes"
        out.append((SELF_PREFIX + "pending_buckets", VALUE,
                    float(daemon.aggregator.pending_buckets + daemon.flusher.converting)))
        out.append((SELF_PREFIX + "pending_rows", VALUE, float(stats.pending_rows)))
        if flushed:
            out.append((SELF_PREFIX + "flush_seconds", VALUE, stats.last_flush_seconds))
        return out
