"""The one frozen Config, built once from the click options and passed down.

Each layer gets its own section (``collector``, ``http``) so that no package below
this one has to import it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from alerts.config import AlertConfig
from collector.config import AdminConfig, CollectorConfig
from protocol.options import cli
from protocol.units import parse_rate_limit
from query.config import HttpConfig


class ConfigError(ValueError):
    """An option value that cannot work; the CLI prints it and exits with status 2."""


@dataclass(frozen=True, slots=True)
class Config:
    """Fields with ``metadata=cli(...)`` are command-line options (protocol.options)."""

    database_url: str = field(default="sqlite:///var/glowing-fiesta.db", metadata=cli(
        "--database-url",
        "sqlite:///relative/path, sqlite:////abs/path or mysql://user:pass@host:port/db"))
    log_level: str = field(default="info", metadata=cli(
        "--log-level", "Least severe log level written to stderr.",
        choices=("debug", "info", "warning", "error")))
    log_format: str = field(default="text", metadata=cli(
        "--log-format", "One line per event: plain text, or one JSON object per line.",
        choices=("text", "json")))
    state_dir: Path = field(default=Path("var"), metadata=cli(
        "--state-dir", "Directory for local state (the spool)."))
    workers: int = field(default=1, metadata=cli(
        "--workers", "Processes sharing the ports (SO_REUSEPORT), one event loop each.",
        min=1, max=256))
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)

    def validate(self) -> Config:
        """Raise ConfigError for combinations that cannot work."""
        if not self.database_url.startswith(("sqlite://", "mysql://", "mariadb://")):
            raise ConfigError("--database-url must start with sqlite:// or mysql://")
        c = self.collector
        if c.flush_interval <= 0:
            raise ConfigError("--flush-interval must be positive")
        if c.max_line_length < 64:
            raise ConfigError("--max-line-length must be at least 64")
        if not 0.01 <= c.sketch_alpha <= 10.0:
            raise ConfigError("--sketch-alpha must be 0.01..10 (percent)")
        if self.workers > 1 and self.admin.port is not None:
            raise ConfigError("--admin-port cannot be used with --workers")
        if c.carbon_counter_pattern is not None:
            try:
                re.compile(c.carbon_counter_pattern)
            except re.error as exc:
                raise ConfigError(f"--carbon-counter-pattern: {exc}") from None
        h = self.http
        try:
            parse_rate_limit(h.default_rate_limit)
        except ValueError as exc:
            raise ConfigError(f"--default-rate-limit: {exc}") from None
        if (h.tls_cert is None) != (h.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if h.tls_cert is None and not h.allow_plain_http and not is_loopback(h.host):
            raise ConfigError(
                f"refusing plain HTTP on non-loopback address {h.host}: give --tls-cert and "
                "--tls-key, or --allow-plain-http behind a TLS-terminating proxy"
            )
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
