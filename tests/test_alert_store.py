"""The alert tables of migration 3, on SQLite and MariaDB: rules, states, history, the
outbox, the lease, and the batched window reads the evaluator uses."""

from __future__ import annotations

import itertools
import random

from store import Batch, Store
from store.base import AlertStateRow, AlertTransitionRow, OutboxRow, WindowTotal
from store.rollups import window_plan

BASE = 1_800_000_000  # a whole hour


def test_window_plan_covers_the_range_exactly() -> None:
    rng = random.Random(5)
    for _ in range(500):
        start = BASE + rng.randrange(0, 3 * 86400)
        end = start + rng.randrange(1, 2 * 86400)
        plan = window_plan(start, end)
        assert plan[0][1] == start and plan[-1][2] == end
        assert all(a[2] == b[1] for a, b in itertools.pairwise(plan))
        steps = {"points_1s": 1, "points_1m": 60, "points_1h": 3600}
        assert all(low % steps[t] == 0 and high % steps[t] == 0 for t, low, high in plan)


async def test_read_windows_equals_a_scan_of_the_seconds(store: Store) -> None:
    rng = random.Random(3)
    names = [f"w.m{n}" for n in range(30)]
    points = []
    for name in names[:25]:  # the last five never get a point
        for _ in range(200):
            value = rng.uniform(-50, 50)
            points.append((name, "value", BASE + rng.randrange(0, 3 * 3600), 1.0, value,
                           value, value))
    assert (await store.write_batch(Batch("w", 1, points))).applied
    ids = await store.metric_ids([*names, "no.such"])
    assert set(ids) == set(names[:25])
    start, end = BASE + 1234, BASE + 2 * 3600 + 77
    got = await store.read_windows(list(ids.values()), start, end)
    for name, metric_id in ids.items():
        mine = [p for p in points if p[0] == name and start <= p[2] < end]
        if not mine:
            assert metric_id not in got
            continue
        total = got[metric_id]
        assert total.cnt == len(mine)
        assert abs(total.sum - sum(p[4] for p in mine)) < 1e-6
        assert (total.mn, total.mx) == (min(p[5] for p in mine), max(p[6] for p in mine))
    seen = await store.last_seen(list(ids.values()))
    assert seen == {ids[n]: max(p[2] for p in points if p[0] == n) for n in names[:25]}
    assert await store.read_windows([], start, end) == {}


async def test_rule_crud_and_the_rule_limit(store: Store) -> None:
    first = await store.create_rule("r1", "a.b", '{"x": 1}', BASE, max_rules=2)
    second = await store.create_rule("r2", "a.*", '{"x": 2}', BASE, max_rules=2)
    assert first is not None and second is not None and second > first
    assert await store.create_rule("r3", "a.c", "{}", BASE, max_rules=2) is None
    rule = await store.get_rule(first)
    assert rule is not None and (rule.name, rule.metric, rule.body) == ("r1", "a.b", '{"x": 1}')
    assert [r.id for r in await store.list_rules(10)] == [first, second]
    assert [r.id for r in await store.list_rules(10, after_id=first)] == [second]
    assert await store.update_rule(first, "r1b", "a.b", '{"x": 3}', BASE + 5)
    updated = await store.get_rule(first)
    assert updated is not None and (updated.name, updated.updated_at) == ("r1b", BASE + 5)
    assert not await store.update_rule(999999, "n", "m", "{}", BASE)
    assert await store.delete_rule(second)
    assert not await store.delete_rule(second)
    assert await store.get_rule(second) is None


async def test_the_lease_has_one_holder_until_it_expires(store: Store) -> None:
    assert await store.acquire_lease("alerts", "a", 100.0, 10.0)
    assert not await store.acquire_lease("alerts", "b", 105.0, 10.0)
    assert await store.acquire_lease("alerts", "a", 108.0, 10.0)  # renewed: until 118
    assert not await store.acquire_lease("alerts", "b", 115.0, 10.0)
    assert await store.acquire_lease("alerts", "b", 119.0, 10.0)  # expired: taken over
    assert not await store.acquire_lease("alerts", "a", 120.0, 10.0)
    await store.release_lease("alerts", "a")  # not a's: nothing happens
    assert not await store.acquire_lease("alerts", "a", 121.0, 10.0)
    await store.release_lease("alerts", "b")
    assert await store.acquire_lease("alerts", "a", 122.0, 10.0)


