"""Percentiles, distinct counts, last values and histograms through the real HTTP API, on
SQLite and on MariaDB (docs/sketches.md).

Known samples are written the way the collector writes them (per-second buckets and
per-minute summaries in one ``Batch``, through the real store), or sent over HTTP
ingest; the answers are held against numpy's exact quantiles of the same samples
(``method="lower"``: the sketch's guarantee is relative to the sample of rank
floor(q * (n - 1))), at minute, hour and day intervals.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
import pytest

from protocol import hll
from protocol.buckets import percentile
from protocol.sketch import Sketch
from protocol.summary import encode_last
from protocol.units import parse_timestamp
from store import Batch, Store
from store.base import PointRow, SketchRow
from tests.http_support import assert_error, auth, config, new_key, serve

ALPHA = 0.01
DAY = 86400
HOUR = 3600
_seq = itertools.count(1)


def yesterday() -> int:
    """Midnight UTC a day ago: a whole day, inside the raw retention."""
    now = int(time.time())
    return now - now % DAY - DAY


def value_batch(name: str, samples: Iterable[tuple[int, float]],
                weight: float = 1.0) -> Batch:
    """What a collector flushes for these (second, value) samples: per-second buckets
    and per-minute sketches (weight 1/rate each)."""
    buckets: dict[int, list[float]] = {}
    sketches: dict[int, Sketch] = {}
    for ts, value in samples:
        b = buckets.setdefault(ts, [0.0, 0.0, value, value])
        b[0] += weight
        b[1] += value * weight
        b[2] = min(b[2], value)
        b[3] = max(b[3], value)
        sketches.setdefault(ts - ts % 60, Sketch()).add(value, weight)
    points: list[PointRow] = [(name, "value", ts, *b) for ts, b in sorted(buckets.items())]
    rows: list[SketchRow] = [(name, "value", m, s.to_bytes()) for m, s in sketches.items()]
    return Batch("test", next(_seq), points, rows)


def within_alpha(got: float | None, exact: float) -> bool:
    assert got is not None
    return abs(got - exact) <= ALPHA * abs(exact) * (1 + 1e-9) + 1e-12


@pytest.fixture
async def api(store: Store) -> AsyncIterator[tuple[Any, str]]:
    token = await new_key(store)
    async with serve(store) as client:
        yield client, token


async def series(client: Any, token: str, name: str, **params: Any) -> dict[int, Any]:
    response = await client.get(f"/api/metrics/{name}",
                                params={k: str(v) for k, v in params.items()},
                                headers=auth(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    return {int(parse_timestamp(p["timestamp"])): p["value"] for p in body["points"]}


async def refused(client: Any, token: str, path: str, **params: Any) -> str:
    response = await client.get(path, params={k: str(v) for k, v in params.items()},
                                headers=auth(token))
    body = await response.json()
    assert response.status == 422, body
    assert_error(body, "invalid")
    return str(body["error"]["message"])


def day_of_samples(base: int, seed: int) -> list[tuple[int, float]]:
    """A day of latencies: lognormal with a bimodal tail, some zeros and negatives (a
    clock step), more traffic in some hours than others."""
    rng = np.random.default_rng(seed)
    n = 30_000
    seconds = np.sort(rng.integers(base, base + DAY, n))
    values = np.where(rng.random(n) < 0.9, rng.lognormal(3.0, 0.8, n),
                      rng.lognormal(6.0, 0.3, n))
    values[rng.random(n) < 0.01] = 0.0
    values[rng.random(n) < 0.01] *= -1
    return [(int(t), float(round(v, 6))) for t, v in zip(seconds, values, strict=True)]


# -- percentiles -------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "step", "buckets"),
                         [("minute", 60, 180), ("hour", HOUR, 24), ("day", DAY, 1)])
async def test_percentiles_are_within_alpha_of_the_exact_quantiles(
    api: tuple[Any, str], store: Store, interval: str, step: int, buckets: int
) -> None:
    client, token = api
    base = yesterday()
    samples = day_of_samples(base, seed=step)
    await store.write_batch(value_batch("db.query.ms", samples))
    end = base + step * buckets
    by_bucket: dict[int, list[float]] = {}
    for ts, value in samples:
        if ts < end:
            by_bucket.setdefault(ts - ts % step, []).append(value)
    for aggregation in ("p50", "p90", "p99", "p999", "p0", "p75.5"):
        q = percentile(aggregation)
        assert q is not None
        got = await series(client, token, "db.query.ms", **{
            "from": base, "to": end, "interval": interval, "aggregation": aggregation})
        assert len(got) == buckets
        for ts, values in by_bucket.items():
            exact = float(np.quantile(np.array(values), q, method="lower"))
            assert within_alpha(got[ts], exact), (aggregation, ts, got[ts], exact)


async def test_an_unaligned_range_and_fill(api: tuple[Any, str], store: Store) -> None:
    """A range starting inside an hour (minute sketches for its head); empty buckets
    null by default, 0 with fill=zero, left out with fill=none."""
    client, token = api
    base = yesterday() + 5 * HOUR
    samples = [(base + 90 + i, float(i + 1)) for i in range(100)]  # minutes 1 to 3
    await store.write_batch(value_batch("api.latency", samples))
    params = {"from": base + 30, "to": base + 300, "interval": "minute", "aggregation": "p50"}
    got = await series(client, token, "api.latency", **params)
    assert list(got) == [base + 60 * i for i in range(5)]
    assert got[base] is None and got[base + 240] is None
    assert within_alpha(got[base + 60], 15.0)  # 1..30: the lower median
    assert within_alpha(got[base + 120], 60.0)  # 31..90
    assert within_alpha(got[base + 180], 95.0)  # 91..100
    assert set((await series(client, token, "api.latency", **params, fill="zero")).values()
               ) >= {0.0}
    assert list(await series(client, token, "api.latency", **params, fill="none")) == [
        base + 60, base + 120, base + 180]
    hour = await series(client, token, "api.latency", **{**params, "interval": "1h",
                                                         "aggregation": "p99"})
    assert within_alpha(hour[base], 99.0)


async def test_sample_rates_weigh_the_sketch_as_they_weigh_the_count(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday()
    await store.write_batch(value_batch("sampled", [(base, 1000.0)], weight=9.0))  # @0.111
    await store.write_batch(value_batch("sampled", [(base + 1, 10.0)]))
    window = {"from": base, "to": base + 60, "interval": "minute"}
    # 10 samples: one 10, nine 1000 (unweighted, the median would be the 10)
    got = await series(client, token, "sampled", **window, aggregation="p50")
    assert within_alpha(got[base], 1000.0)
    got = await series(client, token, "sampled", **window, aggregation="p10")
    assert within_alpha(got[base], 10.0)
    assert (await series(client, token, "sampled", **window, aggregation="count"))[base] == 10


async def test_two_writers_of_one_minute_merge(api: tuple[Any, str], store: Store) -> None:
    client, token = api
    base = yesterday() + HOUR
    a = [(base + i % 60, float(i)) for i in range(0, 2000, 2)]
    b = [(base + i % 60, float(i)) for i in range(1, 2000, 2)]
    await asyncio.gather(store.write_batch(value_batch("merged", a)),
                         store.write_batch(value_batch("merged", b)))
    for aggregation, exact in (("p50", 999.0), ("p99", 1979.0), ("p999", 1997.0)):
        got = await series(client, token, "merged", **{
            "from": base, "to": base + 60, "interval": "minute", "aggregation": aggregation})
        assert within_alpha(got[base], exact), (aggregation, got)


# -- sets and gauges ---------------------------------------------------------------


async def test_unique_counts_distinct_members_across_minutes(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday() + 2 * HOUR
    sketches: list[SketchRow] = []
    points: list[PointRow] = []
    members_by_minute = {}
    for minute in range(10):
        # 5,000 members a minute, half of them the previous minute's
        members = range(minute * 2500, minute * 2500 + 5000)
        members_by_minute[base + 60 * minute] = members
        counter = hll.DistinctCount()
        for m in members:
            counter.add(f"user{m}")
        sketches.append(("users", "set", base + 60 * minute, counter.to_bytes()))
        points.append(("users", "set", base + 60 * minute, 5000.0, 5000.0, 1.0, 1.0))
    small = hll.DistinctCount()
    for m in ("alice", "bob", "alice"):
        small.add(m)
    sketches.append(("few", "set", base, small.to_bytes()))
    points.append(("few", "set", base, 3.0, 3.0, 1.0, 1.0))
    await store.write_batch(Batch("test", next(_seq), points, sketches))

    minutes = await series(client, token, "users", **{"from": base, "to": base + 600})
    assert len(minutes) == 10
    for value in minutes.values():
        assert abs(value - 5000) <= 0.02 * 5000, value
    whole = await series(client, token, "users", **{
        "from": base, "to": base + 600, "interval": "10m", "aggregation": "unique"})
    assert abs(whole[base] - 27_500) <= 0.02 * 27_500, whole
    assert (await series(client, token, "few", **{"from": base, "to": base + 60}))[base] == 2
    counts = await series(client, token, "users", **{
        "from": base, "to": base + 600, "interval": "10m", "aggregation": "count"})
    assert counts[base] == 50_000
    rate = await series(client, token, "users", **{
        "from": base, "to": base + 600, "interval": "10m", "aggregation": "rate"})
    assert rate[base] == 50_000 / 600


async def test_last_is_the_last_value_of_each_bucket(api: tuple[Any, str], store: Store) -> None:
    client, token = api
    base = yesterday() + 3 * HOUR
    lasts = {0: 5.0, 1: -2.5, 3: 40.0}
    for minute, last in lasts.items():
        ts = base + 60 * minute
        await store.write_batch(Batch("test", next(_seq), [
            ("queue.depth", "gauge", ts + 10, 2.0, 1.0 + last, min(1.0, last), max(1.0, last))],
            [("queue.depth", "gauge", ts, encode_last(last))]))
    got = await series(client, token, "queue.depth", **{
        "from": base, "to": base + 300, "aggregation": "last"})
    assert got == {base: 5.0, base + 60: -2.5, base + 120: None, base + 180: 40.0,
                   base + 240: None}
    hour = await series(client, token, "queue.depth", **{
        "from": base, "to": base + HOUR, "interval": "hour", "aggregation": "last"})
    assert hour == {base: 40.0}
    # a later flush of the same minute wins
    await store.write_batch(Batch("test", next(_seq), [], [
        ("queue.depth", "gauge", base, encode_last(7.0))]))
    got = await series(client, token, "queue.depth", **{
        "from": base, "to": base + 60, "aggregation": "last"})
    assert got == {base: 7.0}
    avg = await series(client, token, "queue.depth", **{"from": base, "to": base + 60})
    assert avg == {base: 3.0}  # a gauge's default: the average of what it was set to


# -- histograms --------------------------------------------------------------------


async def test_histogram_counts_samples_under_each_bound(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday()
    samples = day_of_samples(base, seed=7)
    await store.write_batch(value_batch("db.query.ms", samples))
    bounds = [-1.0, 0.0, 10.0, 20.5, 50.0, 300.0, 1000.0]
    values = np.array([v for _ts, v in samples])
    for start, end in ((base, base + DAY), (base + 1234, base + 7 * HOUR + 77)):
        response = await client.get("/api/metrics/db.query.ms/histogram", params={
            "from": str(start), "to": str(end), "buckets": ",".join(map(str, bounds))},
            headers=auth(token))
        assert response.status == 200, await response.text()
        body = await response.json()
        first = start - start % 60
        last = -(-end // 60) * 60  # whole minutes: to rounded up
        inside = np.array([v for ts, v in samples if first <= ts < last])
        assert body["metric"] == "db.query.ms"
        assert parse_timestamp(body["from"]) == first
        assert parse_timestamp(body["to"]) == last
        assert body["count"] == len(inside)
        assert [b["le"] for b in body["buckets"]] == [-1, 0, 10, 20.5, 50, 300, 1000]
        for bound, bucket in zip(bounds, body["buckets"], strict=True):
            # a sample within alpha of the bound may count on either side of it
            low = int(np.sum(inside <= bound - ALPHA * abs(bound)))
            high = int(np.sum(inside <= bound + ALPHA * abs(bound)))
            assert low <= bucket["count"] <= high, (bound, bucket, low, high)
        assert values.size == len(samples)


async def test_histogram_of_an_empty_range_and_its_422s(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday()
    await store.write_batch(value_batch("lat", [(base + 5, 3.0)]))
    await store.write_batch(Batch("test", next(_seq), [
        ("hits", "counter", base, 1.0, 1.0, 1.0, 1.0)]))
    response = await client.get("/api/metrics/lat/histogram", params={
        "from": str(base + HOUR), "to": str(base + 2 * HOUR), "buckets": "1,2"},
        headers=auth(token))
    assert response.status == 200
    assert (await response.json())["count"] == 0
    path = "/api/metrics/lat/histogram"
    for bad in ("", "1,,2", "2,1", "1,1", "nan", "inf", "1,-inf", "ten", "1e999",
                ",".join(map(str, range(51))), " 1", "0x10"):
        message = await refused(client, token, path, buckets=bad)
        assert "buckets" in message, (bad, message)
    assert "required" in await refused(client, token, path)
    assert "histogram" in await refused(client, token, "/api/metrics/hits/histogram",
                                        buckets="1")
    assert "unknown parameter" in await refused(client, token, path, buckets="1", bins="2")
    response = await client.get("/api/metrics/nope/histogram", params={"buckets": "1"},
                                headers=auth(token))
    assert response.status == 404


async def test_histogram_takes_the_read_scope_like_every_read(store: Store) -> None:
    writer = await new_key(store, scopes=("write",))
    async with serve(store) as client:
        response = await client.get("/api/metrics/x/histogram", params={"buckets": "1"})
        assert response.status == 401
        response = await client.get("/api/metrics/x/histogram", params={"buckets": "1"},
                                    headers=auth(writer))
        assert response.status == 403


# -- the 422s ----------------------------------------------------------------------


async def test_sketch_aggregations_need_whole_minutes_and_the_right_kind(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday()
    await store.write_batch(value_batch("lat", [(base + 5, 3.0)]))
    await store.write_batch(Batch("test", next(_seq), [
        ("hits", "counter", base, 1.0, 1.0, 1.0, 1.0),
        ("g", "gauge", base, 1.0, 1.0, 1.0, 1.0),
        ("s", "set", base, 1.0, 1.0, 1.0, 1.0)], [
        ("g", "gauge", base, encode_last(1.0)), ("s", "set", base, _members("a"))]))
    window = {"from": base, "to": base + HOUR}
    for interval in ("10s", "second", "90s"):
        message = await refused(client, token, "/api/metrics/lat", **window,
                                interval=interval, aggregation="p99")
        assert "1m" in message and "minute" in message, message
    message = await refused(client, token, "/api/metrics/s", **window, interval="10s")
    assert "1m" in message  # a set's default, unique, too
    cases = {
        "hits": ("p99", "sum, avg, min, max, count, rate"),
        "lat": ("last", "p50, p90, p99"),
        "g": ("p99", "last"),
        "s": ("avg", "count, rate, unique"),
    }
    for name, (aggregation, listed) in cases.items():
        message = await refused(client, token, f"/api/metrics/{name}", **window,
                                aggregation=aggregation)
        assert listed in message and aggregation in message, message
    for wrong in ("p100", "p", "p5.", "p05", "P99", "median", "p99.12345"):
        message = await refused(client, token, "/api/metrics/lat", **window,
                                aggregation=wrong)
        assert "unknown aggregation" in message, message
    # and the right ones answer
    assert (await series(client, token, "g", **window, aggregation="last"))[base] == 1.0
    assert (await series(client, token, "s", **window))[base] == 1
    assert (await series(client, token, "s", **window, aggregation="count"))[base] == 1


async def test_buckets_without_sketches_are_a_422_never_a_number(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday()
    # minute 0: points only (written before sketches); minute 1: points and sketch;
    # minute 2: a sketch holding only part of its points (one writer had none)
    await store.write_batch(Batch("test", next(_seq), [
        ("old", "value", base + 1, 1.0, 5.0, 5.0, 5.0)]))
    await store.write_batch(value_batch("old", [(base + 61, 7.0)]))
    await store.write_batch(value_batch("old", [(base + 121, 9.0)]))
    await store.write_batch(Batch("test", next(_seq), [
        ("old", "value", base + 122, 1.0, 11.0, 11.0, 11.0)]))
    message = await refused(client, token, "/api/metrics/old", **{
        "from": base, "to": base + 180, "aggregation": "p50"})
    assert "no sketch" in message and "before sketches" in message, message
    got = await series(client, token, "old", **{
        "from": base + 60, "to": base + 120, "aggregation": "p50"})
    assert within_alpha(got[base + 60], 7.0)
    message = await refused(client, token, "/api/metrics/old", **{
        "from": base + 120, "to": base + 180, "aggregation": "p50"})
    assert "no sketch" in message, message
    assert "no sketch" in await refused(client, token, "/api/metrics/old/histogram", **{
        "from": base, "to": base + 180, "buckets": "10"})
    # what every bucket answers still answers
    assert (await series(client, token, "old", **{
        "from": base, "to": base + 180, "aggregation": "max"}))[base] == 5.0


# -- HTTP ingest -------------------------------------------------------------------


async def test_http_ingested_values_get_percentiles(api: tuple[Any, str], store: Store) -> None:
    client, token = api
    now = int(time.time())
    base = now - now % 60 - 120  # the minute before last: whole, and within retention
    values = [float(v) for v in range(1, 1001)]
    batches = [[{"metric": "web.ms", "type": "value", "value": v, "timestamp": base + i % 60}
                for i, v in enumerate(values[start:start + 250], start)]
               for start in range(0, 750, 250)]
    # concurrent requests share a group commit: their sketches of one minute merge there
    answers = await asyncio.gather(*(
        client.post("/api/metrics/batch", json={"points": b}, headers=auth(token))
        for b in batches))
    assert [a.status for a in answers] == [200, 200, 200]
    for v in values[750:900]:
        response = await client.post("/api/metrics/value", json={
            "metric": "web.ms", "value": v, "timestamp": base + 30}, headers=auth(token))
        assert response.status == 200
    form = [("ukey", token), ("key", "web.ms"), ("value", "0"), ("t", str(base + 1))]
    for v in values[900:]:
        form[2] = ("value", str(v))
        response = await client.post("/v", data=dict(form))
        assert response.status == 200, await response.text()
    exact = np.array(values)
    for aggregation in ("p50", "p90", "p99", "p999"):
        q = percentile(aggregation)
        assert q is not None
        got = await series(client, token, "web.ms", **{
            "from": base, "to": base + 60, "aggregation": aggregation})
        assert within_alpha(got[base], float(np.quantile(exact, q, method="lower")))
    response = await client.get("/api/metrics/web.ms/histogram", params={
        "from": str(base), "to": str(base + 60), "buckets": "100,500"}, headers=auth(token))
    body = await response.json()
    assert body["count"] == 1000
    low, high = body["buckets"]
    assert 99 <= low["count"] <= 101 and 495 <= high["count"] <= 505, body


def _members(*members: str) -> bytes:
    counter = hll.DistinctCount()
    for m in members:
        counter.add(m)
    return counter.to_bytes()


def test_within_alpha_is_not_vacuous() -> None:
    assert within_alpha(101.0, 100.0) and not within_alpha(101.1, 100.0)
    assert math.isclose(percentile("p99.9") or 0, 0.999)


# -- Graphite ----------------------------------------------------------------------


async def render(client: Any, token: str, targets: list[str], **fields: Any) -> Any:
    form = [("target", t) for t in targets] + [(k, str(v)) for k, v in fields.items()]
    response = await client.post("/render", data=form, headers=auth(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def test_graphite_percentile_leaves(api: tuple[Any, str], store: Store) -> None:
    client, token = api
    base = yesterday() + 6 * HOUR
    rng = np.random.default_rng(3)
    samples = [(base + int(t), float(round(v, 3))) for t, v in zip(
        np.sort(rng.integers(0, HOUR, 20_000)), rng.lognormal(2.0, 1.0, 20_000), strict=True)]
    await store.write_batch(value_batch("app.db.ms", samples))
    await store.write_batch(Batch("test", next(_seq), [
        ("app.hits", "counter", base, 1.0, 1.0, 1.0, 1.0),
        ("app.depth", "gauge", base, 1.0, 4.0, 4.0, 4.0),
        ("app.users", "set", base, 2.0, 2.0, 1.0, 1.0)], [
        ("app.depth", "gauge", base, encode_last(4.0)),
        ("app.users", "set", base, _members("a", "b"))]))

    async def find(query: str) -> list[str]:
        response = await client.get("/metrics/find", params={"query": query},
                                    headers=auth(token))
        assert response.status == 200
        return [n["text"] for n in await response.json()]

    assert await find("app.db.ms.p*") == ["p50", "p75", "p90", "p95", "p99", "p999"]
    assert await find("app.hits.p*") == []
    assert await find("app.depth.*") == ["avg", "count", "last", "max", "min", "rate", "sum"]
    assert await find("app.users.*") == ["count", "rate", "unique"]
    assert await find("app.*.ms.p995") == ["p995"]

    until = base + HOUR - 1
    minutes = await series(client, token, "app.db.ms", **{
        "from": base, "to": base + HOUR, "aggregation": "p99"})
    body = await render(client, token, ["app.db.ms.p99", "app.*.ms.p995", "app.depth.last",
                                        "app.users", "app.hits"],
                        **{"from": base, "until": until})
    assert [e["target"] for e in body] == ["app.db.ms.p99", "app.db.ms.p995",
                                           "app.depth.last", "app.users", "app.hits"]
    p99 = {ts: v for v, ts in body[0]["datapoints"]}
    assert p99 == minutes  # per minute (the step of sketches) though the counter's is 1 s
    assert len(body[4]["datapoints"]) == HOUR
    assert {ts: v for v, ts in body[2]["datapoints"]}[base] == 4.0
    assert {ts: v for v, ts in body[3]["datapoints"]}[base] == 2.0
    values = np.array([v for _ts, v in samples])
    p995 = [v for v, _ts in body[1]["datapoints"] if v is not None]
    assert len(p995) == 60

    # Drawn at 6 points: each is the p99 of its ten minutes' samples, not a max of p99s.
    body = await render(client, token, ["app.db.ms.p99", "scale(app.db.ms.p99, 1)"],
                        **{"from": base, "until": until, "maxDataPoints": 6})
    exact_points, scaled = body
    assert [ts for _v, ts in exact_points["datapoints"]] == [base + 600 * i for i in range(6)]
    for value, ts in exact_points["datapoints"]:
        inside = values[[(ts <= t < ts + 600) for t, _v in samples]]
        assert within_alpha(value, float(np.quantile(inside, 0.99, method="lower")))
    for (value, ts), (plain, _ts) in zip(scaled["datapoints"], exact_points["datapoints"],
                                         strict=True):
        # a function's output is plain numbers: drawn by max, at least the exact p99
        assert value == max(minutes[t] for t in range(ts, ts + 600, 60))
        assert value >= plain
    whole = await render(client, token, ["app.db.ms.p99"],
                         **{"from": base, "until": until, "maxDataPoints": 1})
    [(value, ts)] = whole[0]["datapoints"]
    assert ts == base
    assert within_alpha(value, float(np.quantile(values, 0.99, method="lower")))


async def test_graphite_draws_steps_without_sketches_as_null(
    api: tuple[Any, str], store: Store
) -> None:
    client, token = api
    base = yesterday() + 7 * HOUR
    await store.write_batch(Batch("test", next(_seq), [
        ("legacy.ms", "value", base + 1, 1.0, 5.0, 5.0, 5.0)]))
    await store.write_batch(value_batch("legacy.ms", [(base + 61, 7.0)]))
    body = await render(client, token, ["legacy.ms.p50", "legacy.ms.max"],
                        **{"from": base, "until": base + 119})
    assert body[0]["datapoints"][:2] == [[None, base], [pytest.approx(7.0, rel=ALPHA), base + 60]]
    body = await render(client, token, ["legacy.ms.p50"],
                        **{"from": base, "until": base + 119, "maxDataPoints": 1})
    assert body[0]["datapoints"] == [[None, base]]  # a window holding it has no value


# -- --no-sketches and --sketch-alpha ------------------------------------------------


def test_serve_and_run_pass_the_sketch_options_to_the_http_service() -> None:
    import click

    from glowing_fiesta.cli import build_config, main

    for command in ("serve", "run"):
        cmd = main.get_command(click.Context(main), command)
        assert cmd is not None
        ctx = cmd.make_context(command, ["--no-sketches", "--sketch-alpha", "2.5"])
        http = build_config(ctx.params).http
        assert (http.sketches, http.sketch_alpha) == (False, 2.5), command


async def test_http_ingest_follows_the_sketch_options(store: Store) -> None:
    token = await new_key(store)
    now = int(time.time())
    minute = now - now % 60 - 60
    point = {"metric": "opt.ms", "value": 12.5, "timestamp": minute + 5}
    async with serve(store, config(sketch_alpha=2.5)) as client:
        response = await client.post("/api/metrics/value", json=point, headers=auth(token))
        assert response.status == 200
    info = await store.get_metric("opt.ms")
    assert info is not None
    [(_ts, data)] = await store.read_sketches(info.id, "value", minute, minute + 60, 60)
    assert Sketch.from_bytes(data).alpha_bp == 250
    async with serve(store, config(sketches=False)) as client:
        response = await client.post("/api/metrics/value", json={**point, "metric": "no.ms"},
                                     headers=auth(token))
        assert response.status == 200
        message = await refused(client, token, "/api/metrics/no.ms", **{
            "from": minute, "to": minute + 60, "aggregation": "p50"})
        assert "--no-sketches" in message
