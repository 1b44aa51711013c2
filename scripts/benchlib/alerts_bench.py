"""scripts/bench: alert rules evaluated per second on MariaDB (``--only alerts``).

A ``gf_bench_<hex>_alerts`` database gets 10,000 counters with recent per-second data
(written through the Store, rollups included) and 10,000 rules on them: 9,000 threshold
rules (``sum`` over 5 minutes, a third of them breaching) and 1,000 missing-data rules.
The evaluator (alerts.evaluator, the one ``serve`` runs) then evaluates them all: the
first evaluation stores a state per (rule, metric) and queues the firings'
notifications (no receiver: they stay in the outbox); the next ones are the steady
state, where only changes are written. The figure is (rule, metric) pairs per second
of one evaluation; the target is all 10,000 within one 10 s interval.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import uvloop
from mysql_bench import bench_database, log

RULES = 10_000


async def _alerts(url: str, quick: bool) -> dict[str, Any]:
    from alerts.config import AlertConfig
    from alerts.evaluator import Evaluator
    from protocol.alerts import parse_rule, rule_json
    from store import Batch, open_store

    store = open_store(url, pool_size=4)
    await store.migrate()
    try:
        now = int(time.time())
        seconds = 30 if quick else 120
        names = [f"bench.alert.m{n:05d}" for n in range(RULES)]
        log(f"alerts: writing {RULES} counters x {seconds} s")
        for seq, start in enumerate(range(0, RULES, 500), 1):
            points = [(name, "counter", now - s, 1.0, float(n % 3), float(n % 3), float(n % 3))
                      for n, name in enumerate(names[start:start + 500], start)
                      for s in range(1, seconds + 1)]
            await store.write_batch(Batch("bench-alerts", seq, points))
        log(f"alerts: creating {RULES} rules")
        hook = [{"webhook": "http://127.0.0.1:9/unused", "secret": "bench"}]
        for n, name in enumerate(names):
            body: dict[str, Any] = (
                {"name": f"r{n}", "metric": name, "absent_for": "10m", "notify": hook}
                if n % 10 == 9 else
                {"name": f"r{n}", "metric": name, "window": "5m", "op": ">",
                 "threshold": seconds * 1.5, "notify": hook})
            rule = parse_rule(body)
            await store.create_rule(rule.name, rule.metric,
                                    orjson.dumps(rule_json(rule, redact=False)).decode(),
                                    now, RULES)
        evaluator = Evaluator(store, AlertConfig(interval=10.0), "http://127.0.0.1:8000")
        assert await evaluator.lease.acquire(time.time())
        runs = []
        for _ in range(2 if quick else 4):
            started = time.perf_counter()
            assert await evaluator.evaluate(time.time())
            runs.append(time.perf_counter() - started)
            await evaluator.lease.acquire(time.time())
        pairs = evaluator.stats.rules_evaluated // len(runs)
        steady = min(runs[1:])
        states = await store.alert_states()
        firing = sum(1 for s in states if s.state == "firing")
        log(f"alerts: first evaluation {runs[0]:.2f} s, steady {steady:.2f} s for {pairs} "
            f"rules; {firing} firing")
        return {"rules": pairs, "first_s": runs[0], "steady_s": steady,
                "rules_per_s": pairs / steady, "first_rules_per_s": pairs / runs[0],
                "firing": firing, "runs": runs}
    finally:
        await store.close()


def alerts_bench(bench: Any) -> dict[str, Any]:
    url, reason = bench_database(bench, "alerts")
    if url is None:
        return {"skipped": reason}
    return uvloop.run(_alerts(url, bench.args.quick))