def _notification(rule_id: int, key: str, next_at: float) -> OutboxRow:
    return OutboxRow(0, rule_id, "a.b", '{"webhook": "http://x/"}', '{"state": "firing"}',
                     key, "pending", 0, next_at, next_at, None, None)


async def test_an_evaluation_is_saved_whole_and_only_by_the_lease_holder(
    store: Store
) -> None:
    rule_id = await store.create_rule("r", "a.b", "{}", BASE, max_rules=10)
    assert rule_id is not None
    state = AlertStateRow(rule_id, "a.b", "firing", 50.0, 12.5, 50.0, True)
    move = AlertTransitionRow(0, rule_id, "a.b", "ok", "firing", 50.0, 12.5)
    note = _notification(rule_id, "k" * 32, 50.0)
    # No lease, or someone else's: nothing stored.
    assert not await store.save_evaluation("alerts", "me", 50.0, [state], [move], [note])
    assert await store.acquire_lease("alerts", "other", 40.0, 30.0)
    assert not await store.save_evaluation("alerts", "me", 50.0, [state], [move], [note])
    assert await store.alert_states() == []
    assert await store.acquire_lease("alerts", "me", 71.0, 30.0)
    assert await store.save_evaluation("alerts", "me", 72.0, [state], [move], [note])
    assert await store.alert_states() == [state]
    assert await store.alert_states([rule_id]) == [state]
    history = await store.rule_history(rule_id, 10)
    assert [(h.from_state, h.to_state, h.value) for h in history] == [("ok", "firing", 12.5)]
    resolved = state._replace(state="ok", since=60.0, notified=False, value=None)
    back = AlertTransitionRow(0, rule_id, "a.b", "firing", "ok", 60.0, None)
    assert await store.save_evaluation("alerts", "me", 73.0, [resolved], [back], [])
    assert await store.alert_states([rule_id]) == [resolved]
    newest_first = await store.rule_history(rule_id, 10)
    assert [h.to_state for h in newest_first] == ["ok", "firing"]
    assert [h.to_state for h in await store.rule_history(rule_id, 10, newest_first[0].id)] == [
        "firing"]
    # The outbox: due, retried, sent.
    assert await store.due_notifications(49.0, 10) == []
    (due,) = await store.due_notifications(50.0, 10)
    assert (due.idempotency_key, due.attempts, due.status) == ("k" * 32, 0, "pending")
    await store.update_notification(due.id, "pending", 1, 55.0, None, "connection refused")
    assert await store.due_notifications(54.0, 10) == []
    (again,) = await store.due_notifications(55.0, 10)
    assert (again.attempts, again.last_error) == (1, "connection refused")
    await store.update_notification(due.id, "sent", 2, 55.0, 56.0, None)
    assert await store.due_notifications(1e12, 10) == []
    assert await store.count_notifications() == {"sent": 1}
    assert await store.delete_finished_notifications(56.0, 10) == 0  # finished at 56
    assert await store.delete_finished_notifications(56.5, 10) == 1
    assert await store.count_notifications() == {}
    # A metric change resets the states; deleting removes states and history.
    assert await store.update_rule(rule_id, "r", "a.c", "{}", BASE)
    assert await store.alert_states([rule_id]) == []
    assert await store.delete_rule(rule_id)
    assert await store.rule_history(rule_id, 10) == []


async def test_window_total_of_counters(store: Store) -> None:
    points = [("c.x", "counter", BASE + s, 1.0, 2.0, 2.0, 2.0) for s in range(0, 600, 3)]
    assert (await store.write_batch(Batch("w", 1, points))).applied
    ids = await store.metric_ids(["c.x"])
    got = await store.read_windows([ids["c.x"]], BASE + 300, BASE + 600)
    assert got == {ids["c.x"]: WindowTotal(100.0, 200.0, 2.0, 2.0)}
