"""Reads whose sums add up past the double range, on SQLite and MariaDB.

Every stored row is finite, but a coarse read adds rows in SQL, and two finite sums near
1.8e308 add up to more than a double holds. Unchecked, SQLite's SUM answers inf and
MariaDB's silently 0. The stores answer the sum as it is (exact where a partial sum
overflowed but the total fits) or +-inf when it is beyond the range; the JSON API
answers that with a 422 naming the bucket, Graphite with null, never a wrong number and
never a 500.

Every value here is a power of two or a sum of a few, so each expected sum is exact
whatever order a database adds the rows in.
"""

from __future__ import annotations

import math
import time
from typing import Any

from protocol.buckets import BucketRow
from protocol.units import format_timestamp
from store import Batch, PointRow, Store
from store.mysql import SPLIT_MERGED_MIN
from tests.http_support import assert_error, auth, new_key, serve

DAY = 86400
HOUR = 3600
BIG = math.ldexp(1.0, 1023)  # 8.99e307: two of them are 2**1024, past the largest double
PART = math.ldexp(1.0, 1020)  # 16 of them are 2**1024


def base_day() -> int:
    now = int(time.time())
    return now - now % DAY - 2 * DAY


def counter_row(name: str, ts: int, total: float) -> PointRow:
    return (name, "counter", ts, 1.0, total, total, total)


async def write(store: Store, rows: list[PointRow]) -> dict[str, int]:
    await store.write_batch(Batch("beyond-range", 1, rows))
    ids = {}
    for name in sorted({row[0] for row in rows}):
        info = await store.get_metric(name)
        assert info is not None
        ids[name] = info.id
    return ids


async def test_a_coarse_read_beyond_the_range_is_inf_never_a_wrong_number(store: Store) -> None:
    day = base_day()
    ids = await write(store, [
        counter_row("big.up", day + HOUR, BIG), counter_row("big.up", day + 2 * HOUR, BIG),
        counter_row("big.down", day + HOUR, -BIG), counter_row("big.down", day + 2 * HOUR, -BIG),
        # a partial sum overflows (in any order some does), the total fits: 2**1023
        counter_row("big.back", day + HOUR, BIG), counter_row("big.back", day + 2 * HOUR, BIG),
        counter_row("big.back", day + 3 * HOUR, -BIG),
        # values far below: subnormals keep their exact plain sum
        ("tiny", "value", day + 5, 1.0, 5e-324, 5e-324, 5e-324),
        ("tiny", "value", day + HOUR, 2.0, 1e-300, 1e-300, 1e-300),
    ])
    up, down, back = ids["big.up"], ids["big.down"], ids["big.back"]
    end = day + DAY
    assert await store.read_buckets(up, day, end, DAY) == [BucketRow(day, 2.0, math.inf, BIG, BIG)]
    assert await store.read_buckets(down, day, end, DAY) == [
        BucketRow(day, 2.0, -math.inf, -BIG, -BIG)]
    assert await store.read_buckets(back, day, end, DAY) == [BucketRow(day, 3.0, BIG, -BIG, BIG)]
    assert await store.read_buckets(ids["tiny"], day, end, DAY) == [
        BucketRow(day, 3.0, 5e-324 + 1e-300, 5e-324, 1e-300)]
    # A finer read answers each stored row: finite.
    assert [row.sum for row in await store.read_buckets(up, day, end, HOUR)] == [BIG, BIG]
    # The same over an unaligned range (rollup levels and their tail, merged).
    assert await store.read_buckets(up, day, day + 2 * HOUR + 1, DAY) == [
        BucketRow(day, 2.0, math.inf, BIG, BIG)]

    # Merged across metrics: up and down cancel exactly, up and back do not fit.
    assert await store.read_totals_merged([up, down], day, end, DAY, "sum") == [(day, 0.0)]
    assert await store.read_totals_merged([up, down], day, end, DAY, "cnt") == [(day, 4.0)]
    assert await store.read_totals_merged([up, back], day, end, DAY, "sum") == [
        (day, math.inf)]

    windows = await store.read_windows([up, down, back], day, end)
    assert (windows[up].sum, windows[down].sum, windows[back].sum) == (math.inf, -math.inf, BIG)


