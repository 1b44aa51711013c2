"""The evaluator and notifier in-process, on a real store (SQLite and MariaDB), with a
real local webhook receiver and a clock the test sets (evaluations at chosen times)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from alerts.config import AlertConfig
from alerts.evaluator import Evaluator
from protocol.alerts import parse_rule, rule_json
from store import Batch, Store, open_store
from tests.alert_support import Receiver
from tests.faultproxy import FaultProxy

SECRET = "receiver-secret"
T0 = int(time.time()) // 60 * 60 - 3600  # a whole minute, an hour ago


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def add_rule(store: Store, body: dict[str, Any], created: int = T0) -> int:
    rule = parse_rule(body)
    rule_id = await store.create_rule(rule.name, rule.metric,
                                      orjson.dumps(rule_json(rule, redact=False)).decode(),
                                      created, 1000)
    assert rule_id is not None
    return rule_id


def hook(receiver: Receiver) -> list[dict[str, str]]:
    return [{"webhook": receiver.url, "secret": SECRET}]


async def count(store: Store, name: str, times: range, seq: int) -> None:
    points = [(name, "counter", ts, 1.0, 1.0, 1.0, 1.0) for ts in times]
    assert (await store.write_batch(Batch("test", seq, points))).applied


def evaluator(store: Store, clock: Clock, **config: Any) -> Evaluator:
    return Evaluator(store, AlertConfig(interval=0.5, **config), "http://dash:8000",
                     clock=clock)


async def test_threshold_fires_once_and_resolves_once(store: Store, receiver: Receiver) -> None:
    await count(store, "app.errors", range(T0, T0 + 20), 1)
    rule_id = await add_rule(store, {"name": "errors", "metric": "app.errors", "window": "1m",
                                     "op": ">", "threshold": 10, "for": "5s",
                                     "notify": hook(receiver)})
    clock = Clock(T0 + 21)
    ev = evaluator(store, clock)
    await ev.tick()
    assert (await store.alert_states([rule_id]))[0].state == "pending"
    assert receiver.deliveries == []
    for now in (T0 + 27, T0 + 28, T0 + 40):
        clock.now = now
        await ev.tick()
    assert receiver.states() == [("app.errors", "firing")]
    (fired,) = receiver.deliveries
    assert fired.signed_with(SECRET) and not fired.signed_with("wrong")
    payload = fired.payload
    assert payload["value"] == 20.0 and payload["idempotency_key"] == fired.key
    assert payload["link"] == "http://dash:8000/#m=app.errors&r=1h"
    assert payload["rule"] == {"id": rule_id, "name": "errors", "kind": "threshold"}
    clock.now = T0 + 81  # the window holds nothing now: sum 0
    await ev.tick()
    clock.now = T0 + 90
    await ev.tick()
    assert receiver.states() == [("app.errors", "firing"), ("app.errors", "ok")]
    history = await store.rule_history(rule_id, 10)
    assert [(h.from_state, h.to_state, h.value) for h in reversed(history)] == [
        ("ok", "pending", 20.0), ("pending", "firing", 20.0), ("firing", "ok", 0.0)]
    assert await store.count_notifications() == {"sent": 2}
    assert ev.stats.evaluations == 6 and ev.notifier.stats.sent == 2
    await ev.notifier.close()


async def test_missing_data_fires_after_the_window_and_resolves_on_data(
    store: Store, receiver: Receiver
) -> None:
    await count(store, "app.web.beat", range(T0, T0 + 1), 1)
    await count(store, "app.db.beat", range(T0, T0 + 1), 2)
    await add_rule(store, {"name": "beat", "metric": "app.*.beat", "absent_for": "30s",
                           "notify": hook(receiver)})
    clock = Clock(T0 + 10)
    ev = evaluator(store, clock)
    await ev.tick()
    assert receiver.deliveries == []
    await count(store, "app.db.beat", range(T0 + 20, T0 + 21), 3)
    clock.now = T0 + 31
    await ev.tick()
    assert receiver.states() == [("app.web.beat", "firing")]
    await count(store, "app.web.beat", range(T0 + 35, T0 + 36), 4)
    clock.now = T0 + 36
    await ev.tick()
    assert receiver.states() == [("app.web.beat", "firing"), ("app.web.beat", "ok")]
    await ev.notifier.close()


async def test_a_never_seen_metric_counts_from_the_rules_creation(
    store: Store, receiver: Receiver
) -> None:
    await add_rule(store, {"name": "x", "metric": "never.seen", "absent_for": "1m",
                           "notify": hook(receiver)}, created=T0)
    clock = Clock(T0 + 59)
    ev = evaluator(store, clock)
    await ev.tick()
    assert receiver.deliveries == []
    clock.now = T0 + 60
    await ev.tick()
    assert receiver.states() == [("never.seen", "firing")]
    await ev.notifier.close()


async def test_two_evaluators_one_notification(store: Store, receiver: Receiver) -> None:
    await count(store, "app.errors", range(T0, T0 + 20), 1)
    await add_rule(store, {"name": "errors", "metric": "app.errors", "window": "1m",
                           "op": ">", "threshold": 10, "notify": hook(receiver)})
    clock = Clock(T0 + 21)
    first, second = evaluator(store, clock), evaluator(store, clock)
    for now in range(T0 + 21, T0 + 30):
        clock.now = now
        await first.tick()
        await second.tick()
    assert (first.stats.leader, second.stats.leader) == (True, False)
    assert receiver.states() == [("app.errors", "firing")]
    # The leader stops: the other takes over once the lease expires, and resolves.
    clock.now = T0 + 100
    await second.tick()
    assert second.stats.leader
    assert receiver.states() == [("app.errors", "firing"), ("app.errors", "ok")]
    for ev in (first, second):
        await ev.notifier.close()


async def test_the_flapping_guard(store: Store, receiver: Receiver) -> None:
    await add_rule(store, {"name": "e", "metric": "app.e", "window": "10s", "op": ">",
                           "threshold": 0, "notify": hook(receiver)})
    clock = Clock(T0)
    ev = evaluator(store, clock, min_gap=300)
    for n, start in enumerate((T0, T0 + 30, T0 + 60)):  # three bursts, 30 s apart
        await count(store, "app.e", range(start, start + 2), n + 1)
        for now in (start + 3, start + 20):
            clock.now = now
            await ev.tick()
    # Fired, resolved; two more firings within 5 minutes: stored, not notified.
    assert receiver.states() == [("app.e", "firing"), ("app.e", "ok")]
    assert len(await store.rule_history(1, 100)) == 6
    await ev.notifier.close()


async def test_a_receiver_that_fails_gets_it_on_a_retry(store: Store, receiver: Receiver) -> None:
    await count(store, "app.errors", range(T0, T0 + 20), 1)
    await add_rule(store, {"name": "errors", "metric": "app.errors", "window": "1m",
                           "op": ">", "threshold": 10, "notify": hook(receiver)})
    receiver.status = 503
    clock = Clock(T0 + 21)
    ev = evaluator(store, clock)
    await ev.tick()
    assert receiver.attempts == 1 and receiver.deliveries == []
    clock.now = T0 + 25  # the retry is due 5 s after the failure
    await ev.tick()
    assert receiver.attempts == 1
    receiver.status = 200
    clock.now = T0 + 26
    await ev.tick()
    assert receiver.states() == [("app.errors", "firing")]
    assert await store.due_notifications(1e12, 10) == []
    assert await store.count_notifications() == {"sent": 1}
    await ev.notifier.close()


async def test_no_missing_data_storm_after_an_outage(
    mysql_url: str, proxy: FaultProxy, receiver: Receiver
) -> None:
    store = open_store(proxy.url(mysql_url))
    await store.migrate()
    try:
        await count(store, "app.beat", range(T0, T0 + 1), 1)
        await add_rule(store, {"name": "beat", "metric": "app.beat", "absent_for": "30s",
                               "notify": hook(receiver)})
        clock = Clock(T0 + 5)
        ev = evaluator(store, clock)
        await ev.tick()
        assert ev.stats.evaluations == 1
        proxy.cut()
        clock.now = T0 + 40  # past absent_for, but the store cannot be read
        await ev.tick()
        assert ev.stats.failures >= 1 and ev.stats.evaluations == 1
        proxy.restore()
        for n in range(10):  # the first call after a cut may meet a dead connection
            clock.now = T0 + 41 + n * 0.01
            await ev.tick()
            if ev.stats.evaluations == 2:
                break
        assert ev.stats.evaluations == 2
        assert receiver.deliveries == []  # absence counts from the store's return
        clock.now = T0 + 60
        await ev.tick()
        assert receiver.deliveries == []
        clock.now = T0 + 72
        await ev.tick()
        assert receiver.states() == [("app.beat", "firing")]
        await ev.notifier.close()
    finally:
        await store.close()
