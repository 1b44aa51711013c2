"""scripts/bench --only render: Graphite ``/render`` latency on MariaDB, over real HTTP.

Its own ``gf_bench_render_<hex>`` database (created here, dropped at the end): 100
counters ``app.NNN.requests`` with one day of per-minute rollups (and per-hour), plus the
last hour of per-second rows, so the unaligned tail of a "now" range is read from the raw
table as in production. The app runs in this process (uvloop, a real socket on port 0),
asked the way Grafana asks: a form POST with the aliasSub wrapper and maxDataPoints.

    one metric   aliasSub(app.001.requests, ...)    1 d at 1 min: 1,440 points
    sumSeries    aliasSub(sumSeries(app.*.requests), ...)   100 series x 1,440 points
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import uvloop
from mysql_bench import admin, bench_database, log, pct, settle

DAY = 86400
SERIES = 100


def render_bench(bench: Any) -> dict[str, Any]:
    url, name = bench_database(bench, "render")
    if url is None:
        return {"skipped": name}
    return uvloop.run(_render(url, name, bench.args, bench.args.quick))


async def _render(url: str, name: str, args: Any, quick: bool) -> dict[str, Any]:
    from aiohttp import web

    from protocol.tokens import display_prefix, generate_token, hash_token
    from query.app import make_app
    from query.config import HttpConfig
    from store import open_store

    store = open_store(url)
    await store.migrate()
    now = int(time.time())
    day_start = now - now % 60 - DAY
    hour_start = now - now % 3600
    started = time.monotonic()
    conn = admin(args.mysql_url)
    with conn.cursor() as cursor:
        cursor.execute(f"USE {name}")
        cursor.execute(
            "INSERT INTO metrics (name, kind, created_at) SELECT "
            f"CONCAT('app.', LPAD(seq, 3, '0'), '.requests'), 'counter', {day_start} "
            f"FROM seq_1_to_{SERIES}")
        cursor.execute(  # per-minute rows for the day (what a 1-min read of it touches)
            f"INSERT INTO points_1m SELECT m.id, {day_start} + s.seq * 60, 60, "
            "60 * (1 + (s.seq + m.id) % 7), 1, 7 FROM metrics m "
            f"JOIN seq_0_to_{DAY // 60} s")
        cursor.execute(  # per-second rows for the current hour (the unaligned tail)
            f"INSERT INTO points_1s SELECT m.id, {hour_start} + s.seq, 1, "
            "1 + (s.seq + m.id) % 7, 1, 7 FROM metrics m "
            f"JOIN seq_0_to_{max(now - hour_start, 1) - 1} s")
        cursor.execute(
            "INSERT INTO points_1h SELECT metric_id, ts DIV 3600 * 3600 AS t, SUM(cnt), "
            "SUM(`sum`), MIN(mn), MAX(mx) FROM points_1m GROUP BY metric_id, t")
        cursor.execute("ANALYZE TABLE metrics, points_1s, points_1m, points_1h")
        cursor.fetchall()
    conn.close()
    log(f"render data: {SERIES} counters x 1 day at 1 min in {time.monotonic() - started:.1f}s")
    settle(args.mysql_url)
    token = generate_token()
    await store.create_key("bench-render", hash_token(token), display_prefix(token),
                           ("read",), None, now)
    runner = web.AppRunner(make_app(HttpConfig(default_rate_limit="1000000/s"), store),
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    runs = 30 if quick else 100
    shapes = {
        "one_metric_1d": "app.001.requests",
        "sum_100_series_1d": "sumSeries(app.*.requests)",
    }
    out: dict[str, Any] = {"series": SERIES, "runs": runs}
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": token}) as session:
            for key, target in shapes.items():
                form = {"target": f'aliasSub({target}, "(^.*$)", "\\1 A")', "from": "-1d",
                        "until": "now", "format": "json", "maxDataPoints": "1440"}
                timings = []
                points = 0
                for _run in range(runs + 3):  # 3 warm-up requests, not counted
                    t0 = time.perf_counter()
                    async with session.post(f"{base}/render", data=form) as response:
                        body = await response.json()
                    timings.append((time.perf_counter() - t0) * 1e3)
                    assert response.status == 200, body
                    points = len(body[0]["datapoints"])
                timings = timings[3:]
                out[key] = {"p50": pct(timings, 0.5), "p95": pct(timings, 0.95),
                            "points": points}
                log(f"  render {key}: p50 {out[key]['p50']:.1f} ms, "
                    f"p95 {out[key]['p95']:.1f} ms ({points} points)")
    finally:
        await runner.cleanup()
        await store.close()
    return out
