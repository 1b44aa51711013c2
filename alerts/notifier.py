"""Delivery of the notifications in the outbox (``alert_outbox``): webhooks and e-mail.

Each notification is a row written in the same transaction as the transition that
caused it, so a process killed between the two loses nothing: whoever holds the lease
next delivers the pending rows. Delivery is at least once: a receiver that answered but
whose answer was lost gets the same body again, with the same ``Idempotency-Key``
header (and the same ``idempotency_key`` field), to de-duplicate on. A failed attempt
is retried with exponential backoff (5 s doubling, at most an hour apart) for 24 hours,
then given up (status ``failed``).

Webhook bodies are signed: ``X-GF-Signature: sha256=<hex HMAC-SHA256 of the exact body
with the target's secret>``. Redirects are not followed (a 3xx is a failure), so a
signed body goes only where the rule says. The secret and the URL's path and query are
never logged: a failure names the host only.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Final, cast
from urllib.parse import urlsplit

import aiohttp
import orjson

from alerts.config import AlertConfig
from protocol.alerts import (
    IDEMPOTENCY_HEADER,
    RETRY_FOR,
    SIGNATURE_HEADER,
    email_message,
    retry_delay,
    sign,
)
from store.base import OutboxRow, Store

log = logging.getLogger(__name__)

CONCURRENCY: Final = 10  # deliveries in flight at once (one round)
USER_AGENT: Final = "glowing-fiesta-alerts"


class DeliveryError(Exception):
    """One attempt failed; the message is safe to log and store (no secret, no path)."""


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0  # given up after RETRY_FOR
    attempts_failed: int = 0  # attempts that failed (each is retried until given up)


class Notifier:
    def __init__(
        self, store: Store, config: AlertConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.stats = NotifierStats()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver_due(self, limit: int = CONCURRENCY) -> int:
        """One round: up to ``limit`` due notifications attempted at once (so a round
        takes at most --webhook-timeout), each delivered or rescheduled. Returns how
        many were due (``limit``: there may be more). Raises StoreError when the outbox
        cannot be read."""
        due = await self.store.due_notifications(self.clock(), limit)
        await asyncio.gather(*(self.deliver(row) for row in due))
        return len(due)

    async def deliver(self, row: OutboxRow) -> bool:
        """One attempt at one notification, its outcome stored. True if delivered."""
        attempts = row.attempts + 1
        try:
            await self.send(orjson.loads(row.target), row.payload.encode(), row.idempotency_key)
        except DeliveryError as exc:
            now = self.clock()
            self.stats.attempts_failed += 1
            if now - row.created_at >= RETRY_FOR:
                self.stats.failed += 1
                log.error("alert notification %d given up after %d attempts: %s", row.id,
                          attempts, exc)
                await self.store.update_notification(row.id, "failed", attempts, now, now,
                                                     str(exc))
                return False
            delay = retry_delay(attempts)
            log.warning("alert notification %d failed (attempt %d), retrying in %g s: %s",
                        row.id, attempts, delay, exc)
            await self.store.update_notification(row.id, "pending", attempts, now + delay,
                                                 None, str(exc))
            return False
        now = self.clock()
        self.stats.sent += 1
        await self.store.update_notification(row.id, "sent", attempts, now, now, None)
        return True

    async def send(self, target: dict[str, str], body: bytes, key: str) -> None:
        """Send ``body`` (the webhook JSON) to one target; raises DeliveryError."""
        if "email" in target:
            await self._send_email(target["email"], body, key)
        else:
            await self._post(target["webhook"], target["secret"], body, key)

    async def _post(self, url: str, secret: str, body: bytes, key: str) -> None:
        host = urlsplit(url).hostname or "?"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout))
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                   IDEMPOTENCY_HEADER: key, "User-Agent": USER_AGENT}
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                await response.read()
                if not 200 <= response.status < 300:
                    raise DeliveryError(f"webhook to {host}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DeliveryError(f"webhook to {host}: {type(exc).__name__}") from None

    async def _send_email(self, address: str, body: bytes, key: str) -> None:
        config = self.config
        if config.smtp_host is None:
            raise DeliveryError("e-mail: no --smtp-host configured")
        payload = cast(dict[str, object], orjson.loads(body))
        subject, text = email_message(payload)
        message = EmailMessage()
        message["From"] = config.smtp_from
        message["To"] = address
        message["Subject"] = subject
        message["X-GF-Idempotency-Key"] = key
        message.set_content(text)
        try:
            await asyncio.to_thread(self._smtp_send, message)
        except (smtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
            raise DeliveryError(f"e-mail via {config.smtp_host}: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from None

    def _smtp_send(self, message: EmailMessage) -> None:
        """In a thread: smtplib blocks. STARTTLS whenever the server offers it; a login
        only over it (never a password in the clear)."""
        config = self.config
        assert config.smtp_host is not None
        with smtplib.SMTP(config.smtp_host, config.smtp_port,
                          timeout=self.config.webhook_timeout) as smtp:
            smtp.ehlo()
            tls = smtp.has_extn("starttls")
            if tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.smtp_user is not None:
                if not tls:
                    raise smtplib.SMTPException("the server offers no STARTTLS: no login "
                                                "in the clear")
                smtp.login(config.smtp_user, config.smtp_password or "")
            smtp.send_message(message)
