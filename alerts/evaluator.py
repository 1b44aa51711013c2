"""The alert evaluator: every ``--alert-interval``, while this process holds the lease,
every rule is evaluated against the stored data and what changed is stored.

One evaluation costs a bounded number of queries, whatever the number of rules: the
rules and states are read a page of 1,000 at a time, the metrics' ids and the windows'
totals in chunks of 500 metrics (one query per chunk and distinct window, from the
rollups: whole minutes and hours from points_1m and points_1h), the newest points of the
missing-data rules' metrics in chunks of 500, a glob's matches once per distinct glob.
Then the pure state machine (``protocol.alerts.step``) moves each (rule, metric), and the
changed states, their transitions and the notifications they queue are stored in one
transaction, under the lease (``Store.save_evaluation``).

Outages: an evaluation that cannot read the store changes nothing. Once the store
answers again, absence is counted from that moment for missing-data rules (their data
may still be in a collector's spool), so an outage never fires them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import orjson

from alerts.config import AlertConfig
from alerts.lease import NAME as LEASE_NAME
from alerts.lease import Lease
from alerts.notifier import CONCURRENCY, Notifier
from protocol.alerts import (
    MAX_MATCHES,
    MAX_RULES,
    AlertState,
    Notice,
    Rule,
    RuleError,
    State,
    glob_prefix,
    glob_regex,
    idempotency_key,
    is_glob,
    missing_value,
    observe,
    parse_rule,
    step,
    target_json,
    webhook_payload,
)
from protocol.buckets import Aggregation
from store.base import (
    AlertRuleRow,
    AlertStateRow,
    AlertTransitionRow,
    OutboxRow,
    Store,
    StoreError,
    WindowTotal,
)

log = logging.getLogger(__name__)

PAGE: Final = 1000
# (rule, metric) pairs one evaluation takes at most (globs could ask for 20,000 x 1,000);
# past it the rest wait, and a warning says so.
MAX_PAIRS: Final = 200_000
OUTBOX_KEEP: Final = 7 * 86400  # seconds a sent or given-up notification is kept


def window_value(total: WindowTotal | None, aggregation: Aggregation, window: int) -> float | None:
    """A threshold rule's aggregate over its window (None: no point in it)."""
    if total is None or not total.cnt:
        return None
    if aggregation == "sum":
        value = total.sum
    elif aggregation == "count":
        value = total.cnt
    elif aggregation == "avg":
        value = total.sum / total.cnt
    elif aggregation == "min":
        value = total.mn
    elif aggregation == "max":
        value = total.mx
    else:  # rate: per second over the window
        value = total.sum / window
    return value if math.isfinite(value) else None


@dataclass
class EvaluatorStats:
    evaluations: int = 0  # evaluations stored
    failures: int = 0  # evaluations the store did not let finish
    rules_evaluated: int = 0  # (rule, metric) pairs, summed over evaluations
    transitions: int = 0
    lag: float = 0.0  # seconds the last evaluation started after it was due
    duration: float = 0.0  # seconds the last evaluation took
    leader: bool = False


@dataclass
class _Parsed:
    updated_at: int
    created_at: int
    rule: Rule


