"""The HTTP API of DESIGN §4, row by row, on SQLite and on MariaDB.

Every request goes through a real socket to the real app; what was stored is read back
from the store (and, for commit semantics, through a second store object on the same
database). Error cases check the status, the JSON error body, and that nothing was
recorded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol.units import format_timestamp
from store import Batch, Store, WriteResult, open_store
from tests.http_support import (
    assert_error,
    auth,
    config,
    new_key,
    serve,
    stored_points,
)

HOUR = 3600


def base_hour(hours_ago: int = 2) -> int:
    now = int(time.time())
    return now - now % HOUR - hours_ago * HOUR


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Any]:
    async with serve(store) as client:
        yield client


@pytest.fixture
async def token(store: Store) -> str:
    return await new_key(store)


# -- ingest -----------------------------------------------------------------------


async def test_counter_defaults_to_one_and_lands_in_its_second(
    api: Any, store: Store, token: str
) -> None:
    before = int(time.time())
    response = await api.post("/api/metrics/counter", json={"metric": "jobs.done"},
                              headers=auth(token))
    after = int(time.time())
    assert response.status == 200
    assert await response.json() == {"accepted": 1}
    assert response.headers["Content-Type"].startswith("application/json")
    rows = (await stored_points(store))["jobs.done"]
    assert len(rows) == 1
    ts, cnt, total, mn, mx = rows[0]
    assert before <= ts <= after
    assert (cnt, total, mn, mx) == (1, 1, 1, 1)


@pytest.mark.parametrize("stamp", ["iso", "epoch", "epoch_text", "fraction"])
async def test_counter_with_value_and_timestamp(
    api: Any, store: Store, token: str, stamp: str
) -> None:
    ts = base_hour() + 17
    timestamp: object = {
        "iso": format_timestamp(ts), "epoch": ts, "epoch_text": str(ts), "fraction": ts + 0.75,
    }[stamp]
    response = await api.post(
        "/api/metrics/counter", json={"metric": "jobs.failed", "value": -2.5,
                                      "timestamp": timestamp},
        headers=auth(token),
    )
    assert response.status == 200, await response.text()
    assert await stored_points(store) == {"jobs.failed": [(ts, 1, -2.5, -2.5, -2.5)]}


async def test_value(api: Any, store: Store, token: str) -> None:
    ts = base_hour() + 5
    for value in (12.5, 7.5):
        response = await api.post(
            "/api/metrics/value", json={"metric": "db.query_ms", "value": value,
                                        "timestamp": ts},
            headers=auth(token),
        )
        assert response.status == 200
        assert await response.json() == {"accepted": 1}
    assert await stored_points(store) == {"db.query_ms": [(ts, 2, 20.0, 7.5, 12.5)]}


async def test_batch_is_aggregated_per_second(api: Any, store: Store, token: str) -> None:
    ts = base_hour()
    points = [
        {"metric": "a.count", "type": "counter", "value": 2, "timestamp": ts},
        {"metric": "a.count", "type": "counter", "timestamp": ts},  # value defaults to 1
        {"metric": "a.count", "type": "counter", "value": 4, "timestamp": ts + 1},
        {"metric": "a.ms", "type": "value", "value": 3, "timestamp": format_timestamp(ts)},
        {"metric": "a.ms", "type": "value", "value": 9, "timestamp": ts},
    ]
    response = await api.post("/api/metrics/batch", json={"points": points},
                              headers=auth(token))
    assert response.status == 200, await response.text()
    assert await response.json() == {"accepted": 5}
    assert await stored_points(store) == {
        "a.count": [(ts, 2, 3, 1, 2), (ts + 1, 1, 4, 4, 4)],
        "a.ms": [(ts, 2, 12, 3, 9)],
    }


async def test_batch_of_1000_points(api: Any, store: Store, token: str) -> None:
    ts = base_hour()
    points = [{"metric": f"m.{i % 10}", "type": "value", "value": i, "timestamp": ts + i % 7}
              for i in range(1000)]
    response = await api.post("/api/metrics/batch", json={"points": points},
                              headers=auth(token))
    assert response.status == 200
    assert await response.json() == {"accepted": 1000}
    stored = await stored_points(store)
    assert sum(cnt for rows in stored.values() for _, cnt, *_ in rows) == 1000
    assert sum(total for rows in stored.values() for _, _, total, *_ in rows) == sum(range(1000))


async def test_a_200_means_committed(
    api: Any, store: Store, token: str, database_url: str
) -> None:
    """Read back through a separate store object (its own connections) right after."""
    ts = base_hour()
    response = await api.post(
        "/api/metrics/batch",
        json={"points": [{"metric": "durable", "type": "counter", "value": 3, "timestamp": ts}]},
        headers=auth(token),
    )
    assert response.status == 200
    other = open_store(database_url)
    try:
        info = await other.get_metric("durable")
        assert info is not None and info.kind == "counter"
        rows = await other.read_buckets(info.id, ts, ts + 1, 1)
        assert [(r.ts, r.cnt, r.sum) for r in rows] == [(ts, 1, 3)]
    finally:
        await other.close()


# -- queries ----------------------------------------------------------------------


async def ingest(api: Any, token: str, points: list[dict[str, Any]]) -> None:
    response = await api.post("/api/metrics/batch", json={"points": points},
                              headers=auth(token))
    assert response.status == 200, await response.text()


async def test_list_metrics_with_prefix_limit_and_cursor(api: Any, token: str) -> None:
    ts = base_hour()
    names = ["web.a", "web.b", "web.c", "web.d", "web.e", "db.x"]
    await ingest(api, token, [
        {"metric": name, "type": "counter", "timestamp": ts + i} for i, name in enumerate(names)
    ] + [{"metric": "web.a", "type": "counter", "timestamp": ts + 99}])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"prefix": "web.", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        response = await api.get("/api/metrics", params=params, headers=auth(token))
        assert response.status == 200
        body = await response.json()
        assert set(body) == {"metrics", "next_cursor"}
        seen += [m["name"] for m in body["metrics"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["web.a", "web.b", "web.c", "web.d", "web.e"]
    assert pages == 3

    response = await api.get("/api/metrics", headers=auth(token))
    body = await response.json()
    assert [m["name"] for m in body["metrics"]] == ["db.x", *seen]
    assert body["next_cursor"] is None
    first = body["metrics"][1]
    assert first["kind"] == "counter"
    assert first["first_seen"] == format_timestamp(ts)
    assert first["last_seen"] == format_timestamp(ts + 99)
    assert first["created_at"].endswith("Z")


async def test_series_aggregations_and_fills(api: Any, token: str) -> None:
    ts = base_hour()
    await ingest(api, token, [
        {"metric": "hits", "type": "counter", "value": 2, "timestamp": ts},
        {"metric": "hits", "type": "counter", "value": 3, "timestamp": ts + 30},
        {"metric": "hits", "type": "counter", "value": 6, "timestamp": ts + 70},
        {"metric": "ms", "type": "value", "value": 10, "timestamp": ts + 1},
        {"metric": "ms", "type": "value", "value": 20, "timestamp": ts + 2},
        {"metric": "ms", "type": "value", "value": 30, "timestamp": ts + 61},
    ])

    async def series(name: str, **params: str) -> dict[str, Any]:
        query = {"from": str(ts), "to": str(ts + 180), "interval": "minute"} | params
        response = await api.get(f"/api/metrics/{name}", params=query, headers=auth(token))
        assert response.status == 200, await response.text()
        return dict(await response.json())

    body = await series("hits")
    assert body == {
        "metric": "hits", "kind": "counter", "interval": 60, "aggregation": "sum",
        "fill": "zero", "from": format_timestamp(ts), "to": format_timestamp(ts + 180),
        "points": [
            {"timestamp": format_timestamp(ts), "value": 5},
            {"timestamp": format_timestamp(ts + 60), "value": 6},
            {"timestamp": format_timestamp(ts + 120), "value": 0},
        ],
    }

    def values(body: dict[str, Any]) -> list[Any]:
        return [p["value"] for p in body["points"]]

    assert values(await series("hits", aggregation="count")) == [2, 1, 0]
    assert values(await series("hits", aggregation="rate")) == [5 / 60, 6 / 60, 0]
    assert values(await series("hits", fill="null")) == [5, 6, None]
    assert values(await series("hits", fill="none")) == [5, 6]
    body = await series("ms")
    assert (body["kind"], body["aggregation"], body["fill"]) == ("value", "avg", "null")
    assert values(body) == [15, 30, None]
    assert values(await series("ms", aggregation="min")) == [10, 30, None]
    assert values(await series("ms", aggregation="max", fill="zero")) == [20, 30, 0]
    assert values(await series("ms", interval="10s", aggregation="count"))[:8] == [
        2, 0, 0, 0, 0, 0, 1, 0]
    body = await series("ms", interval="1h", **{"from": format_timestamp(ts + 1),
                                              "to": format_timestamp(ts + 3)})
    assert body["from"] == format_timestamp(ts)  # aligned to the interval
    assert values(body) == [15]  # [from, to): ts + 61 is not in
    body = await series("ms", interval="day")
    assert body["interval"] == 86400 and values(body) == [20]


async def test_series_defaults_to_the_last_hour_by_minute(api: Any, token: str) -> None:
    sent = int(time.time())
    response = await api.post("/api/metrics/counter", json={"metric": "now"},
                              headers=auth(token))
    assert response.status == 200
    response = await api.get("/api/metrics/now", headers=auth(token))
    body = await response.json()
    assert (body["interval"], body["aggregation"]) == (60, "sum")
    assert 60 <= len(body["points"]) <= 61
    assert sum(p["value"] for p in body["points"]) == 1  # the current second is included
    [bucket] = [p["timestamp"] for p in body["points"] if p["value"]]
    assert bucket >= format_timestamp(sent - sent % 60)


# -- service routes ---------------------------------------------------------------


async def test_healthz_openapi_and_metrics_need_no_key(api: Any, token: str) -> None:
    response = await api.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "pending_batches": 0,
                                     "spool_batches": 0}

    response = await api.get("/api/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"

    await api.post("/api/metrics/counter", json={"metric": "x"}, headers=auth(token))
    await api.get("/api/metrics/x", headers=auth(token))
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for line in (
        'gf_http_requests_total{method="POST",route="/api/metrics/counter",status="200"} 1.0',
        'gf_http_requests_total{method="GET",route="/api/metrics/{name}",status="200"} 1.0',
        "gf_http_points_accepted_total 1.0",
        "gf_http_key_cache_misses_total 1.0",
        "gf_http_key_cache_hits_total 1.0",
        "gf_http_commit_batches_total 1.0",
        "gf_http_rate_limited_total 0.0",
        "gf_http_rate_limit_fail_open_total 0.0",
    ):
        assert line in text, line
    assert 'gf_http_request_duration_seconds_bucket{le="0.001",route="/healthz"}' in text


# -- errors: status, JSON body, nothing recorded ----------------------------------


async def expect_error(
    response: Any, status: int, code: str, store: Store, field: str | None = None
) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert_error(body, code)
    if field is not None:
        assert field in [d["field"] for d in body["error"]["details"]], body
    assert await stored_points(store) == {}
    return dict(body["error"])


async def test_400_malformed_json(api: Any, store: Store, token: str) -> None:
    for text in ('{"metric": "x"', "", "NaN", '{"metric": "x", "value": 1e999}'):
        response = await api.post("/api/metrics/value", data=text, headers={
            **auth(token), "Content-Type": "application/json"})
        await expect_error(response, 400, "malformed_json", store)


async def test_401_missing_invalid_or_revoked_key(api: Any, store: Store, token: str) -> None:
    unknown = "gf_" + "A" * 32
    for headers in ({}, {"X-API-Key": "nonsense"}, {"X-API-Key": unknown}):
        response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                  headers=headers)
        await expect_error(response, 401, "unauthorized", store)
        assert "X-RateLimit-Limit" not in response.headers
        response = await api.get("/api/metrics", headers=headers)
        await expect_error(response, 401, "unauthorized", store)
    revoked = await new_key(store, name="gone")
    assert await store.revoke_key("gone", int(time.time())) == 1
    response = await api.post("/api/metrics/counter", json={"metric": "x"},
                              headers=auth(revoked))
    error = await expect_error(response, 401, "unauthorized", store)
    assert "revoked" in error["message"]


async def test_403_key_without_the_scope(api: Any, store: Store) -> None:
    writer = await new_key(store, scopes=("write",))
    reader = await new_key(store, scopes=("read",))
    for path in ("/api/metrics", "/api/metrics/anything"):
        response = await api.get(path, headers=auth(writer))
        await expect_error(response, 403, "forbidden", store)
        assert "X-RateLimit-Limit" in response.headers
    response = await api.post("/api/metrics/counter", json={"metric": "x"}, headers=auth(reader))
    await expect_error(response, 403, "forbidden", store)
    response = await api.post("/api/metrics/counter", json={"metric": "x"}, headers=auth(writer))
    assert response.status == 200


async def test_404_unknown_metric_and_route(api: Any, store: Store, token: str) -> None:
    response = await api.get("/api/metrics/no.such.metric", headers=auth(token))
    await expect_error(response, 404, "not_found", store)
    for path in ("/api/nothing", "/nothing", "/api/metrics/a/b"):
        response = await api.get(path, headers=auth(token))
        await expect_error(response, 404, "not_found", store)


async def test_405_is_json_with_allow(api: Any, store: Store, token: str) -> None:
    response = await api.delete("/api/metrics", headers=auth(token))
    await expect_error(response, 405, "method_not_allowed", store)
    assert "GET" in response.headers["Allow"]
    response = await api.get("/api/metrics/batch/", headers=auth(token))
    assert response.status == 404
    response = await api.put("/api/metrics/counter", json={"metric": "x"}, headers=auth(token))
    await expect_error(response, 405, "method_not_allowed", store)


async def test_409_kind_conflict(api: Any, store: Store, token: str) -> None:
    ts = base_hour()
    await ingest(api, token, [{"metric": "c", "type": "counter", "timestamp": ts}])
    before = await stored_points(store)

    async def conflict(path: str, body: dict[str, Any], field: str) -> dict[str, Any]:
        response = await api.post(path, json=body, headers=auth(token))
        assert response.status == 409, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "kind_conflict"
        assert field in [d["field"] for d in error["details"]]
        assert await stored_points(store) == before
        return dict(error)

    await conflict("/api/metrics/value", {"metric": "c", "value": 1, "timestamp": ts}, "metric")
    error = await conflict("/api/metrics/batch", {"points": [
        {"metric": "new", "type": "value", "value": 1, "timestamp": ts},
        {"metric": "c", "type": "value", "value": 1, "timestamp": ts},
    ]}, "type")
    assert error["details"][0]["index"] == 1
    error = await conflict("/api/metrics/batch", {"points": [  # mixed kinds, new name
        {"metric": "mixed", "type": "value", "value": 1, "timestamp": ts},
        {"metric": "mixed", "type": "counter", "value": 1, "timestamp": ts},
    ]}, "type")
    assert error["details"][0]["index"] == 1


async def test_409_when_another_writer_wins_the_race(store: Store, database_url: str) -> None:
    """The kind is fixed by another process between our check and our commit: the
    store reports the conflict and the request gets 409, not 200."""
    rival = open_store(database_url)

    async def write_after_rival(batch: Batch) -> WriteResult:
        await rival.write_batch(Batch("rival", batch.seq, [
            (name, "value" if kind == "counter" else "counter", ts, 1, 1, 1, 1)
            for name, kind, ts, *_ in batch.points]))
        return await store.write_batch(batch)

    try:
        token = await new_key(store)
        async with serve(store, write=write_after_rival) as api:
            response = await api.post("/api/metrics/counter", json={"metric": "raced"},
                                      headers=auth(token))
            assert response.status == 409
            assert_error(await response.json(), "kind_conflict")
            # and the kind is learnt: the next attempt is refused before committing
            response = await api.post("/api/metrics/counter", json={"metric": "raced"},
                                      headers=auth(token))
            assert response.status == 409
    finally:
        await rival.close()
    info = await store.get_metric("raced")
    assert info is not None and info.kind == "value"


async def test_413_body_over_the_limit(store: Store) -> None:
    token = await new_key(store)
    async with serve(store, config(max_body_size=2048)) as api:
        big = {"points": [{"metric": "m", "type": "counter"}] * 100}  # ~3.4 kB
        response = await api.post("/api/metrics/batch", json=big, headers=auth(token))
        await expect_error(response, 413, "payload_too_large", store)
        assert "X-RateLimit-Remaining" in response.headers

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: aiohttp's own 413
            yield b'{"points": ['
            for _ in range(100):
                yield b'{"metric": "m", "type": "counter"},'
            yield b'{"metric": "m", "type": "counter"}]}'

        response = await api.post("/api/metrics/batch", data=chunks(), headers={
            **auth(token), "Content-Type": "application/json"})
        await expect_error(response, 413, "payload_too_large", store)


async def test_415_not_json(api: Any, store: Store, token: str) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = auth(token) | ({"Content-Type": content_type} if content_type else {})
        response = await api.post("/api/metrics/counter", data=b'{"metric": "x"}',
                                  headers=headers)
        await expect_error(response, 415, "unsupported_media_type", store)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/metrics/counter", {"metric": "bad..name"}, "metric"),
    ("/api/metrics/counter", {"metric": ".x"}, "metric"),
    ("/api/metrics/counter", {"metric": "x" * 256}, "metric"),
    ("/api/metrics/counter", {}, "metric"),
    ("/api/metrics/counter", {"metric": 5}, "metric"),
    ("/api/metrics/counter", {"metric": "x", "value": "1"}, "value"),
    ("/api/metrics/counter", {"metric": "x", "value": True}, "value"),
    ("/api/metrics/counter", {"metric": "x", "value": None}, "value"),
    ("/api/metrics/counter", {"metric": "x", "colour": "red"}, "colour"),
    ("/api/metrics/counter", [{"metric": "x"}], "body"),
    ("/api/metrics/value", {"metric": "x"}, "value"),
    ("/api/metrics/value", {"metric": "x", "value": "NaN"}, "value"),
    ("/api/metrics/value", {"metric": "x", "value": 1, "timestamp": "yesterday"}, "timestamp"),
    ("/api/metrics/value", {"metric": "x", "value": 1, "timestamp": 1}, "timestamp"),
    ("/api/metrics/value", {"metric": "x", "value": 1, "timestamp": time.time() - 30 * 86400},
     "timestamp"),
    ("/api/metrics/value", {"metric": "x", "value": 1, "timestamp": time.time() + 86400},
     "timestamp"),
    ("/api/metrics/batch", {"points": []}, "points"),
    ("/api/metrics/batch", {"points": [{"metric": "x", "type": "counter"}] * 1001}, "points"),
    ("/api/metrics/batch", {}, "points"),
    ("/api/metrics/batch", {"points": [{"metric": "x", "type": "gauge", "value": 1}]}, "type"),
    ("/api/metrics/batch", {"points": [{"metric": "x", "type": "value"}]}, "value"),
    ("/api/metrics/batch", {"points": [{"metric": "x", "type": "counter"}], "x": 1}, "x"),
])
async def test_422_invalid_points(
    api: Any, store: Store, token: str, path: str, body: Any, field: str
) -> None:
    response = await api.post(path, json=body, headers=auth(token))
    error = await expect_error(response, 422, "invalid", store, field)
    assert error["details"]


async def test_422_batch_is_all_or_nothing_with_indexes(
    api: Any, store: Store, token: str
) -> None:
    points: list[dict[str, Any]] = [{"metric": "ok", "type": "counter"} for _ in range(10)]
    points[3] = {"metric": "ok", "type": "counter", "value": "x"}
    points[7] = {"metric": "no..pe", "type": "value", "value": 1}
    response = await api.post("/api/metrics/batch", json={"points": points},
                              headers=auth(token))
    error = await expect_error(response, 422, "invalid", store)
    assert [(d["index"], d["field"]) for d in error["details"]] == [(3, "value"), (7, "metric")]


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "0", "to": "20000", "interval": "second"}, "interval"),  # 20,000 buckets
    ({"interval": "7m"}, "interval"),
    ({"interval": "fortnight"}, "interval"),
    ({"aggregation": "median"}, "aggregation"),
    ({"fill": "previous"}, "fill"),
    ({"from": "soon"}, "from"),
    ({"to": "-5"}, "to"),
    ({"from": "2000", "to": "1000"}, "from"),
    ({"agg": "max"}, "agg"),
])
async def test_422_invalid_series_parameters(
    api: Any, store: Store, token: str, params: dict[str, str], field: str
) -> None:
    await ingest(api, token, [{"metric": "q", "type": "value", "value": 1}])
    before = await stored_points(store)
    response = await api.get("/api/metrics/q", params=params, headers=auth(token))
    assert response.status == 422
    body = await response.json()
    assert_error(body, "invalid")
    assert body["error"]["details"][0]["field"] == field
    assert await stored_points(store) == before


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"prefix": "a b"}, "prefix"), ({"cursor": "!!"}, "cursor"), ({"cursor": ""}, "cursor"),
    ({"page": "2"}, "page"),
])
async def test_422_invalid_list_parameters(
    api: Any, store: Store, token: str, params: dict[str, str], field: str
) -> None:
    response = await api.get("/api/metrics", params=params, headers=auth(token))
    await expect_error(response, 422, "invalid", store, field)


async def test_422_invalid_metric_name_in_path(api: Any, store: Store, token: str) -> None:
    response = await api.get("/api/metrics/a..b", headers=auth(token))
    await expect_error(response, 422, "invalid", store, "name")


async def test_429_with_headers(store: Store) -> None:
    token = await new_key(store, rate_limit="2/m")
    async with serve(store) as api:
        remaining = []
        for _ in range(2):
            response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                      headers=auth(token))
            assert response.status == 200
            assert response.headers["X-RateLimit-Limit"] == "2"
            remaining.append(response.headers["X-RateLimit-Remaining"])
        assert remaining == ["1", "0"]
        before = await stored_points(store)
        response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                  headers=auth(token))
        assert response.status == 429
        assert_error(await response.json(), "rate_limited")
        assert response.headers["X-RateLimit-Limit"] == "2"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(response.headers["Retry-After"]) <= 30
        assert await stored_points(store) == before
        response = await api.get("/api/metrics", headers=auth(token))  # reads share the key
        assert response.status == 429


async def test_503_when_the_store_is_down(sqlite_url: str) -> None:
    """Key and kind cached, then the database goes away: ingest and reads answer 503,
    /healthz too, and nothing is acknowledged."""
    store = open_store(sqlite_url)
    await store.migrate()
    token = await new_key(store)
    try:
        async with serve(store, config(key_cache_ttl=3600)) as api:
            response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                      headers=auth(token))
            assert response.status == 200
            await store.close()
            response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                      headers=auth(token))
            assert response.status == 503
            assert_error(await response.json(), "unavailable")
            response = await api.post("/api/metrics/counter", json={"metric": "new"},
                                      headers=auth(token))  # kind check needs the store
            assert response.status == 503
            for path in ("/api/metrics", "/api/metrics/x"):
                response = await api.get(path, headers=auth(token))
                assert response.status == 503
                assert_error(await response.json(), "unavailable")
            response = await api.get("/healthz")
            assert response.status == 503
            assert (await response.json())["status"] == "unavailable"
            text = await (await api.get("/metrics")).text()
            assert "gf_http_commit_failures_total 1.0" in text
            assert "gf_http_ingest_unavailable_total 1.0" in text
    finally:
        await store.close()
    reopened = open_store(sqlite_url)
    try:
        info = await reopened.get_metric("x")
        assert info is not None
        rows = await reopened.read_buckets(info.id, 0, 2**40, 1)
        assert sum(r.cnt for r in rows) == 1  # only the acknowledged point
    finally:
        await reopened.close()


async def test_an_unexpected_error_writing_is_a_json_500(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that fails in a way no retry fixes (here a bug) is a permanent error
    for the durable writer: the rows are refused (logged with the cause), the request
    gets a JSON 500 without internals, and the service goes on."""
    async def broken(batch: Batch) -> WriteResult:
        raise RuntimeError("a bug")

    token = await new_key(store)
    async with serve(store, write=broken) as api:
        response = await api.post("/api/metrics/counter", json={"metric": "x"},
                                  headers=auth(token))
        assert response.status == 500
        body = await response.json()
        assert_error(body, "internal")
        assert "a bug" not in body["error"]["message"]  # no internals in the answer
        assert "refused 1 of these points" in body["error"]["message"]
        assert (await api.get("/healthz")).status == 200
    assert "RuntimeError: a bug" in caplog.text
