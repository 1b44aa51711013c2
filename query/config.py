"""The HTTP service's part of the one frozen Config (built by glowing_fiesta.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = False
    redis_url: str | None = None
    key_cache_ttl: float = 10.0
    commit_window: float = 0.002  # seconds a group commit waits for company
    max_body_size: int = 1024 * 1024
    default_rate_limit: str = "100/s"  # for keys created without --rate-limit
    retention_raw: int = 7 * 86400  # also the oldest timestamp accepted
    state_dir: Path = Path("var")
    graphite_max_series: int = 500  # series one Graphite path expression may match
