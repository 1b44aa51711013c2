"""The collector's counters. Plain ints on the hot path; exported as self-metrics."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from protocol.lines import LineError, Reason

log = logging.getLogger("glowing_fiesta.drops")

DROP_LOG_INTERVAL = 10.0  # seconds between log lines about dropped input, per reason


@dataclass
class CollectorStats:
    datagrams: int = 0
    tcp_chunks: int = 0
    lines: int = 0  # lines seen, good or bad
    samples: int = 0  # lines aggregated
    tags_ignored: int = 0
    drops: Counter[Reason] = field(default_factory=Counter)
    tcp_connections: int = 0
    tcp_refused: int = 0  # connections over --max-tcp-connections
    tcp_idle_closed: int = 0
    flushes: int = 0
    flush_failures: int = 0
    flush_duplicates: int = 0  # batches found already applied on retry
    rows_flushed: int = 0
    last_flush_seconds: float = 0.0
    _last_logged: dict[Reason, float] = field(default_factory=dict)
    _unlogged: Counter[Reason] = field(default_factory=Counter)

    def drop(self, reason: Reason, count: int = 1, sample: bytes | str = b"") -> None:
        """Count dropped lines and log a sample, at most once per reason per interval."""
        self.drops[reason] += count
        self._unlogged[reason] += count
        now = time.monotonic()
        if now - self._last_logged.get(reason, -DROP_LOG_INTERVAL) >= DROP_LOG_INTERVAL:
            self._last_logged[reason] = now
            log.warning(
                "dropped %d line(s): %s; sample: %r",
                self._unlogged.pop(reason),
                reason.value,
                sample,
            )

    def drop_errors(self, errors: list[LineError]) -> None:
        for error in errors:
            self.drop(error.reason, 1, error.line + b"  (" + error.detail.encode() + b")")

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())
