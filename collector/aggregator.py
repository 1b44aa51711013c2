"""Per-second buckets in memory: epoch second -> metric -> [cnt, sum, min, max, kind];
and beside them one summary per metric-minute: minute -> metric -> summary.

One table per second rather than one table keyed by (metric, second): a bucket then
costs no key tuple and no int of its own (326 -> 234 B of RSS per metric-second,
``scripts/bench --only memory``), and the hot path finds this second's table once per
datagram, then each bucket with one lookup by name and no key to build.

What each kind keeps (a sampled line ``|@r`` weighs 1/r in the buckets' counts):

- counter ``n|c``: the bucket (cnt += 1/r, sum += n/r); no summary.
- value ``x|ms`` (v, h, d): the bucket, and the minute's quantile sketch
  (protocol.sketch, alpha from --sketch-alpha) gets x with weight 1/r, as the count
  does (--no-sketches: no sketch).
- set ``m|s``: the bucket counts lines (cnt = sum += 1/r, min = max = 1); the minute's
  HyperLogLog (protocol.hll) gets the member, whatever the rate (a member is in the set
  or not).
- gauge ``x|g``: the gauge's current value (``gauges``, kept across take()) becomes x;
  ``+x|g`` / ``-x|g`` add x to it, or set it to the signed x if the gauge is unseen
  (Etsy statsd's rule: ``-5|g`` on a new gauge is -5). The resulting value is the
  bucket's sample (weight 1: a rate on a gauge line is ignored, as in Etsy statsd) and
  the minute's last value (by arrival order). A ``|g`` sample of a name that is a
  value (stored before gauges existed) is a plain value sample, sign and all.

Runs on the event loop only; the flusher swaps the tables out with ``take()`` (O(1)),
so nothing else ever touches a table that is still being written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any, Final, NamedTuple, Protocol

from collector.config import CollectorConfig
from collector.stats import CollectorStats
from protocol.buckets import is_finite_bucket, merge
from protocol.hll import DistinctCount
from protocol.lines import KIND_BY_TYPE, NUMBER, LineParser, Parsed, Reason, Sample
from protocol.names import COUNTER, GAUGE, SET, VALUE, Kind
from protocol.sketch import PySketch, Sketch

# ts -> name -> [cnt, sum, mn, mx, kind]. Each bucket carries its kind, so a bucket
# taken before the store corrected a name's kind is never written under the new one.
# A value bucket (with sketches on) also holds its minute's sketch, as a sixth item:
# the hot path then finds the sketch with the bucket, one lookup fewer per sample.
# A second has a table only while it holds a bucket (no empty tables are left behind).
Buckets = dict[int, dict[str, list[Any]]]
# minute (epoch second, a multiple of 60) -> name -> that metric-minute's summary since
# the last take(): a sketch (value: protocol._sketch.Sketch with the C pass, else the
# reference protocol.sketch.PySketch: the same bins and bytes), a DistinctCount (set)
# or the last value, a float (gauge). No empty tables either.
Sketches = dict[int, dict[str, Any]]


class Taken(NamedTuple):
    """What take() hands to the flusher."""

    buckets: Buckets
    sketches: Sketches


# What a key check answers for a token: usable for writing, not usable, or not known yet.
KEY_OK: Final = 1
KEY_BAD: Final = 0
KEY_UNKNOWN: Final = -1
KeyCheck = Callable[[str], int]

# Optional C accelerator of feed() (collector/_fastfeed.c): parses every line in C and
# aggregates those of known names; the Python loop otherwise (same results).
# It returns (pos, added, created, tagged, drops): drops None, or per C reason (below).
FastFeed = Callable[..., tuple[int, int, int, int, tuple[int, ...] | None]]


class HeadCache(Protocol):
    """The fast path's name cache, head (bytes before ":") -> (name, kind): a dict for
    the pure-Python loop; for the C pass, its HeadTable, whose entries also own the
    buckets of their names' latest seconds (see Aggregator.buckets)."""

    def __len__(self) -> int: ...
    def __contains__(self, head: object) -> bool: ...
    def __setitem__(self, head: bytes, entry: tuple[str, Kind]) -> None: ...
    def get(self, head: bytes) -> tuple[str, Kind] | None: ...
    def pop(self, head: bytes, default: None) -> tuple[str, Kind] | None: ...
    def clear(self) -> None: ...

