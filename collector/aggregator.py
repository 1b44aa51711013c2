"""Per-second buckets in memory: (metric, epoch second) -> [cnt, sum, min, max].

Runs on the event loop only; the flusher swaps the whole table out with ``take()``
(O(1)), so nothing else ever touches a table that is still being written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.lines import LineParser, Reason, Sample
from protocol.names import Kind

# (name, ts) -> [cnt, sum, mn, mx, kind]. Each bucket carries its kind, so a bucket
# taken before the store corrected a name's kind is never written under the new one.
Buckets = dict[tuple[str, int], list[Any]]

# What a key check answers for a token: usable for writing, not usable, or not known yet.
KEY_OK: Final = 1
KEY_BAD: Final = 0
KEY_UNKNOWN: Final = -1
KeyCheck = Callable[[str], int]

MAX_HELD_SAMPLES: Final = 100_000  # keyed samples waiting for their key's lookup


class Aggregator:
    def __init__(
        self,
        config: CollectorConfig,
        stats: CollectorStats,
        *,
        key_check: KeyCheck | None = None,
        on_unknown_key: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.parser = LineParser(
            max_line_length=config.max_line_length, max_age=config.retention_raw
        )
        self.buckets: Buckets = {}
        # name -> kind: fixed by the first sample (or by the store, see learn_kinds).
        self.kinds: dict[str, Kind] = {}
        self.key_check = key_check
        self.on_unknown_key = on_unknown_key
        # token -> samples (with their arrival second) waiting for the key lookup
        self.held: dict[str, list[tuple[Sample, int]]] = {}
        self._held_count = 0

    @property
    def pending_buckets(self) -> int:
        return len(self.buckets)

    def feed(self, data: bytes, now: int) -> None:
        """Parse a datagram or a run of complete TCP lines and aggregate its samples."""
        parsed = self.parser.parse(data, now)
        stats = self.stats
        stats.lines += len(parsed.samples) + len(parsed.errors)
        stats.tags_ignored += parsed.tags_ignored
        if parsed.errors:
            stats.drop_errors(parsed.errors)
        for sample in parsed.samples:
            if sample.token is not None or self.config.require_key:
                self._add_keyed(sample, now)
            else:
                self.add(sample, now)

    def add(self, sample: Sample, now: int) -> None:
        name, kind, value, rate, timestamp, _token = sample
        kinds = self.kinds
        known = kinds.get(name)
        if known is None:
            if len(kinds) >= self.config.max_metrics:
                self.stats.drop(Reason.TOO_MANY_METRICS, 1, name)
                return
            kinds[name] = kind
        elif known != kind:
            self.stats.drop(Reason.KIND_CONFLICT, 1, f"{name}: {kind} sample for a {known}")
            return
        key = (name, now if timestamp is None else timestamp)
        bucket = self.buckets.get(key)
        if rate == 1.0:
            weight = 1.0
            total = value
        else:
            weight = 1.0 / rate
            total = value * weight
        if bucket is None:
            if len(self.buckets) >= self.config.max_pending_buckets:
                self.stats.drop(Reason.OVERLOAD, 1, name)
                return
            self.buckets[key] = [weight, total, value, value, kind]
        else:
            bucket[0] += weight
            bucket[1] += total
            if value < bucket[2]:
                bucket[2] = value
            elif value > bucket[3]:
                bucket[3] = value
        self.stats.samples += 1

    def _add_keyed(self, sample: Sample, now: int) -> None:
        token = sample.token
        if token is None:
            self.stats.drop(Reason.NO_KEY, 1, sample.name)
            return
        verdict = KEY_BAD if self.key_check is None else self.key_check(token)
        if verdict == KEY_OK:
            self.add(sample, now)
        elif verdict == KEY_BAD:
            self.stats.drop(Reason.BAD_KEY, 1, sample.name)
        else:
            # Not cached yet: hold the sample until the lookup answers, never block.
            if self._held_count >= MAX_HELD_SAMPLES:
                self.stats.drop(Reason.OVERLOAD, 1, sample.name)
                return
            waiting = self.held.get(token)
            if waiting is None:
                waiting = self.held[token] = []
                if self.on_unknown_key is not None:
                    self.on_unknown_key(token)
            waiting.append((sample, now))
            self._held_count += 1

    def release_key(self, token: str, usable: bool) -> None:
        """The lookup for ``token`` answered: aggregate or drop what was held for it."""
        waiting = self.held.pop(token, [])
        self._held_count -= len(waiting)
        for sample, now in waiting:
            if usable:
                self.add(sample, now)
            else:
                self.stats.drop(Reason.BAD_KEY, 1, sample.name)

    def take(self) -> Buckets:
        """Hand the current buckets to the flusher and start an empty table."""
        buckets, self.buckets = self.buckets, {}
        return buckets

    def learn_kinds(self, stored: dict[str, Kind]) -> None:
        """The store holds these names with another kind: later samples must match it."""
        self.kinds.update(stored)