async def test_a_merged_read_in_halves_adds_what_each_half_cannot(store: Store) -> None:
    """MariaDB reads many metrics in two halves on two connections: here each half's sum
    overflows, and only the whole is in range (or is not)."""
    day = base_day()
    count = 2 * SPLIT_MERGED_MIN
    ts = day + HOUR
    rows = [counter_row(f"part.p{i:02d}", ts, PART) for i in range(count // 2)]
    rows += [counter_row(f"part.n{i:02d}", ts, -PART) for i in range(count // 2 - 1)]
    rows += [counter_row("part.zero", ts, 0.0), counter_row("part.last", ts, PART)]
    ids = await write(store, rows)
    plus = [ids[f"part.p{i:02d}"] for i in range(count // 2)]  # the first half: 2**1024
    minus = [ids[f"part.n{i:02d}"] for i in range(count // 2 - 1)] + [ids["part.zero"]]
    got = await store.read_totals_merged(plus + minus, day, day + DAY, DAY, "sum")
    assert got == [(day, PART)]  # 16 - 15 parts
    assert await store.read_totals_merged(plus + minus, day, day + DAY, DAY, "cnt") == [
        (day, float(count))]
    got = await store.read_totals_merged([*plus, ids["part.last"], *minus[1:]], day,
                                         day + DAY, DAY, "sum")
    assert got == [(day, 3 * PART)]  # 17 - 14
    everything = await store.read_totals_merged([*plus, ids["part.last"]], day, day + DAY,
                                                HOUR, "sum")
    assert everything == [(ts, math.inf)]  # 17 parts: 2**1024 and more


async def get(client: Any, token: str, path: str, **params: str) -> tuple[int, Any]:
    response = await client.get(path, params=params, headers=auth(token))
    return response.status, await response.json()


async def test_the_apis_answer_a_sum_beyond_the_range_clearly(store: Store) -> None:
    day = base_day()
    await write(store, [
        counter_row("big.up", day + HOUR, BIG), counter_row("big.up", day + 2 * HOUR, BIG),
        ("big.lat", "value", day + HOUR, 1.0, BIG, BIG, BIG),
        ("big.lat", "value", day + 2 * HOUR, 1.0, BIG, BIG, BIG),
    ])
    token = await new_key(store, scopes=("read",))
    span = {"from": str(day), "to": str(day + DAY)}
    async with serve(store) as client:
        for name, aggregation in (("big.up", "sum"), ("big.up", "rate"), ("big.lat", "avg")):
            status, body = await get(client, token, f"/api/metrics/{name}", interval="1d",
                                     aggregation=aggregation, **span)
            assert status == 422, body
            assert_error(body, "invalid")
            message = body["error"]["message"]
            assert "beyond the double range" in message and format_timestamp(day) in message
            assert body["error"]["details"][0]["field"] == "interval"
        # What a bucket's sum does not enter still answers, and so does a finer interval.
        status, body = await get(client, token, "/api/metrics/big.lat", interval="1d",
                                 aggregation="max", **span)
        assert status == 200 and [p["value"] for p in body["points"]] == [BIG], body
        status, body = await get(client, token, "/api/metrics/big.up", interval="1h",
                                 aggregation="sum", fill="none", **span)
        assert status == 200 and [p["value"] for p in body["points"]] == [BIG, BIG], body

        # Graphite: null where the sum is beyond the range, in the store's read and in
        # every function that adds (which raised OverflowError, a 500, before).
        render = {"from": str(day), "until": str(day + DAY), "format": "json"}
        at = (day + HOUR, day + 2 * HOUR)
        for target, expected in (
            ('summarize(big.up, "1d", "sum")', {day: None}),
            ('summarize(big.lat, "1d", "avg")', {day: BIG}),  # the average of two BIGs
            ('summarize(big.lat, "1d", "max")', {day: BIG}),
            ("sumSeries(big.up, big.up)", dict.fromkeys(at)),
            ("averageSeries(big.up, big.up)", dict.fromkeys(at, BIG)),
            ("integral(big.up)", dict(zip(at, (BIG, None), strict=True))),
        ):
            response = await client.get("/render", headers=auth(token),
                                        params={**render, "target": target})
            assert response.status == 200, (target, await response.text())
            [series] = await response.json()
            by_ts = {ts: v for v, ts in series["datapoints"]}
            assert {ts: by_ts[ts] for ts in expected} == expected, target
        response = await client.get("/render", headers=auth(token), params={
            **render, "target": "big.up", "maxDataPoints": "1"})
        assert response.status == 200, await response.text()
        [series] = await response.json()
        assert series["datapoints"][0] == [None, day], series  # the day's sum, consolidated
