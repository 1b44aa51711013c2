"""The one frozen Config, built once from the click options and passed down.

Each layer gets its own section (``collector``, ``http``) so that no package below
this one has to import it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from collector.config import CollectorConfig
from protocol.units import parse_rate_limit
from query.config import HttpConfig


class ConfigError(ValueError):
    """An option value that cannot work; the CLI prints it and exits with status 2."""


@dataclass(frozen=True, slots=True)
class Config:
    database_url: str = "sqlite:///var/glowing-fiesta.db"
    log_level: str = "info"
    log_format: str = "text"
    state_dir: Path = Path("var")
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def validate(self) -> Config:
        """Raise ConfigError for combinations that cannot work."""
        if not self.database_url.startswith(("sqlite://", "mysql://", "mariadb://")):
            raise ConfigError("--database-url must start with sqlite:// or mysql://")
        c = self.collector
        if c.flush_interval <= 0:
            raise ConfigError("--flush-interval must be positive")
        if c.max_line_length < 64:
            raise ConfigError("--max-line-length must be at least 64")
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
