"""The Graphite read API as Grafana's Graphite data source uses it, on SQLite and MariaDB.

The requests are the ones Grafana 10/11 sends: ``GET /version`` and ``/functions`` when
the data source is saved, ``/metrics/find`` for each segment while a path is typed, and
a form-encoded ``POST /render`` whose target is wrapped in
``aliasSub(<target>, "(^.*$)", "\\1 <refId>")`` with ``maxDataPoints``. The answers'
values are checked against ``GET /api/metrics/{name}`` on the same data.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol.buckets import align
from protocol.units import parse_timestamp
from store import Batch, Store
from store.base import PointRow
from tests.http_support import assert_error, auth, config, new_key, serve

HOUR = 3600
SPAN = 2 * HOUR


def base_time() -> int:
    now = int(time.time())
    return align(now, HOUR) - 4 * HOUR


def grafana_target(target: str, ref_id: str = "A") -> str:
    return f'aliasSub({target}, "(^.*$)", "\\1 {ref_id}")'


def basic(token: str, user: str = "grafana") -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def rows(base: int) -> list[PointRow]:
    """Two counters and a value over SPAN seconds; integers and halves, so every sum
    and average is exact in binary floating point whatever the order of addition."""
    out: list[PointRow] = []
    for ts in range(base, base + SPAN, 7):
        out.append(("app.web1.requests", "counter", ts, 1.0, float(ts % 5), 0.0, 4.0))
        if ts % 3:
            out.append(("app.web2.requests", "counter", ts, 1.0, float(ts % 4 + 1), 1.0, 4.0))
        count = 1.0 if ts % 2 else 2.0
        out.append(("app.web1.latency", "value", ts, count, count * (ts % 16) / 2,
                    float(ts % 3), float(ts % 16)))
    out.append(("db.queries", "counter", base, 1.0, 1.0, 1.0, 1.0))
    return out


@pytest.fixture
async def loaded(store: Store) -> AsyncIterator[tuple[Any, str, int]]:
    base = base_time()
    await store.write_batch(Batch("test", 1, rows(base)))
    token = await new_key(store, scopes=("read",))
    async with serve(store) as client:
        yield client, token, base


async def json_api(client: Any, token: str, name: str, start: int, end: int,
                   interval: str, aggregation: str | None = None) -> dict[int, float | None]:
    params = {"from": str(start), "to": str(end), "interval": interval}
    if aggregation:
        params["aggregation"] = aggregation
    response = await client.get(f"/api/metrics/{name}", params=params, headers=auth(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    return {int(parse_timestamp(p["timestamp"])): p["value"] for p in body["points"]}


async def render_form(client: Any, token: str, targets: list[str], **fields: str) -> Any:
    form = [("target", t) for t in targets] + list(fields.items())
    response = await client.post("/render", data=form, headers=basic(token))
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def points(entry: dict[str, Any]) -> dict[int, float | None]:
    return {ts: value for value, ts in entry["datapoints"]}


async def test_grafana_saves_the_data_source(loaded: tuple[Any, str, int]) -> None:
    client, token, _base = loaded
    response = await client.get("/version", headers=basic(token))
    assert response.status == 200
    assert (await response.text()).startswith("1.1.")
    response = await client.get("/functions", headers=basic(token))
    functions = await response.json()
    for name in ("aliasSub", "sumSeries", "summarize", "movingAverage", "consolidateBy"):
        assert functions[name]["name"] == name
        assert functions[name]["params"][0]["type"] in ("seriesList", "float")
    assert functions["aliasByNode"]["params"][1] == {
        "name": "nodes", "type": "nodeOrTag", "required": True, "multiple": True}
    # Grafana's "Save & test" (pkg/tsdb/graphite/healthcheck.go): constantLine(100) over
    # the last hour as epoch seconds, 100 points at most
    now = int(time.time())
    body = await render_form(client, token, ["constantLine(100)"], **{
        "from": str(now - 3600), "until": str(now), "format": "json", "maxDataPoints": "100"})
    assert body == [{"target": "100", "tags": {"name": "100"},
                     "datapoints": [[100.0, now - 3600], [100.0, now - 1800], [100.0, now]]}]
    response = await client.get("/tags/autoComplete/tags", params={"tagPrefix": "a"},
                                headers=basic(token))
    assert await response.json() == []


async def test_find_while_typing_a_path(loaded: tuple[Any, str, int]) -> None:
    client, token, _base = loaded

    async def find(query: str) -> list[dict[str, Any]]:
        response = await client.get("/metrics/find", params={"query": query},
                                    headers=basic(token))
        assert response.status == 200, await response.text()
        return list(await response.json())

    top = await find("*")
    assert [(n["text"], n["leaf"], n["expandable"]) for n in top] == [
        ("app", 0, 1), ("db", 0, 1)]
    assert [n["id"] for n in await find("app.*")] == ["app.web1", "app.web2"]
    web1 = await find("app.web1.*")
    assert [(n["id"], n["leaf"], n["expandable"]) for n in web1] == [
        ("app.web1.latency", 1, 1), ("app.web1.requests", 1, 1)]
    assert all(set(n) == {"text", "id", "leaf", "expandable", "allowChildren", "context"}
               for n in web1)
    # the virtual leaves of a metric, as the next segment offers them
    leaves = await find("app.web1.latency.*")
    assert [n["text"] for n in leaves] == ["avg", "count", "max", "min", "p50", "p75", "p90",
                                           "p95", "p99", "p999", "rate", "sum"]
    counter_leaves = await find("app.web1.requests.*")
    assert [n["text"] for n in counter_leaves] == ["avg", "count", "max", "min", "rate", "sum"]
    assert all(n["leaf"] == 1 and n["expandable"] == 0 for n in leaves)
    assert [n["id"] for n in await find("app.web[12].req*")] == [
        "app.web1.requests", "app.web2.requests"]
    assert [n["id"] for n in await find("app.{web2,nope}.*")] == ["app.web2.requests"]
    assert await find("nothing.*") == []
    # POST form, and the completer format
    response = await client.post("/metrics/find", data={"query": "app.web1.*",
                                                        "format": "completer"},
                                 headers=basic(token))
    body = await response.json()
    assert body["metrics"][0] == {"path": "app.web1.latency", "name": "latency",
                                  "is_leaf": "1"}
    response = await client.get("/metrics/expand", params={"query": "app.*.requests"},
                                headers=auth(token))
    assert await response.json() == {"results": ["app.web1.requests", "app.web2.requests"]}
    response = await client.post("/metrics/expand", data=[
        ("query", "app.web1.*"), ("query", "db"), ("leavesOnly", "1"), ("groupByExpr", "1")],
        headers=auth(token))
    assert await response.json() == {"results": {
        "app.web1.*": ["app.web1.latency", "app.web1.requests"], "db": []}}
    response = await client.get("/metrics/find", params={"query": "app.*", "wildcards": "1"},
                                headers=auth(token))
    assert [n["id"] for n in await response.json()] == ["app.*", "app.web1", "app.web2"]


async def test_render_agrees_with_the_json_api(loaded: tuple[Any, str, int]) -> None:
    client, token, base = loaded
    common = {"from": str(base), "until": str(base + SPAN - 1), "format": "json",
              "maxDataPoints": "100"}
    # 2 h at 1 min is 120 points: consolidated 2 by 2 into 120 s buckets
    body = await render_form(client, token, [
        grafana_target("app.web1.requests", "A"),
        grafana_target("app.web1.latency", "B"),
        grafana_target("sumSeries(app.*.requests)", "C"),
        grafana_target("app.web1.latency.max", "D"),
    ], **common)
    assert [entry["target"].rsplit(" ", 1)[1] for entry in body] == ["A", "B", "C", "D"]
    assert [entry["target"] for entry in body] == [
        "app.web1.requests A", "app.web1.latency A".replace(" A", " B"),
        "sumSeries(app.*.requests) C", "app.web1.latency.max D"]
    assert body[0]["tags"] == {"name": "app.web1.requests"}
    end = base + SPAN
    requests = await json_api(client, token, "app.web1.requests", base, end, "2m")
    latency = await json_api(client, token, "app.web1.latency", base, end, "2m")
    latency_max = await json_api(client, token, "app.web1.latency", base, end, "2m", "max")
    web2 = await json_api(client, token, "app.web2.requests", base, end, "2m")
    assert len(requests) == 60
    assert points(body[0]) == requests  # counters: sum per bucket
    assert points(body[1]) == latency  # values: the exact weighted average
    assert points(body[2]) == {ts: requests[ts] + web2[ts] for ts in requests}
    assert points(body[3]) == latency_max
    assert any(v for v in requests.values()) and any(v for v in latency.values())


async def test_render_without_consolidation_and_with_functions(
    loaded: tuple[Any, str, int]
) -> None:
    client, token, base = loaded
    common = {"from": str(base), "until": str(base + SPAN - 1)}
    body = await render_form(client, token, [
        "app.web1.requests", "consolidateBy(app.web1.requests, 'max')",
        "summarize(app.web1.requests, '1h', 'sum')",
        "app.web1.latency.count",
    ], maxDataPoints="120", **common)
    minutes = await json_api(client, token, "app.web1.requests", base, base + SPAN, "1m")
    hours = await json_api(client, token, "app.web1.requests", base, base + SPAN, "1h")
    counts = await json_api(client, token, "app.web1.latency", base, base + SPAN, "1m",
                            "count")
    assert points(body[0]) == minutes
    assert points(body[1]) == minutes  # read at 1 min: 120 points, nothing to consolidate
    assert body[2]["target"] == 'summarize(app.web1.requests, "1h", "sum")'
    assert points(body[2]) == hours
    assert points(body[3]) == counts
    # consolidateBy max over 2 points: the larger per-minute sum of each pair
    body = await render_form(client, token, ["consolidateBy(app.web1.requests,'max')"],
                             maxDataPoints="60", **common)
    assert points(body[0]) == {
        ts: max(minutes[ts], minutes[ts + 60]) for ts in range(base, base + SPAN, 120)}


async def test_render_get_relative_times_csv_and_no_nulls(
    loaded: tuple[Any, str, int]
) -> None:
    client, token, base = loaded
    response = await client.get("/render", params=[
        ("target", "app.web1.latency"), ("target", "db.queries"), ("from", "-6h"),
        ("until", "now"), ("noNullPoints", "true")], headers=auth(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert [entry["target"] for entry in body] == ["app.web1.latency", "db.queries"]
    latency = body[0]["datapoints"]
    assert all(value is not None for value, _ts in latency)
    steps = {b[1] - a[1] for a, b in itertools.pairwise(latency)}
    assert min(steps) == 60  # 6 h is read at 1 min
    counted = [value for value, ts in body[1]["datapoints"] if ts == base]
    assert counted == [1.0]
    response = await client.get("/render", params={
        "target": "db.queries", "from": str(base), "until": str(base + 59),
        "format": "csv"}, headers=auth(token))
    assert response.content_type == "text/csv"
    lines = (await response.text()).splitlines()
    assert len(lines) == 60 and lines[0].startswith("db.queries,") and lines[0].endswith(",1.0")
    # from after until: swapped, as graphite-web does
    response = await client.get("/render", params={
        "target": "db.queries", "from": str(base + 59), "until": str(base)},
        headers=auth(token))
    assert len((await response.json())[0]["datapoints"]) == 60


@pytest.mark.parametrize(("target", "words"), [
    ("nosuchFunction(app.*.requests)", ["unknown function", "nosuchFunction"]),
    ("sumSeries(app.*.requests, bogus=1)", ["unknown argument", "bogus"]),
    ("scale(app.web1.requests)", ["missing argument", "factor"]),
    ("scale(app.web1.requests, 'x')", ["factor", "must be a number"]),
    ("movingAverage(app.web1.requests, 0.5)", ["windowSize"]),
    ("summarize(app.web1.requests, '1m')", ["ambiguous unit 'm'"]),
    ("consolidateBy(app.web1.requests, 'median')", ["consolidationFunc", "median"]),
    ("sumSeries(app.web1.requests", ["expected ',' or ')'"]),
    ("'just a string'", ["expected a series"]),
    ("app.[web1", ["unclosed '['"]),
])
async def test_what_is_not_served_is_a_400_naming_it(
    loaded: tuple[Any, str, int], target: str, words: list[str]
) -> None:
    client, token, _base = loaded
    response = await client.post("/render", data={"target": target}, headers=auth(token))
    assert response.status == 400, await response.text()
    body = await response.json()
    assert_error(body, "invalid")
    for word in words:
        assert word in body["error"]["message"], body


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "-5m"}, "from"), ({"until": "yesterday-ish"}, "until"),
    ({"maxDataPoints": "0"}, "maxDataPoints"), ({"format": "png"}, "format"),
])
async def test_bad_parameters_are_a_400(
    loaded: tuple[Any, str, int], params: dict[str, str], field: str
) -> None:
    client, token, _base = loaded
    response = await client.get("/render", params={"target": "db.queries", **params},
                                headers=auth(token))
    assert response.status == 400
    body = await response.json()
    assert body["error"]["details"][0]["field"] == field


async def test_limits_are_a_422_with_a_clear_message(store: Store) -> None:
    await store.write_batch(Batch("test", 1, rows(base_time())))
    token = await new_key(store, scopes=("read",))
    async with serve(store, config(graphite_max_series=1)) as client:
        response = await client.get("/render", params={"target": "sumSeries(app.*.requests)"},
                                    headers=auth(token))
        assert response.status == 422
        message = (await response.json())["error"]["message"]
        assert "'app.*.requests' matches 2 series; at most 1" in message
        assert "--graphite-max-series" in message
        response = await client.get("/render", params={"target": "app.web1.requests"},
                                    headers=auth(token))
        assert response.status == 200
        response = await client.get("/render", params={
            "target": "movingAverage(app.web1.requests, '99y')"}, headers=auth(token))
        assert response.status == 422
        assert "at most 40000 per series" in (await response.json())["error"]["message"]
    async with serve(store) as client:
        # 400 reads (one per shift) x 2 series x 7,201 s: over the size budget
        targets = [("target", "sumSeries(" + ",".join(
            f'timeShift(app.*.requests,"{h}h")' for h in range(part, part + 200)) + ")")
            for part in (1, 201)]
        response = await client.post("/render", data=[*targets, ("from", "-2h")],
                                     headers=auth(token))
        assert response.status == 422
        message = (await response.json())["error"]["message"]
        assert "the request would read 5760800 points; at most 5000000" in message


async def test_keys_basic_auth_and_the_read_scope(store: Store) -> None:
    reader = await new_key(store, scopes=("read",))
    writer = await new_key(store, scopes=("write",))
    async with serve(store) as client:
        for path in ("/render", "/metrics/find?query=*", "/functions", "/version"):
            assert (await client.get(path)).status == 401
            assert (await client.get(path, headers=basic("gf_" + "x" * 32))).status == 401
            assert (await client.get(path, headers=basic(writer))).status == 403
            assert (await client.get(path, headers=basic(reader, user=""))).status == 200
            assert (await client.get(path, headers=auth(reader))).status == 200
        broken = {"Authorization": "Basic !!!not-base64"}
        assert (await client.get("/version", headers=broken)).status == 401
        # Basic auth is one more way to send the same key: the JSON API takes it too
        response = await client.get("/api/metrics", headers=basic(reader))
        assert response.status == 200


async def test_sums_added_by_the_database_equal_sums_added_here(
    loaded: tuple[Any, str, int]
) -> None:
    """sumSeries of counters is read merged (one row per step); anything else (a value
    among them, a metric twice, a nested call) is summed series by series: the same."""
    client, token, base = loaded
    common = {"from": str(base), "until": str(base + SPAN - 1), "maxDataPoints": "120"}
    body = await render_form(client, token, [
        "sumSeries(app.*.requests)",  # merged in the database
        "sumSeries(app.web1.requests, app.web2.requests, app.web1.requests)",  # one twice
        "sumSeries(scale(app.*.requests, 1))",  # a call inside
        "sumSeries(app.web1.requests, app.web1.latency)",  # a value among them
        "sumSeries(app.web1.latency.count, app.web1.requests.count)",  # counts: merged
        "sumSeries(app.web1.requests.rate, app.web2.requests.rate)",  # rates: merged
    ], **common)
    end = base + SPAN
    web1 = await json_api(client, token, "app.web1.requests", base, end, "1m")
    web2 = await json_api(client, token, "app.web2.requests", base, end, "1m")
    latency = await json_api(client, token, "app.web1.latency", base, end, "1m")
    counts = await json_api(client, token, "app.web1.latency", base, end, "1m", "count")
    web1_counts = await json_api(client, token, "app.web1.requests", base, end, "1m", "count")
    both = {ts: web1[ts] + web2[ts] for ts in web1}
    assert points(body[0]) == both
    assert body[0]["tags"] == {"name": "sumSeries(app.*.requests)", "aggregatedBy": "sum"}
    assert points(body[1]) == {ts: 2 * web1[ts] + web2[ts] for ts in web1}
    assert points(body[2]) == both
    assert body[2]["target"] == "sumSeries(scale(app.web1.requests,1),scale(app.web2.requests,1))"
    assert points(body[3]) == {ts: web1[ts] + (latency[ts] or 0) for ts in web1}
    assert points(body[4]) == {ts: counts[ts] + web1_counts[ts] for ts in web1}
    rates = [await json_api(client, token, f"app.{host}.requests", base, end, "1m", "rate")
             for host in ("web1", "web2")]
    assert rates[0] and points(body[5]) == pytest.approx(  # (a + b) / 60, not a / 60 + b / 60
        {ts: rates[0][ts] + rates[1][ts] for ts in web1}, rel=1e-12)
    assert body[5]["tags"]["aggregatedBy"] == "sum"