_feed_fast: FastFeed | None
_has_sketches: Callable[[], bool] | None
_head_table: type[_fastfeed.HeadTable] | None
# Reason -> its bit in feed's ``quiet`` argument and index in its drop counts.
_C_REASON_BITS: dict[Reason, int] = {}
_C_REASONS: tuple[Reason | None, ...] = ()
try:
    from collector import _fastfeed
except ImportError:  # not built: the pure-Python path, same results
    _feed_fast = _has_sketches = _head_table = None
else:
    _feed_fast = _fastfeed.feed
    _has_sketches = _fastfeed.has_sketches
    _head_table = _fastfeed.HeadTable
    _C_REASONS = tuple(Reason(name) if name else None for name in _fastfeed.REASONS)
    _C_REASON_BITS = {reason: 1 << i for i, reason in enumerate(_C_REASONS) if reason}


def _owns_nothing(*_name: str) -> None:
    """forget_buckets and release of the pure-Python loop's name cache (a dict), which
    owns no bucket."""


def _c_sketch_type() -> type[Any] | None:
    """protocol._sketch.Sketch, the C sketch whose capsule the C pass adds through, or
    None if it is not built (then value names with sketches on take the Python loop)."""
    built: type[Any] = Sketch  # protocol.sketch: the C type where it is built
    if _has_sketches is None or built is PySketch or not _has_sketches():
        return None
    return built


MAX_HELD_SAMPLES: Final = 100_000  # keyed samples waiting for their key's lookup
MAX_KNOWN_HEADS: Final = 200_000  # fast-path name cache entries (see Aggregator.feed)
MAX_KNOWN_TAILS: Final = 10_000  # "value|type" cache of the pure-Python loop only
IDLE_SWEEP_SLICE: Final = 10_000  # names one evict_idle call looks at (~1 ms of the loop)


