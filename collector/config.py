"""The collector's part of the one frozen Config (built by glowing_fiesta.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    udp_port: int | None = 8125  # None: no UDP listener
    tcp_port: int | None = 8125  # None: no TCP listener
    flush_interval: float = 1.0  # seconds between flushes
    udp_rcvbuf: int = 16 * 1024 * 1024  # bytes of SO_RCVBUF asked for
    max_line_length: int = 4096
    max_tcp_connections: int = 1024
    tcp_idle_timeout: float = 300.0
    max_metrics: int = 100_000  # distinct names this process tracks
    metric_idle_ttl: int = 600  # seconds without samples before a name leaves it; 0: never
    max_pending_buckets: int = 2_000_000  # metric-seconds held in memory, unflushed
    retention_raw: int = 7 * 86400  # also the oldest |T time accepted
    require_key: bool = False
    key_cache_ttl: float = 10.0
    state_dir: Path = Path("var")
    drain_timeout: float = 2.0  # seconds to read what the sockets hold at shutdown
    shutdown_flush_timeout: float = 10.0
    # -- durability (see README "Reliability") --
    flush_timeout: float = 10.0  # seconds one database write may take before it is abandoned
    spool_after: float = 10.0  # seconds of failing flushes before pending batches are spooled
    max_pending_rows: int = 500_000  # unwritten rows held in memory; past it: spool now
    spool_max_bytes: int = 1 << 30  # spool file budget; 0: no limit but the disk
    retention_interval: float = 300.0  # seconds between retention passes; 0: no pass
    retention_chunk: int = 10_000  # rows deleted per metric per statement
    # -- rollups (store.rollups): how long each level is kept --
    retention_1m: int = 90 * 86400  # points_1m
    retention_1h: int = 730 * 86400  # points_1h
