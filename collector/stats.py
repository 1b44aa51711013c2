"""The collector's counters. Plain ints on the hot path; exported as self-metrics."""

from __future__ import annotations

import gc
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from protocol.lines import LineError, Reason
from protocol.tokens import redact_tokens as redact_tokens_text
from protocol.tokens import redact_tokens_bytes
from store.durable import Histogram, WriterStats

__all__ = ["CollectorStats", "GcClock", "Histogram", "LogLimiter"]

log = logging.getLogger("glowing_fiesta.drops")

DROP_LOG_INTERVAL = 10.0  # seconds between log lines about dropped input, per reason


def redact_tokens(sample: bytes | str) -> bytes | str:
    """A logged sample never shows a whole token (a bad line may carry a key: a typo, a
    bad value after a good key): token-shaped runs cut to their display prefix."""
    if isinstance(sample, str):
        return redact_tokens_text(sample)
    return redact_tokens_bytes(sample)


class GcClock:
    """Seconds this process spent in Python's cyclic garbage collector, timed by a
    ``gc.callbacks`` entry while started: the collector's buckets are containers, so the
    collector runs often under load and a full collection walks every live object."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began

    def start(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


@dataclass
class CollectorStats(WriterStats):
    """The writer's counters (a collector's flushes are its writer's) and the intake's."""

    datagrams: int = 0
    tcp_chunks: int = 0
    lines: int = 0  # lines seen, good or bad
    samples: int = 0  # lines aggregated
    tags_ignored: int = 0
    carbon_lines: int = 0  # Graphite plaintext lines seen (also in ``lines``)
    drops: Counter[Reason] = field(default_factory=Counter)
    tcp_connections: int = 0
    tcp_refused: int = 0  # connections over --max-tcp-connections
    tcp_idle_closed: int = 0
    tcp_closed_too_long: int = 0  # connections closed for a line over --max-line-length
    key_lookups_shed: int = 0  # lines dropped (overload): MAX_KEY_LOOKUPS_WAITING tokens wait
    backpressure_skips: int = 0  # flush ticks that left buckets in the aggregator (full)
    flush_ticks_merged: int = 0  # ticks that did not cut: a slow or unfinished write
    store_ready: int = 1  # gauge: 0 while the schema migration waits for the database
    retention_passes: int = 0
    retention_rows_deleted: int = 0
    retention_flush_records_deleted: int = 0
    retention_failures: int = 0
    retention_last_seconds: float = 0.0
    logged_drops: int = 0  # log lines written about drops (each a change of quiet_reasons)
    _last_logged: dict[Reason, float] = field(default_factory=dict)
    _unlogged: Counter[Reason] = field(default_factory=Counter)

    def drop(self, reason: Reason, count: int = 1, sample: bytes | str = b"") -> None:
        """Count dropped lines and log a sample, at most once per reason per interval."""
        self.drops[reason] += count
        self._unlogged[reason] += count
        now = time.monotonic()
        if now - self._last_logged.get(reason, -DROP_LOG_INTERVAL) >= DROP_LOG_INTERVAL:
            self._last_logged[reason] = now
            self.logged_drops += 1
            log.warning(
                "dropped %d line(s): %s; sample: %r",
                self._unlogged.pop(reason),
                reason.value,
                redact_tokens(sample),
            )

    def count_drops(self, reason: Reason, count: int) -> None:
        """Count drops that came while no log line of their reason was due (the C pass
        counts those itself: see quiet_reasons); the next log line includes them."""
        self.drops[reason] += count
        self._unlogged[reason] += count

    def quiet_reasons(self, now: float) -> tuple[list[Reason], float]:
        """The reasons whose next drop at ``now`` (time.monotonic()) would only be
        counted (a line of each was logged within DROP_LOG_INTERVAL), and the time the
        first of those intervals ends."""
        quiet = []
        until = math.inf
        for reason, logged in self._last_logged.items():
            end = logged + DROP_LOG_INTERVAL
            if now < end:
                quiet.append(reason)
                until = min(until, end)
        return quiet, until

    def drop_errors(self, errors: list[LineError]) -> None:
        for error in errors:
            self.drop(error.reason, 1, error.line + b"  (" + error.detail.encode() + b")")

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


class LogLimiter:
    """At most one log line per key per interval; the line says how many were held back.

    For events that can come in floods (refused or idle-closed connections).
    """

    def __init__(self, logger: logging.Logger, interval: float = DROP_LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def log(self, key: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._held[key] += 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            self.logger.log(level, message + " (and %d more like it)", *args, held)
        else:
            self.logger.log(level, message, *args)
