"""The alert evaluator's part of the one frozen Config (built by glowing_fiesta.config).

A field with ``metadata=cli(...)`` is a command-line option (protocol.options).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.options import cli


@dataclass(frozen=True, slots=True)
class AlertConfig:
    enabled: bool = field(default=True, metadata=cli(
        "--alerts/--no-alerts",
        "Evaluate alert rules in this HTTP service (one process per database does, by "
        "lease)."))
    interval: float = field(default=10.0, metadata=cli(
        "--alert-interval", "Seconds between evaluations of the alert rules.",
        min=0.05, max=3600))
    min_gap: int = field(default=300, metadata=cli(
        "--alert-min-gap",
        "At most one firing notification per rule and metric this often (resolves "
        "always go).", duration=True))
    base_url: str | None = field(default=None, metadata=cli(
        "--alert-base-url",
        "The dashboard's address in notification links [default: http://HOST:PORT of "
        "the HTTP service]."))
    webhook_timeout: float = field(default=10.0, metadata=cli(
        "--webhook-timeout", "Seconds one webhook delivery may take.", min=0.1, max=300))
    smtp_host: str | None = field(default=None, metadata=cli(
        "--smtp-host", "SMTP server for alert e-mail [default: none: e-mail targets "
        "fail and are retried]."))
    smtp_port: int = field(default=25, metadata=cli(
        "--smtp-port", "SMTP port (STARTTLS is used when the server offers it).",
        min=1, max=65535))
    smtp_from: str = field(default="glowing-fiesta@localhost", metadata=cli(
        "--smtp-from", "Sender address of alert e-mail."))
    smtp_user: str | None = field(default=None, metadata=cli(
        "--smtp-user", "SMTP login (only over STARTTLS)."))
    smtp_password: str | None = field(default=None, metadata=cli(
        "--smtp-password", "SMTP password; prefer the GF_SMTP_PASSWORD variable."))
