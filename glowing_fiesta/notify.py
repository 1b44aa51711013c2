"""sd_notify(3): tell systemd we are ready, stopping, alive, and what we are doing.

The protocol is one datagram of ``KEY=value`` lines sent to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without that
variable every method is a no-op, so the daemon runs the same under a terminal, a test
or any other supervisor.

``$WATCHDOG_USEC`` asks for ``WATCHDOG=1`` at least that often. The pings come from a
task on the event loop (``run_watchdog``), so they stop exactly when the loop stops
turning: systemd then kills the hung process and ``Restart=on-failure`` starts a new one.

This module never reads the environment itself: the CLI passes ``os.environ`` in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to one ``NOTIFY_SOCKET`` address; a no-op without one."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._socket: socket.socket | None = None
        self._failing = False  # log a failure once, not on every watchdog ping

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """The notifier systemd asked for in ``environ`` (the process environment).

        ``WATCHDOG_PID``, when set, names the process the watchdog is meant for: any
        other process (a child that inherited the environment) sends no pings.
        """
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        pid = environ.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                watchdog_usec = int(environ.get("WATCHDOG_USEC", ""))
            except ValueError:
                watchdog_usec = None
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message.

        Returns True if it was sent. Never raises and never blocks: a supervisor that
        is gone or slow must not take the daemon down with it.
        """
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._socket is None:
                self._socket = _connect(self.address)
            self._socket.send(message)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
            self._failing = True
            self.close()
            return False
        if self._failing:
            log.info("notifying systemd at %s again", self.address)
            self._failing = False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping every ``watchdog_interval`` until cancelled; returns at once if no
        watchdog was asked for."""
        interval = self.watchdog_interval
        if interval is None:
            return
        log.info("systemd watchdog: pinging every %.3gs", interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _connect(address: str) -> socket.socket:
    if address.startswith("@"):  # the abstract namespace: a leading NUL byte
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        raise OSError(f"unsupported NOTIFY_SOCKET address {address!r}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