class Aggregator:
    def __init__(
        self,
        config: CollectorConfig,
        stats: CollectorStats,
        *,
        key_check: KeyCheck | None = None,
        on_unknown_key: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_unknown_key(token)`` starts a lookup for a token not cached yet; False:
        no lookup can be queued now, so the line is dropped (``overload``)."""
        self.config = config
        self.stats = stats
        self.parser = LineParser(
            max_line_length=config.max_line_length, max_age=config.retention_raw
        )
        # The C pass's entries own the buckets of their names' latest seconds: their
        # fields are newer than the lists'. Read them through ``buckets`` (or take()).
        self._buckets: Buckets = {}
        self.sketches: Sketches = {}
        # Buckets in ``buckets`` plus summaries in ``sketches`` (summing the tables'
        # sizes is O(seconds)): what max_pending_buckets caps.
        self._pending = 0
        # name -> the gauge's current value, by arrival order: kept across take() (a
        # delta applies to it), restored at start-up (restore_gauges), forgotten with
        # the name (evict_idle).
        self.gauges: dict[str, float] = {}
        self._alpha_bp = config.alpha_bp
        # The C pass, and the sketch type it and the Python paths share: the C pass
        # adds to protocol._sketch sketches through their capsule, so without that
        # module, value names with sketches on take the Python loop (same results).
        feed_fast = _feed_fast
        c_sketch = _c_sketch_type() if feed_fast is not None else None
        if feed_fast is not None and config.sketches and c_sketch is None:
            feed_fast = None
        self._feed_fast = feed_fast
        # The pure-Python loop keeps the reference sketch: in practice the C sketch is
        # built wherever the C pass is, and tests hold the two paths' bytes equal.
        self._new_sketch: Callable[[int], Any] = PySketch if c_sketch is None else c_sketch
        # name -> kind: fixed by the first sample (or by the store, see learn_kinds).
        self.kinds: dict[str, Kind] = {}
        self.key_check = key_check
        self.on_unknown_key = on_unknown_key
        # token -> samples (with their arrival second) waiting for the key lookup
        self.held: dict[str, list[tuple[Sample, int]]] = {}
        self._held_count = 0
        # head (bytes before ":") -> (name, kind) for unkeyed names of a fixed kind:
        # the fast path of feed(). Cleared when the kinds change (learn_kinds). The C
        # pass's table owns buckets: _forget_buckets() before anything reads a bucket
        # or takes one away, _release_bucket(name) before Python adds to one.
        self._known: HeadCache = {}
        self._forget_buckets: Callable[[], None] = _owns_nothing
        self._release_bucket: Callable[[str], None] = _owns_nothing
        if feed_fast is not None and _head_table is not None:
            head_table = _head_table()
            self._known = head_table
            self._forget_buckets = head_table.forget_buckets
            self._release_bucket = head_table.release
        self._tails: dict[bytes, tuple[float, Kind]] = {}  # b"1|c" -> (1.0, counter)
        # Idle names leave ``kinds`` (see evict_idle). name -> clock() of the last take()
        # that held a bucket of it (or of the sweep that first noticed it).
        self.clock = clock
        self._last_active: dict[str, float] = {}
        self._sweep: list[str] = []  # names the sweep in progress has yet to look at
        self._next_sweep = 0.0
        self.evicted = 0  # names forgotten for idleness since start
        # _quiet_reasons' answer, valid until _quiet_until (monotonic) while no drop was
        # logged since (stats.logged_drops)
        self._quiet = 0
        self._quiet_until = -math.inf
        self._quiet_logged = -1

    @property
    def buckets(self) -> Buckets:
        """The buckets not taken yet, their fields current (the C pass gives up the
        buckets its name cache owns, so their lists hold every sample)."""
        self._forget_buckets()
        return self._buckets

    @property
    def pending_buckets(self) -> int:
        """Metric-seconds and metric-minute summaries held, not yet taken: what
        ``max_pending_buckets`` caps."""
        return self._pending

    @property
    def uses_c(self) -> bool:
        """True if feed() runs the C pass (built, and able to keep the sketches)."""
        return self._feed_fast is not None

    def feed(self, data: bytes, now: int) -> None:
        """Parse a datagram or a run of complete TCP lines and aggregate its samples.

        The hot path (a profile of the daemon under UDP load put ~28% of its time in
        building one Sample per line, ~26% in ``add``): parse and aggregate in one pass,
        no per-line objects, for the lines of names validated before. With the C
        accelerator that is every valid unkeyed counter, value or gauge line of a
        known name (any value, rate, tags, |T), sketches and gauge deltas included; the
        pure-Python loop takes only counter and value lines ``name:value|type``. Every
        other line (first sight of a name, a key prefix, a set line, in Python a gauge
        line, anything bad, a conflict, an overflow) goes through
        ``LineParser.parse`` and ``add`` in its turn, so the result is exactly the same
        as parsing the whole datagram first, line order included.
        """
        if self.config.require_key:
            self._feed_parsed(data, now)
            return
        feed_fast = self._feed_fast
        if feed_fast is not None:
            self._feed_c(feed_fast, data, now)
            return
        buckets = self._buckets
        table = buckets.get(now)
        if table is None:
            table = buckets[now] = {}
        self._feed_lines(data, now, table)
        if not table:  # made for nothing (all lines elsewhere or dropped): no empty tables
            del buckets[now]

    def _feed_c(self, feed_fast: FastFeed, data: bytes, now: int) -> None:
        """The C accelerator parses every line (the whole grammar, bit for bit that of
        LineParser) and aggregates the good counter, value and gauge lines of known
        names (``add``'s rules: sketches, gauge deltas and lasts); it stops at any
        other line (a new name, a key prefix, a set, a bad line, a conflict, an
        overflow, the cap), which the general path handles, counts and learns from,
        before C goes on. A bad line whose reason was logged within the drop-log
        interval (so it would only be counted) is counted by C itself: at 1% bad lines
        the round trips through the general path were ~35% of this pass."""
        size = len(data)
        pos = added = tagged = 0
        known = self._known
        buckets = self._buckets
        sketches = self.sketches
        gauges = self.gauges
        value_sketches = self.config.sketches
        alpha_bp = self._alpha_bp
        max_len = self.parser.max_line_length
        max_age = self.parser.max_age
        cap = self.config.max_pending_buckets
        stats = self.stats
        quiet = self._quiet_reasons()
        while True:
            pos, count, created, tags, drops = feed_fast(
                data, pos, now, max_age, max_len, known, buckets, cap - self._pending,
                sketches, gauges, alpha_bp, value_sketches, quiet,
            )
            added += count
            tagged += tags
            self._pending += created
            if drops is not None:
                for reason, dropped in zip(_C_REASONS, drops, strict=True):
                    if dropped and reason is not None:
                        stats.count_drops(reason, dropped)
                        stats.lines += dropped
            if pos >= size:
                break
            end = data.find(b"\n", pos)
            if end < 0:
                end = size
            line = data[pos:end]
            self._feed_line(line, line.partition(b":")[0], now)
            quiet = self._quiet_reasons()  # that line may have been logged
            pos = end + 1
        stats.lines += added
        stats.samples += added
        stats.tags_ignored += tagged

    def _quiet_reasons(self) -> int:
        """The bits (feed's ``quiet``) of the reasons whose drops are only counted now:
        a line of each was logged within the drop-log interval. Recomputed when the
        first of those intervals ends, or when a line was logged since."""
        now = time.monotonic()
        stats = self.stats
        if now < self._quiet_until and stats.logged_drops == self._quiet_logged:
            return self._quiet
        quiet, until = stats.quiet_reasons(now)
        self._quiet = sum(_C_REASON_BITS.get(reason, 0) for reason in quiet)
        self._quiet_until = until
        self._quiet_logged = stats.logged_drops
        return self._quiet

    def _feed_lines(self, data: bytes, now: int, table: dict[str, list[Any]]) -> None:
        """The fused loop in pure Python (without the accelerator, and its fallback).

        ``table`` is ``buckets[now]``, made by ``feed`` (the general path adds to it too).
        A value's new metric-second (with sketches) goes through ``add``, which finds
        or makes its minute's sketch.
        """
        known = self._known
        kind_by_type = KIND_BY_TYPE
        max_len = self.parser.max_line_length
        tails = self._tails
        sketches_on = self.config.sketches
        lines = added = 0
        for line in data.split(b"\n"):
            head, _colon, rest = line.partition(b":")
            entry = known.get(head)
            if entry is None or len(line) > max_len:
                if line:
                    self._feed_line(line, head, now)
                continue
            # The part after ":" repeats even more than names do ("1|c"): parsed once.
            tail = tails.get(rest)
            if tail is None:
                raw, _bar, type_code = rest.partition(b"|")
                # Anything but a type code alone ("c|@0.5", "ms|#tags", "c\r", an
                # unknown type), a gauge or a set, and any unusual value take the
                # general path.
                type_kind = kind_by_type.get(type_code)
                if type_kind is not COUNTER and type_kind is not VALUE:
                    self._feed_line(line, head, now)
                    continue
                if raw.isdigit() and len(raw) < 300:  # the common case: a plain integer
                    value = float(raw)
                elif NUMBER.fullmatch(raw) is None or not math.isfinite(value := float(raw)):
                    self._feed_line(line, head, now)
                    continue
                if len(tails) >= MAX_KNOWN_TAILS:
                    tails.clear()
                tail = tails[rest] = (value, type_kind)
            value, type_kind = tail
            name, kind = entry
            if type_kind != kind:  # a kind conflict (or |g of a value): the general path
                self._feed_line(line, head, now)
                continue
            bucket = table.get(name)
            if bucket is None:
                if (sketches_on and kind == VALUE) or (
                        self._pending >= self.config.max_pending_buckets):
                    # a bucket with its sketch (add finds or makes it), or the cap
                    lines += 1
                    self.add(Sample(name, kind, value, 1.0, None, None), now)
                    continue
                table[name] = [1.0, value, value, value, kind]
                self._pending += 1
                added += 1
                continue
            total = bucket[1] + value
            if total - total != 0.0:  # inf: buckets.is_finite_bucket, inline
                lines += 1
                self.add(Sample(name, kind, value, 1.0, None, None), now)  # counts it
                continue
            if sketches_on and kind == VALUE:
                bucket[5].add(value, 1.0)  # the minute's sketch
            bucket[0] += 1.0  # finite: a count of 1e308 samples never comes
            bucket[1] = total
            if value < bucket[2]:
                bucket[2] = value
            elif value > bucket[3]:
                bucket[3] = value
            added += 1
        stats = self.stats
        stats.lines += lines + added
        stats.samples += added

    def _feed_line(self, line: bytes, head: bytes, now: int) -> None:
        """One line through the general path; then remember its head for the fast path
        if it is an unkeyed name whose kind is fixed."""
        self._feed_parsed(line, now)
        cached = self.parser._heads.get(head)
        if cached is not None and cached[0] is None:
            kind = self.kinds.get(cached[1])
            if kind is not None:
                known = self._known
                if len(known) >= MAX_KNOWN_HEADS:
                    known.clear()  # bounded memory under a flood of distinct names
                known[head] = (cached[1], kind)

    def _feed_parsed(self, data: bytes, now: int) -> None:
        """The general path: the full parser, then ``add`` per sample."""
        self.add_parsed(self.parser.parse(data, now), now)

    def add_parsed(self, parsed: Parsed, now: int) -> None:
        """Aggregate what a parser made of arrived lines (the line protocol's, or
        another protocol's: carbon), counted, keyed and bounded alike."""
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
        """Aggregate one sample (module docstring: what each kind keeps).

        Checked before anything changes, in this order: the name's kind (new names
        past max_metrics: too_many_metrics; the other kind: kind_conflict), overflow
        (the bucket, or the gauge, would stop being finite), then the cap: a new
        bucket and a new summary take one max_pending_buckets slot each (overload).
        """
        name, kind, value, rate, timestamp, _token, member, delta = sample
        kinds = self.kinds
        known = kinds.get(name)
        if known is None:
            if len(kinds) >= self.config.max_metrics:
                self.stats.drop(Reason.TOO_MANY_METRICS, 1, name)
                return
            kinds[name] = kind
        elif known != kind:
            if known == VALUE and kind == GAUGE:
                kind = VALUE  # stored as a value before gauges existed: a plain value
            else:
                self.stats.drop(Reason.KIND_CONFLICT, 1, f"{name}: {kind} sample for a {known}")
                return
        ts = now if timestamp is None else timestamp
        self._release_bucket(name)  # the C pass's fields into the list first
        table = self._buckets.get(ts)
        bucket = None if table is None else table.get(name)
        weight = 1.0 if rate == 1.0 else 1.0 / rate  # <= 1e6: the parser's RATE_FLOOR
        if kind == GAUGE:
            if delta:
                current = self.gauges.get(name)
                if current is not None:
                    value = current + value
            weight = 1.0  # the rate of a gauge line is ignored (Etsy statsd)
            total = value
        elif kind == SET:
            total = weight
            value = 1.0
        else:
            total = value if weight == 1.0 else value * weight
        sketched = kind == VALUE and self.config.sketches  # the bucket holds the sketch
        summarised = sketched or kind in (GAUGE, SET)
        minute = ts - ts % 60
        summaries: dict[str, Any] | None = None
        summary: Any = None  # a sketch, a DistinctCount or a gauge's last value
        if sketched and bucket is not None:
            summary = bucket[5]
        elif summarised:
            summaries = self.sketches.get(minute)
            summary = None if summaries is None else summaries.get(name)
        if bucket is None:
            if not is_finite_bucket(weight, total, value, value):  # e.g. 1e308|c|@0.1
                self.stats.drop(Reason.OVERFLOW, 1, name)
                return
        elif not is_finite_bucket(bucket[0] + weight, bucket[1] + total, value, value):
            self.stats.drop(Reason.OVERFLOW, 1, name)
            return
        needed = (bucket is None) + (summarised and summary is None)
        if needed and self._pending + needed > self.config.max_pending_buckets:
            self.stats.drop(Reason.OVERLOAD, 1, name)
            return
        if summarised:
            if summary is None or kind == GAUGE:
                if summaries is None:
                    summaries = self.sketches.get(minute)
                    if summaries is None:
                        summaries = self.sketches[minute] = {}
                if kind == GAUGE:
                    summaries[name] = value  # the minute's last value
                elif kind == SET:
                    summary = summaries[name] = DistinctCount()
                else:
                    summary = summaries[name] = self._new_sketch(self._alpha_bp)
            if kind == SET:
                # A set sample always has its member (protocol.lines); another source
                # of sets would key by the value's text.
                summary.add(member if member is not None else repr(sample.value))
            elif kind == VALUE:
                summary.add(value, weight)
        if kind == GAUGE:
            self.gauges[name] = value
        if bucket is None:
            if table is None:
                table = self._buckets[ts] = {}
            if sketched:
                table[name] = [weight, total, value, value, kind, summary]
            else:
                table[name] = [weight, total, value, value, kind]
        else:
            merge(bucket, weight, total, value, value)
        self._pending += needed
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
                if self.on_unknown_key is not None and not self.on_unknown_key(token):
                    self.stats.drop(Reason.OVERLOAD, 1, sample.name)  # lookups saturated
                    return
                waiting = self.held[token] = []
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

    def take(self) -> Taken:
        """Hand the current buckets and summaries to the flusher and start empty.
        The gauges' current values stay (a delta after a flush applies to them)."""
        buckets, self._buckets = self._buckets, {}
        sketches, self.sketches = self.sketches, {}
        self._forget_buckets()
        self._pending = 0
        self._note_active(buckets)
        return Taken(buckets, sketches)

    def restore_gauges(self, lasts: dict[str, float]) -> int:
        """Take the gauges' current values from the store at start-up
        (``Store.gauge_lasts``), so a delta after a restart applies to the value before
        it. A gauge that has had a sample since start keeps that (newer) value; a name
        this collector knows as another kind, or one past max_metrics, is skipped.
        Returns how many were restored."""
        kinds = self.kinds
        gauges = self.gauges
        stamp = self.clock()
        restored = 0
        for name, value in lasts.items():
            if name in gauges or not math.isfinite(value):
                continue
            known = kinds.get(name)
            if known is None:
                if len(kinds) >= self.config.max_metrics:
                    continue
                kinds[name] = GAUGE
            elif known != GAUGE:
                continue
            gauges[name] = value
            self._last_active.setdefault(name, stamp)  # idle from now on, not before
            restored += 1
        return restored

    def _note_active(self, buckets: Buckets) -> None:
        """Stamp the names of these buckets as active now (for evict_idle).

        Here rather than in feed: the fast path (and the C pass) never touches
        ``kinds``, but every sample it takes ends in a bucket, and every bucket passes
        through take() once. One C-speed dict update per second of buckets (about 1 ms
        per 10,000 names on the test machine; each bucket costs the flusher more)."""
        if self.config.metric_idle_ttl <= 0:
            return
        stamp = self.clock()
        active = self._last_active
        for table in buckets.values():
            active.update(zip(table, repeat(stamp)))

    def evict_idle(self) -> bool:
        """Forget names that had no sample for ``metric_idle_ttl`` seconds, so they
        leave the ``max_metrics`` count (Etsy statsd's ``deleteIdleStats``): a flood of
        junk names blocks new metrics for that long, not until a restart. An idle
        gauge's current value goes with it: a delta after that sets it anew.

        Amortised: a sweep over every name starts at most every ttl/4 (between 0.25 s
        and 60 s), and each call looks at IDLE_SWEEP_SLICE names of it. Returns True
        while a sweep is in progress (call again soon), False when idle.

        A forgotten name is out of the fast path's cache too; seen again, it is learnt
        again from its first sample like a new name, kind included (so the store's
        kind check at flush still applies: see learn_kinds).
        """
        ttl = self.config.metric_idle_ttl
        if ttl <= 0:
            return False
        now = self.clock()
        active = self._last_active
        kinds = self.kinds
        if not self._sweep:
            if now < self._next_sweep:
                return False
            self._next_sweep = now + min(60.0, max(0.25, ttl / 4))
            if len(active) > 2 * len(kinds) + 1000:  # names learn_kinds never saw again
                self._last_active = active = {n: t for n, t in active.items() if n in kinds}
            self._sweep = list(kinds)
        cutoff = now - ttl
        chunk = self._sweep[-IDLE_SWEEP_SLICE:]
        del self._sweep[-IDLE_SWEEP_SLICE:]
        for name in chunk:
            last = active.get(name)
            if last is None:  # learnt but never taken yet (held, dropped, or in a bucket)
                active[name] = now
            elif last < cutoff and name in kinds:
                if any(name in table for table in self._buckets.values()):
                    active[name] = now  # a sample since the last take: active after all
                    continue
                self._forget(name)
        return bool(self._sweep)

    def _forget(self, name: str) -> None:
        """Drop every trace of ``name`` that makes it a known metric: its kind, its
        activity stamp, its gauge value and its fast-path cache entry (an unkeyed head
        is the name's bytes: see _feed_line), so the next sample takes the general
        path."""
        del self.kinds[name]
        del self._last_active[name]
        self.gauges.pop(name, None)
        self._known.pop(name.encode("ascii"), None)
        self.evicted += 1

    def learn_kinds(self, stored: dict[str, Kind]) -> None:
        """The store holds these names with another kind: later samples must match it.

        What is pending for such a name under the old kind would be refused at its
        flush: it is dropped now and counted as kind_conflict (as the flusher counts
        the refused part of a batch), so that the next samples start buckets and
        summaries of the stored kind."""
        kinds = self.kinds
        changed = {name for name, kind in stored.items() if kinds.get(name, kind) != kind}
        if changed:
            self._drop_pending(changed)
        kinds.update(stored)
        self._known.clear()

    def _drop_pending(self, names: set[str]) -> None:
        self._forget_buckets()
        for tables in (self._buckets, self.sketches):
            for key in list(tables):
                table = tables[key]
                for name in names.intersection(table):
                    item = table.pop(name)
                    self._pending -= 1
                    if tables is self._buckets:
                        self.stats.drop(Reason.KIND_CONFLICT, round(item[0]),
                                        f"{name}: {item[4]} samples for a changed kind")
                if not table:
                    del tables[key]
        for name in names:
            self.gauges.pop(name, None)