class Evaluator:
    def __init__(
        self, store: Store, config: AlertConfig, base_url: str, *,
        clock: Callable[[], float] = time.time, lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.base_url = base_url
        self.clock = clock
        # The lease outlives a round of deliveries (see tick) and a missed evaluation.
        self.lease = lease or Lease(store, ttl=max(3 * config.interval, 2.0,
                                                   config.webhook_timeout + config.interval))
        self.notifier = Notifier(store, config, clock=clock)
        self.stats = EvaluatorStats()
        self._rules: dict[int, _Parsed] = {}  # parsed once per (id, updated_at)
        self._recovered_at = 0.0  # when the store last came back after an outage
        self._outage = False
        self.outbox: dict[str, int] = {}  # status -> notifications, as of the last tick

    def metrics(self) -> dict[str, tuple[str, float]]:
        """Self-metrics for the HTTP service's /metrics (read at scrape time)."""
        s, n = self.stats, self.notifier.stats
        return {
            "gf_alert_evaluations": ("Alert evaluations stored by this process.",
                                     s.evaluations),
            "gf_alert_evaluation_failures": (
                "Alert evaluations the store did not let finish.", s.failures),
            "gf_alert_rules_evaluated": ("(rule, metric) pairs evaluated, in all.",
                                         s.rules_evaluated),
            "gf_alert_transitions": ("Alert state transitions stored.", s.transitions),
            "gf_alert_evaluation_lag_seconds": (
                "How late the last evaluation started after it was due.", s.lag),
            "gf_alert_evaluation_duration_seconds": (
                "How long the last evaluation took.", s.duration),
            "gf_alert_leader": ("1 while this process holds the evaluator lease.",
                                float(s.leader)),
            "gf_alert_notifications_sent": ("Notifications delivered by this process.",
                                            n.sent),
            "gf_alert_notifications_failed": (
                "Notifications given up after 24 h of retries, by this process.", n.failed),
            "gf_alert_notification_attempts_failed": (
                "Delivery attempts that failed (each is retried).", n.attempts_failed),
            "gf_alert_notifications_retrying": (
                "Notifications waiting in the outbox for delivery or a retry (as of the "
                "leader's last evaluation here).", self.outbox.get("pending", 0)),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate every interval until ``stop`` is set; then give the lease up."""
        interval = self.config.interval
        due = time.monotonic()
        try:
            while not stop.is_set():
                self.stats.lag = max(0.0, time.monotonic() - due)
                await self.tick()
                due += interval
                due = max(due, time.monotonic())  # an overrun skips, never bunches up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), due - time.monotonic())
        finally:
            with contextlib.suppress(StoreError):
                await self.lease.release()
            await self.notifier.close()

    async def tick(self) -> None:
        """One interval: take or renew the lease; if held, evaluate, then deliver."""
        try:
            now = self.clock()
            self.stats.leader = await self.lease.acquire(now)
            if not self.stats.leader:
                return
            await self.evaluate(now)
            # Rounds of deliveries for at most one interval, the lease renewed before
            # each: a round takes at most --webhook-timeout, which the lease outlasts,
            # so no other process can take over (and deliver the same rows) meanwhile.
            budget = time.monotonic() + self.config.interval
            while await self.notifier.deliver_due() == CONCURRENCY \
                    and time.monotonic() < budget \
                    and await self.lease.acquire(self.clock()):
                pass
            await self.store.delete_finished_notifications(now - OUTBOX_KEEP, 1000)
            self.outbox = await self.store.count_notifications()
        except StoreError as exc:
            self.stats.failures += 1
            if not self._outage:
                log.warning("alert evaluation paused: the store is unavailable (%s)", exc)
            self._outage = True
        except Exception:
            self.stats.failures += 1
            log.exception("alert evaluation failed")

    async def evaluate(self, now: float) -> bool:
        """Evaluate every rule once at ``now`` and store what changed. False if the lease
        was lost meanwhile (nothing stored). Raises StoreError."""
        started = time.monotonic()
        if self._outage:
            self._outage = False
            self._recovered_at = now
            log.info("the store answers again: alert evaluation resumes")
        rules = await self._load_rules()
        states = {(s.rule_id, s.metric): s for s in await self.store.alert_states()}
        targets = await self._targets(rules)
        names = sorted({metric for _rule_id, metric in targets})
        ids = await self.store.metric_ids(names) if names else {}
        windows: dict[int, set[int]] = {}
        missing_ids: set[int] = set()
        for (rule_id, metric) in targets:
            rule = rules[rule_id].rule
            metric_id = ids.get(metric)
            if metric_id is None:
                continue
            if rule.kind == "missing":
                missing_ids.add(metric_id)
            else:
                windows.setdefault(rule.window, set()).add(metric_id)
        end = math.floor(now)
        totals = {window: await self.store.read_windows(sorted(wanted), end - window, end)
                  for window, wanted in windows.items()}
        seen = await self.store.last_seen(sorted(missing_ids)) if missing_ids else {}

        changed: list[AlertStateRow] = []
        moves: list[AlertTransitionRow] = []
        outbox: list[OutboxRow] = []
        for (rule_id, metric) in targets:
            parsed = rules[rule_id]
            rule = parsed.rule
            metric_id = ids.get(metric)
            if rule.kind == "missing":
                last = None if metric_id is None else seen.get(metric_id)
                value: float | None = missing_value(
                    last, max(float(parsed.created_at), self._recovered_at), now)
            else:
                total = None if metric_id is None else totals[rule.window].get(metric_id)
                value = observe(rule, window_value(total, rule.aggregation, rule.window))
            stored = states.get((rule_id, metric))
            current = _state(stored, now)
            new, transitions, notice = step(rule, current, value, now,
                                            min_gap=self.config.min_gap)
            if new.state != current.state or new.notified != current.notified \
                    or new.last_notified != current.last_notified or stored is None:
                changed.append(AlertStateRow(rule_id, metric, new.state, new.since, new.value,
                                             new.last_notified, new.notified))
            moves.extend(AlertTransitionRow(0, rule_id, metric, t.from_state, t.to_state, t.at,
                                            t.value) for t in transitions)
            if notice is not None:
                outbox.extend(self._notifications(rule_id, rule, metric, notice, now))
        saved = await self.store.save_evaluation(
            LEASE_NAME, self.lease.holder, now, changed, moves, outbox)
        self.stats.duration = time.monotonic() - started
        if saved:
            self.stats.evaluations += 1
            self.stats.rules_evaluated += len(targets)
            self.stats.transitions += len(moves)
        return saved

    async def _load_rules(self) -> dict[int, _Parsed]:
        rows: list[AlertRuleRow] = []
        after = 0
        while len(rows) < MAX_RULES:
            page = await self.store.list_rules(PAGE, after)
            rows.extend(page)
            if len(page) < PAGE:
                break
            after = page[-1].id
        cache = self._rules
        fresh: dict[int, _Parsed] = {}
        for row in rows:
            known = cache.get(row.id)
            if known is not None and known.updated_at == row.updated_at:
                fresh[row.id] = known
                continue
            try:
                fresh[row.id] = _Parsed(row.updated_at, row.created_at,
                                        parse_rule(orjson.loads(row.body)))
            except (RuleError, orjson.JSONDecodeError) as exc:
                log.error("alert rule %d cannot be read, skipped: %s", row.id, exc)
        self._rules = fresh
        return fresh

    async def _targets(self, rules: dict[int, _Parsed]) -> list[tuple[int, str]]:
        """(rule id, metric) for every metric each rule watches: its name, or a glob's
        matches among the stored metrics (at most MAX_MATCHES each)."""
        matches: dict[str, list[str]] = {}
        out: list[tuple[int, str]] = []
        for rule_id, parsed in rules.items():
            metric = parsed.rule.metric
            if not is_glob(metric):
                out.append((rule_id, metric))
                continue
            if metric not in matches:
                matches[metric] = await self._glob(metric)
            out.extend((rule_id, name) for name in matches[metric])
        if len(out) > MAX_PAIRS:
            log.warning("alert rules watch %d (rule, metric) pairs; evaluating the first %d",
                        len(out), MAX_PAIRS)
            del out[MAX_PAIRS:]
        return out

    async def _glob(self, pattern: str) -> list[str]:
        prefix, regex = glob_prefix(pattern), glob_regex(pattern)
        found: list[str] = []
        after: str | None = None
        for _ in range(20):  # at most 20 pages of names under one prefix
            page = await self.store.list_metrics(prefix, PAGE, after)
            found.extend(info.name for info in page if regex.fullmatch(info.name))
            if len(page) < PAGE or len(found) >= MAX_MATCHES:
                break
            after = page[-1].name
        return found[:MAX_MATCHES]

    def _notifications(
        self, rule_id: int, rule: Rule, metric: str, notice: Notice, now: float
    ) -> list[OutboxRow]:
        out = []
        for n, target in enumerate(rule.notify):
            key = idempotency_key(rule_id, metric, notice.state, notice.at, n)
            payload = webhook_payload(rule_id, rule, metric, notice, self.base_url, key)
            out.append(OutboxRow(
                0, rule_id, metric, orjson.dumps(target_json(target, redact=False)).decode(),
                orjson.dumps(payload).decode(), key, "pending", 0, now, now, None, None))
        return out


def _state(row: AlertStateRow | None, now: float) -> AlertState:
    if row is None:
        return AlertState(since=now)
    return AlertState(cast(State, row.state), row.since, row.value, row.last_notified,
                      row.notified)
