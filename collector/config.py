"""The collector's parts of the one frozen Config (built by glowing_fiesta.config).

A field with ``metadata=cli(...)`` is a command-line option (protocol.options); the
others are set by the CLI from another option (state_dir) or are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.options import cli
from protocol.sketch import MAX_ALPHA_BP, MIN_ALPHA_BP


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    host: str = field(default="127.0.0.1", metadata=cli(
        "--host", "Address for the UDP/TCP listeners (and HTTP)."))
    # None: no UDP/TCP listener (not reachable from the CLI: 0 binds an ephemeral port)
    udp_port: int | None = field(default=8125, metadata=cli(
        "--udp-port", "UDP port for StatsD lines; 0 binds an ephemeral port.",
        min=0, max=65535))
    tcp_port: int | None = field(default=8125, metadata=cli(
        "--tcp-port", "TCP port for newline-delimited lines; 0 binds an ephemeral port.",
        min=0, max=65535))
    flush_interval: float = field(default=1.0, metadata=cli(
        "--flush-interval", "Seconds between flushes to the database.", min=0.01))
    flush_write_share: float = field(default=0.25, metadata=cli(
        "--flush-write-share",
        "Largest share of the time the flush writes may take: after a slower write the "
        "next flush waits longer and takes every second since; 1: never wait.",
        min=0.01, max=1.0))
    udp_rcvbuf: int = field(default=16 * 1024 * 1024, metadata=cli(
        "--udp-rcvbuf", "UDP receive buffer (SO_RCVBUF) to ask for, in bytes.", min=4096))
    max_line_length: int = field(default=4096, metadata=cli(
        "--max-line-length", "Longer lines are dropped (too_long).", min=64))
    max_tcp_connections: int = field(default=1024, metadata=cli(
        "--max-tcp-connections", "Open TCP connections; more are closed at once (counted).",
        min=1))
    tcp_idle_timeout: float = field(default=300.0, metadata=cli(
        "--tcp-idle-timeout", "Seconds before an idle TCP connection is closed.", min=1))
    max_metrics: int = field(default=100_000, metadata=cli(
        "--max-metrics",
        "Distinct metric names per collector; new names past it are dropped.", min=1))
    metric_idle_ttl: int = field(default=600, metadata=cli(  # 0: never
        "--metric-idle-ttl",
        "A name without samples this long leaves the --max-metrics count; 0: never.",
        duration=True))
    max_pending_buckets: int = field(default=2_000_000, metadata=cli(
        "--max-pending-buckets",
        "Unflushed metric-seconds and metric-minute summaries (sketches, sets, gauge "
        "lasts) held in memory; past it samples are dropped.", min=1000))
    retention_raw: int = field(default=7 * 86400, metadata=cli(
        "--retention-raw",
        "How long per-second points are kept; also the oldest |T accepted.", duration=True))
    require_key: bool = field(default=False, metadata=cli(
        "--require-key/--no-require-key", "Drop UDP/TCP lines without a valid key prefix."))
    key_cache_ttl: float = field(default=10.0, metadata=cli(
        "--key-cache-ttl", "Seconds an API-key lookup is cached (revocation delay).", min=0))
    state_dir: Path = Path("var")  # Config.state_dir (--state-dir)
    drain_timeout: float = 2.0  # seconds to read what the sockets hold at shutdown
    shutdown_flush_timeout: float = 10.0
    # -- durability (see docs/operations.md "Reliability") --
    flush_timeout: float = field(default=10.0, metadata=cli(
        "--flush-timeout",
        "Seconds one database write may take; then it is abandoned and retried.", min=0.1))
    spool_after: float = field(default=10.0, metadata=cli(
        "--spool-after",
        "Seconds of failing flushes before pending batches go to the spool in --state-dir.",
        min=0))
    max_pending_rows: int = field(default=500_000, metadata=cli(
        "--max-pending-rows",
        "Unwritten rows held in memory; past it they go to the spool at once.", min=1000))
    spool_max_bytes: int = field(default=1 << 30, metadata=cli(
        "--spool-max-bytes",
        "Spool size budget in bytes (compressed); 0: only the disk limits it.", min=0))
    retention_interval: float = field(default=300.0, metadata=cli(
        "--retention-interval", "Time between the collector's retention passes; 0: none.",
        duration=True))
    retention_chunk: int = field(default=10_000, metadata=cli(
        "--retention-chunk", "Rows a retention statement deletes per metric.", min=1))
    # -- rollups (store.rollups): how long each level is kept --
    retention_1m: int = field(default=90 * 86400, metadata=cli(
        "--retention-1m", "How long per-minute rollups (points_1m) are kept.", duration=True))
    retention_1h: int = field(default=730 * 86400, metadata=cli(
        "--retention-1h", "How long per-hour rollups (points_1h) are kept.", duration=True))

    # -- summaries (docs/sketches.md) --
    sketches: bool = field(default=True, metadata=cli(
        "--sketches/--no-sketches",
        "Keep a quantile sketch per value metric-minute (percentiles, histograms)."))
    sketch_alpha: float = field(default=1.0, metadata=cli(
        "--sketch-alpha",
        "Relative error of the quantile sketches, in percent: 0.01 to 10, in whole basis "
        "points.",
        min=0.01, max=10.0))

    # -- Graphite plaintext (collector.carbon) --
    carbon_port: int | None = field(default=None, metadata=cli(  # None: no carbon listener
        "--carbon-port",
        "TCP and UDP port for Graphite plaintext lines (carbon's 2003); 0 binds an "
        "ephemeral port [default: no carbon listener].", min=0, max=65535))
    carbon_counter_pattern: str | None = field(default=None, metadata=cli(
        "--carbon-counter-pattern",
        "Regular expression: carbon names it is found in are counters, the others values "
        "[default: all values]."))

    @property
    def alpha_bp(self) -> int:
        """``sketch_alpha`` in basis points (protocol.sketch's unit): 1% -> 100."""
        return min(MAX_ALPHA_BP, max(MIN_ALPHA_BP, round(self.sketch_alpha * 100)))


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The collector's self-observation: the admin listener (collector.admin) and
    --self-metrics (glowing_fiesta.runner)."""

    host: str = field(default="127.0.0.1", metadata=cli(
        "--admin-host",
        "Address for the collector's /metrics and /healthz (no authentication)."))
    # None: no admin listener; 0: an ephemeral port
    port: int | None = field(default=None, metadata=cli(
        "--admin-port",
        "Port for the collector's /metrics and /healthz; 0 binds an ephemeral port "
        "[default: no admin listener].", min=0, max=65535))
    self_metrics: bool = field(default=False, metadata=cli(
        "--self-metrics/--no-self-metrics",
        "Also record the collector's own figures as glowing_fiesta.collector.* metrics, "
        "every flush interval."))
