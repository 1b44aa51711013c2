"""The HTTP service's part of the one frozen Config (built by glowing_fiesta.config).

A field with ``metadata=cli(...)`` is a command-line option (protocol.options); the
others are copied by the CLI from the collector's options of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.options import cli


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = field(default="127.0.0.1", metadata=cli(
        "--http-host", "Address for the HTTP service [default: --host].",
        default_from="--host"))
    port: int = field(default=8000, metadata=cli(
        "--http-port", "HTTP port; 0 binds an ephemeral port.", min=0, max=65535))
    tls_cert: Path | None = field(default=None, metadata=cli(
        "--tls-cert", "PEM certificate chain: serve HTTPS.", existing_file=True))
    tls_key: Path | None = field(default=None, metadata=cli(
        "--tls-key", "PEM private key for --tls-cert.", existing_file=True))
    allow_plain_http: bool = field(default=False, metadata=cli(
        "--allow-plain-http",
        "Serve plain HTTP on a non-loopback address (behind a TLS proxy)."))
    redis_url: str | None = field(default=None, metadata=cli(
        "--redis-url", "Share rate limits across processes through Redis."))
    key_cache_ttl: float = 10.0  # --key-cache-ttl
    # seconds a group commit waits for company
    commit_window: float = field(default=0.002, metadata=cli(
        "--commit-window", "Seconds an HTTP ingest waits to share a commit with others.",
        min=0))
    max_body_size: int = field(default=1024 * 1024, metadata=cli(
        "--max-body-size", "Largest accepted request body, in bytes.", min=1024))
    # for keys created without --rate-limit
    default_rate_limit: str = field(default="100/s", metadata=cli(
        "--default-rate-limit", "Rate limit of keys created without one, e.g. 100/s."))
    retention_raw: int = 7 * 86400  # --retention-raw: also the oldest timestamp accepted
    sketches: bool = True  # --sketches/--no-sketches: value points make quantile sketches
    sketch_alpha: float = 1.0  # --sketch-alpha: their relative accuracy, in percent
    state_dir: Path = Path("var")  # --state-dir
    graphite_max_series: int = field(default=500, metadata=cli(
        "--graphite-max-series",
        "Series one Graphite path expression may match in /render (past it: 422).",
        min=1))
