"""StatHat's API (protocol.stathat, query.stathat) against the live app: every
parameter combination and error as one table, the name rule and fan-out, and the
requests StatHat's own clients send, replayed byte for byte over a raw socket, with
the totals read back from the store (SQLite and MariaDB)."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.names import COUNTER, VALUE, name_error
from protocol.stathat import fan_out, metric_to_stat, stat_to_metric
from store import Store
from tests.http_support import config, new_key, serve, stored_points

NOW = int(time.time())
T = NOW - 60

# -- the name rule and fan-out (pure) -------------------------------------------------

NAMES = [
    ("user created", "user_created"),
    ("messages sent total", "messages_sent_total"),
    ("ws0: load average", "ws0-3A_load_average"),
    ("sign in - age of user", "sign_in_-2D_age_of_user"),
    ("api_requests", "api-5Frequests"),
    ("login.success", "login.success"),
    ("wtfs/minute", "wtfs-2Fminute"),
    ("café", "caf-C3-A9"),
    ("100%", "100-25"),
]


@pytest.mark.parametrize(("stat", "metric"), NAMES)
def test_name_rule(stat: str, metric: str) -> None:
    assert stat_to_metric(stat) == metric
    assert metric_to_stat(metric) == stat


@pytest.mark.parametrize(("stat", "reason"), [
    ("", "must not be empty"),
    (".hidden", "'..'"),
    ("trailing.", "'..'"),
    ("a..b", "'..'"),
    ("x" * 200 + ":" * 20, "at most 255"),
])
def test_names_that_cannot_be_ours_are_refused_with_the_reason(stat: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        stat_to_metric(stat)


@given(st.text(alphabet=st.characters(blacklist_characters="~",
                                      blacklist_categories=("Cs",)), min_size=1, max_size=60))
def test_name_rule_is_reversible(stat: str) -> None:
    try:
        metric = stat_to_metric(stat)
    except ValueError:
        return  # refused (dots, length): never merged with another name
    assert name_error(metric) is None
    assert metric_to_stat(metric) == stat


@pytest.mark.parametrize(("stat", "names"), [
    ("page view", ["page view"]),
    ("messages sent~total,female,europe",
     ["messages sent total", "messages sent female", "messages sent europe"]),
    ("request time~total,messages", ["request time total", "request time messages"]),
    ("p~one", ["p one"]),
])
def test_fan_out_as_stathat_documents_it(stat: str, names: list[str]) -> None:
    assert fan_out(stat) == names


@pytest.mark.parametrize(("stat", "reason"), [
    ("~a,b", "prefix"), ("p~", "name between"), ("p~a,,b", "name between"),
    ("p~a~b", "at most one"), ("x" * 256, "at most 255"),
])
def test_fan_out_errors(stat: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        fan_out(stat)


# -- every parameter combination and error, over HTTP ---------------------------------

# name -> (kind, [(ts or None for now, cnt, sum)]): what a case leaves in the store.
Stored = dict[str, tuple[str, list[tuple[int | None, float, float]]]]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None
    json: Any = None
    raw: tuple[str, bytes] | None = None  # (content type, body)
    http: int = 200
    status: int = 200
    msg: str = "ok"
    stored: Stored = field(default_factory=dict)


K = "{key}"  # replaced by a write key; "{read}": a read-only key; "{revoked}"


def ez(id: str, fields: dict[str, str], **kw: Any) -> list[Case]:
    """The same EZ case as a GET (query string) and a POST (form body)."""
    return [Case(f"{id} [GET]", "GET", "/ez", query={"ezkey": K, **fields}, **kw),
            Case(f"{id} [POST]", "POST", "/ez", form={"ezkey": K, **fields}, **kw)]


def invalid(msg: str) -> dict[str, Any]:
    return {"http": 422, "status": 422, "msg": msg}


CASES: list[Case] = [
    *ez("count", {"stat": "ez count", "count": "3"},
        stored={"ez_count": (COUNTER, [(None, 1, 3)])}),
    *ez("value", {"stat": "ez value", "value": "2.5"},
        stored={"ez_value": (VALUE, [(None, 1, 2.5)])}),
    *ez("count at t", {"stat": "ez t", "count": "2", "t": str(T)},
        stored={"ez_t": (COUNTER, [(T, 1, 2)])}),
    *ez("value at t", {"stat": "ez vt", "value": "-1.5e1", "t": str(T)},
        stored={"ez_vt": (VALUE, [(T, 1, -15)])}),
    *ez("negative and fractional count", {"stat": "ez neg", "count": "-0.5"},
        stored={"ez_neg": (COUNTER, [(None, 1, -0.5)])}),
    *ez("fan-out", {"stat": "fan~a,b", "count": "1", "t": str(T)},
        stored={"fan_a": (COUNTER, [(T, 1, 1)]), "fan_b": (COUNTER, [(T, 1, 1)])}),
    *ez("mapped name", {"stat": "ws0: load", "value": "0.5", "t": str(T)},
        stored={"ws0-3A_load": (VALUE, [(T, 1, 0.5)])}),
    *ez("count and value", {"stat": "x", "count": "1", "value": "1"},
        **invalid("count: give count (a counter) or value (a value), not both")),
    *ez("neither count nor value", {"stat": "x"}, **invalid("count: count or value is")),
    *ez("count not a number", {"stat": "x", "count": "abc"}, **invalid("count: must be a")),
    *ez("value NaN", {"stat": "x", "value": "NaN"}, **invalid("value: must be a finite")),
    *ez("value overflow", {"stat": "x", "value": "1e999"}, **invalid("value: must be finite")),
    *ez("count empty", {"stat": "x", "count": ""}, **invalid("count: must be a finite")),
    *ez("t too old", {"stat": "x", "count": "1", "t": "1362772440"},
        **invalid("t: is older than the raw retention")),
    *ez("t in the future", {"stat": "x", "count": "1", "t": str(NOW + 3600)},
        **invalid("t: is more than 300 s in the future")),
    *ez("t not a time", {"stat": "x", "count": "1", "t": "soon"},
        **invalid("t: must be epoch seconds")),
    *ez("no stat", {"count": "1"}, **invalid("stat: is required")),
    *ez("empty stat", {"stat": "", "count": "1"}, **invalid("stat: is required")),
    *ez("stat too long", {"stat": "s" * 256, "count": "1"}, **invalid("stat: must be at most")),
    *ez("stat with ..", {"stat": "a..b", "count": "1"}, **invalid("stat: must not start")),
    *ez("fan-out without prefix", {"stat": "~a", "count": "1"}, **invalid("stat: needs a")),
    *ez("fan-out with empty name", {"stat": "p~a,", "count": "1"}, **invalid("stat: needs a")),
    *ez("two tildes", {"stat": "p~a~b", "count": "1"}, **invalid("stat: may hold at most")),
    *ez("unknown field", {"stat": "x", "count": "1", "vaule": "2"},
        **invalid("vaule: unknown field")),
    Case("no ezkey [GET]", "GET", "/ez", query={"stat": "x", "count": "1"},
         http=401, status=500, msg="invalid keys: no ezkey given"),
    Case("no ezkey [POST]", "POST", "/ez", form={"stat": "x", "count": "1"},
         http=401, status=500, msg="invalid keys: no ezkey given"),
    Case("an e-mail as ezkey", "POST", "/ez",
         form={"ezkey": "john@example.com", "stat": "x", "count": "1"},
         http=401, status=500, msg="invalid keys"),
    Case("unknown key", "POST", "/ez", form={"ezkey": "gf_" + "A" * 32, "stat": "x",
                                             "count": "1"},
         http=401, status=500, msg="invalid keys"),
    Case("revoked key", "POST", "/ez", form={"ezkey": "{revoked}", "stat": "x", "count": "1"},
         http=401, status=500, msg="invalid keys"),
    Case("read-only key", "POST", "/ez", form={"ezkey": "{read}", "stat": "x", "count": "1"},
         http=403, status=403, msg="API key lacks the 'write' scope"),
    Case("key checked before the fields", "POST", "/ez", form={"ezkey": "nope"},
         http=401, status=500, msg="invalid keys"),
    Case("form fields in the query string of a POST", "POST", "/ez",
         query={"ezkey": K, "stat": "post query", "count": "4"},
         stored={"post_query": (COUNTER, [(None, 1, 4)])}),
    Case("body field wins over the query", "POST", "/ez", query={"count": "100"},
         form={"ezkey": K, "stat": "body wins", "count": "5"},
         stored={"body_wins": (COUNTER, [(None, 1, 5)])}),
    Case("not a form", "POST", "/ez", raw=("text/plain", b"ezkey=x&stat=x&count=1"),
         http=415, status=415, msg="Content-Type must be"),
    Case("a form body not UTF-8", "POST", "/ez",
         raw=("application/x-www-form-urlencoded", b"ezkey=x&stat=\xff&count=1"),
         http=400, status=400, msg="malformed form body"),
    Case("multipart without its boundary", "POST", "/c",
         raw=("multipart/form-data", b"--x\r\n"), http=400, status=400,
         msg="malformed form body"),
    Case("multipart form", "POST", "/v", raw=(
        "multipart/form-data; boundary=b",
        b"--b\r\nContent-Disposition: form-data; name=\"ukey\"\r\n\r\n{key}\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nmultipart v\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\n4\r\n--b--\r\n"),
        stored={"multipart_v": (VALUE, [(None, 1, 4)])}),
    # -- the JSON bulk form --
    Case("json bulk", "POST", "/ez", json={"ezkey": K, "data": [
        {"stat": "bulk count", "count": 2},
        {"stat": "bulk~x,y", "count": 1, "t": T},
        {"stat": "bulk value", "value": 0.25, "t": T},
        {"stat": "bulk value", "value": "0.75", "t": str(T)},
    ]}, stored={"bulk_count": (COUNTER, [(None, 1, 2)]),
                "bulk_x": (COUNTER, [(T, 1, 1)]), "bulk_y": (COUNTER, [(T, 1, 1)]),
                "bulk_value": (VALUE, [(T, 2, 1.0)])}),
    Case("json: one bad stat, nothing stored", "POST", "/ez", json={"ezkey": K, "data": [
        {"stat": "bulk ok", "count": 1}, {"stat": "bulk bad", "count": True},
    ]}, **invalid("data[1].count: must be a number")),
    Case("json: data empty", "POST", "/ez", json={"ezkey": K, "data": []},
         **invalid("data: must hold 1 to 1000")),
    Case("json: data over 1000", "POST", "/ez",
         json={"ezkey": K, "data": [{"stat": "n", "count": 1}] * 1001},
         **invalid("data: must hold 1 to 1000")),
    Case("json: fans out to too many points", "POST", "/ez",
         json={"ezkey": K, "data": [{"stat": "p~" + ",".join("abcdefghijk"), "count": 1}]
               * 1000}, **invalid("data: fans out to 11000 points; at most 10000")),
    Case("json: data not an array", "POST", "/ez", json={"ezkey": K, "data": {}},
         **invalid("data: is required: an array")),
    Case("json: a stat not an object", "POST", "/ez", json={"ezkey": K, "data": [3]},
         **invalid("data[0].data: must be a JSON object")),
    Case("json: unknown field", "POST", "/ez",
         json={"ezkey": K, "data": [{"stat": "n", "count": 1, "x": 1}]},
         **invalid("data[0].x: unknown field")),
    Case("json: no ezkey", "POST", "/ez", json={"data": [{"stat": "n", "count": 1}]},
         http=401, status=500, msg="invalid keys: no ezkey given"),
    Case("json: ezkey not a string", "POST", "/ez", json={"ezkey": 5, "data": []},
         http=401, status=500, msg="invalid keys"),
    Case("json: malformed", "POST", "/ez", raw=("application/json", b'{"ezkey": "x",'),
         http=400, status=400, msg="malformed JSON"),
    Case("json: the blog's trailing comma", "POST", "/ez",
         raw=("application/json", b'{"ezkey": "x", "data": [{"stat": "a", "count": 1},]}'),
         http=400, status=400, msg="malformed JSON"),
    # -- the classic API --
    Case("classic count", "POST", "/c", form={"ukey": K, "key": "classic c", "count": "7"},
         stored={"classic_c": (COUNTER, [(None, 1, 7)])}),
    Case("classic count at t [GET]", "GET", "/c",
         query={"ukey": K, "key": "classic cg", "count": "1", "t": str(T)},
         stored={"classic_cg": (COUNTER, [(T, 1, 1)])}),
    Case("classic value", "POST", "/v", form={"ukey": K, "key": "classic v", "value": "1.5"},
         stored={"classic_v": (VALUE, [(None, 1, 1.5)])}),
    Case("classic value at t [GET]", "GET", "/v",
         query={"ukey": K, "key": "classic vg", "value": "3", "t": str(T)},
         stored={"classic_vg": (VALUE, [(T, 1, 3)])}),
    Case("classic count without count", "POST", "/c", form={"ukey": K, "key": "x"},
         **invalid("count: is required")),
    Case("classic value without value", "POST", "/v", form={"ukey": K, "key": "x"},
         **invalid("value: is required")),
    Case("classic count given a value", "POST", "/c",
         form={"ukey": K, "key": "x", "value": "1"}, **invalid("value: unknown field")),
    Case("classic without key", "POST", "/v", form={"ukey": K, "value": "1"},
         **invalid("key: is required")),
    Case("classic without ukey", "POST", "/c", form={"key": "x", "count": "1"},
         http=401, status=500, msg="invalid keys: no ukey given"),
    Case("classic with an ezkey instead", "POST", "/c",
         form={"ezkey": K, "key": "x", "count": "1"},
         http=401, status=500, msg="invalid keys: no ukey given"),
    Case("classic: json is not accepted", "POST", "/c",
         raw=("application/json", b'{"ukey": "x"}'),
         http=415, status=415, msg="Content-Type must be"),
]


async def keys_for(store: Store) -> dict[str, str]:
    revoked = await new_key(store, name="gone")
    await store.revoke_key("gone", NOW)
    return {"{key}": await new_key(store, scopes=("write",)),
            "{read}": await new_key(store, scopes=("read",)), "{revoked}": revoked}


def filled(fields: dict[str, Any] | None, keys: dict[str, str]) -> dict[str, Any] | None:
    return None if fields is None else {k: keys.get(v, v) if isinstance(v, str) else v
                                        for k, v in fields.items()}


async def run_case(api: Any, case: Case, keys: dict[str, str]) -> None:
    kwargs: dict[str, Any] = {"params": filled(case.query, keys)}
    if case.form is not None:
        kwargs["data"] = filled(case.form, keys)
    elif case.json is not None:
        kwargs["json"] = filled(case.json, keys)
    elif case.raw is not None:
        kwargs["data"] = case.raw[1].replace(b"{key}", keys[K].encode())
        kwargs["headers"] = {"Content-Type": case.raw[0]}
    response = await api.request(case.method, case.path, **kwargs)
    body = await response.json()
    assert (response.status, body["status"]) == (case.http, case.status), (case.id, body)
    assert set(body) == {"status", "msg"}, case.id
    assert body["msg"].startswith(case.msg), (case.id, body)
    if case.http == 200:
        assert response.headers["X-RateLimit-Limit"]


def check_stored(stored: dict[str, list[tuple[int, float, float, float, float]]],
                 expect: Stored) -> None:
    for name, (_kind, rows) in expect.items():
        got = stored.get(name, [])
        assert len(got) == len(rows), (name, got)
        for (ts, cnt, total), row in zip(rows, got, strict=True):
            assert (row[1], row[2]) == (cnt, total), (name, got)
            if ts is not None:
                assert row[0] == ts, (name, got)
            else:
                assert abs(row[0] - time.time()) < 600, (name, got)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_each_case(sqlite_store: Store, case: Case) -> None:
    keys = await keys_for(sqlite_store)
    async with serve(sqlite_store) as api:
        await run_case(api, case, keys)
    stored = await stored_points(sqlite_store)
    assert set(stored) == set(case.stored), case.id  # an error stores nothing at all
    check_stored(stored, case.stored)
    for name, (kind, _rows) in case.stored.items():
        info = await sqlite_store.get_metric(name)
        assert info is not None and info.kind == kind


async def test_the_whole_table_in_one_store(store: Store) -> None:
    """Every case in turn against one service, on SQLite and on MariaDB: the store
    holds exactly the sum of what the successful cases stored."""
    keys = await keys_for(store)
    async with serve(store) as api:
        for case in CASES:
            await run_case(api, case, keys)
    expect: Stored = {}
    for case in CASES:
        for name, (kind, rows) in case.stored.items():
            expect.setdefault(name, (kind, []))[1].extend(rows)
    stored = await stored_points(store)
    assert set(stored) == set(expect)
    for name, (_kind, rows) in expect.items():
        assert sum(r[1] for r in stored[name]) == sum(r[1] for r in rows), name
        assert sum(r[2] for r in stored[name]) == sum(r[2] for r in rows), name


async def test_kind_conflict(sqlite_store: Store) -> None:
    keys = await keys_for(sqlite_store)
    async with serve(sqlite_store) as api:
        first = await api.post("/ez", data={"ezkey": keys[K], "stat": "kinds", "count": "1"})
        assert first.status == 200
        second = await api.post("/ez", data={"ezkey": keys[K], "stat": "kinds", "value": "1"})
        assert second.status == 409
        body = await second.json()
    assert body["status"] == 409 and body["msg"].startswith("kind conflict")
    stored = await stored_points(sqlite_store)
    assert [(r[1], r[2]) for r in stored["kinds"]] == [(1, 1)]


async def test_body_over_the_limit(sqlite_store: Store) -> None:
    keys = await keys_for(sqlite_store)
    async with serve(sqlite_store, config(max_body_size=1024)) as api:
        form = await api.post("/ez", data={"ezkey": keys[K], "stat": "s" * 2000,
                                           "count": "1"})
        bulk = await api.post("/ez", json={"ezkey": keys[K], "data": [
            {"stat": f"n{i}", "count": 1} for i in range(100)]})
        for response in (form, bulk):
            assert response.status == 413
            body = await response.json()
            assert body["status"] == 413 and body["msg"]
    assert await stored_points(sqlite_store) == {}


async def test_rate_limit_of_the_key(sqlite_store: Store) -> None:
    token = await new_key(sqlite_store, scopes=("write",), rate_limit="2/m")
    async with serve(sqlite_store) as api:
        statuses = []
        for _ in range(3):
            response = await api.post("/ez", data={"ezkey": token, "stat": "limited",
                                                   "count": "1"})
            statuses.append(response.status)
        body = await response.json()
        assert statuses == [200, 200, 429]
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Limit"] == "2"
    assert body["status"] == 429 and "rate limit" in body["msg"]
    assert sum(r[2] for r in (await stored_points(sqlite_store))["limited"]) == 2


# -- StatHat's own clients, byte for byte -------------------------------------------

# What stathat/shlibs python/stathat.py sends: urllib.request.urlopen(Request(
# "http://api.stathat.com" + path, urlencode(args).encode("ascii"))), args in the order
# it builds them. The header block is urllib's (this Python's), checked against the real
# urllib by test_python_golden_request_is_what_urllib_sends.
PY_HEAD = ("POST {path} HTTP/1.1\r\nAccept-Encoding: identity\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n"
           "Host: api.stathat.com\r\n"
           f"User-Agent: Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}\r\n"
           "Connection: close\r\n\r\n")
# What stathat/go stathat.go sends: http.Client.PostForm(url, values), values.Encode()
# sorting the fields, numbers as strconv.FormatFloat(v, 'g', -1, 64). Go's header order:
# Host, User-Agent, Content-Length, then the others sorted, then the transport's
# Accept-Encoding.
GO_HEAD = ("POST {path} HTTP/1.1\r\nHost: api.stathat.com\r\nUser-Agent: Go-http-client/1.1\r\n"
           "Content-Length: {length}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
           "Accept-Encoding: gzip\r\n\r\n")


def request_bytes(head: str, path: str, body: str) -> bytes:
    return head.format(path=path, length=len(body)).encode() + body.encode()


def python_client(token: str) -> list[bytes]:
    """ez_post_count, ez_post_value, post_count (with a timestamp), post_value."""
    q = urllib.parse.quote_plus
    return [
        request_bytes(PY_HEAD, "/ez", f"ezkey={token}&stat=user+created&count=1"),
        request_bytes(PY_HEAD, "/ez", f"ezkey={token}&stat={q('sign in - age of user')}"
                                      "&value=27.0"),
        request_bytes(PY_HEAD, "/c", f"key=logins&ukey={token}&count=2&t={T}"),
        request_bytes(PY_HEAD, "/v", f"key=queue+depth&ukey={token}&value=0.5"),
    ]


def go_client(token: str) -> list[bytes]:
    """PostEZCountOne (fan-out), PostEZValueTime, PostCountTime, PostValue."""
    return [
        request_bytes(GO_HEAD, "/ez", f"count=1&ezkey={token}&stat=messages+sent~total%2Cfemale"),
        request_bytes(GO_HEAD, "/ez", f"ezkey={token}&stat=ws0%3A+load+average&t={T}"
                                      "&value=0.732"),
        request_bytes(GO_HEAD, "/c", f"count=3&key=page+view&t={T}&ukey={token}"),
        request_bytes(GO_HEAD, "/v", f"key=latency&ukey={token}&value=12.5"),
    ]


async def replay(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as is over a fresh TCP connection; (status line, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
    return head.split(b"\r\n")[0], body


OK = b'{"status":200,"msg":"ok"}'


async def test_python_and_go_clients_byte_for_byte(store: Store) -> None:
    token = await new_key(store, scopes=("write",))
    async with serve(store) as api:
        assert api.port is not None
        for request in python_client(token) + go_client(token):
            assert await replay(api.port, request) == (b"HTTP/1.1 200 OK", OK), request
    stored = await stored_points(store)
    assert {name: sum(r[2] for r in rows) for name, rows in stored.items()} == {
        "user_created": 1, "sign_in_-2D_age_of_user": 27.0, "logins": 2,
        "queue_depth": 0.5, "messages_sent_total": 1, "messages_sent_female": 1,
        "ws0-3A_load_average": 0.732, "page_view": 3, "latency": 12.5,
    }
    assert stored["logins"][0][0] == T and stored["page_view"][0][0] == T
    assert stored["ws0-3A_load_average"][0][0] == T
    for name, kind in (("user_created", COUNTER), ("sign_in_-2D_age_of_user", VALUE),
                       ("logins", COUNTER), ("queue_depth", VALUE),
                       ("messages_sent_total", COUNTER), ("latency", VALUE)):
        info = await store.get_metric(name)
        assert info is not None and info.kind == kind, name


async def test_json_bulk_sent_by_curl_as_stathat_documents_it(store: Store) -> None:
    """StatHat's JSON example (blog.stathat.com, "Use JSON to Update Many Stats"),
    posted with the real curl; its trailing comma removed (it is not JSON) and its
    timestamp moved into our retention window."""
    token = await new_key(store, scopes=("write",))
    body = ('{"ezkey": "' + token + '", "data": [{"stat": "page view", "count": 2}, '
            '{"stat": "messages sent~total,female,europe", "count": 1}, '
            '{"stat": "request time~total,messages", "value": 23.094}, '
            '{"stat": "ws0: load average", "value": 0.732, "t": ' + str(T) + '}]}')
    async with serve(store) as api:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-d", body,
            f"http://127.0.0.1:{api.port}/ez", stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
    assert process.returncode == 0
    assert out == OK
    stored = await stored_points(store)
    assert {name: sum(r[2] for r in rows) for name, rows in stored.items()} == {
        "page_view": 2, "messages_sent_total": 1, "messages_sent_female": 1,
        "messages_sent_europe": 1, "request_time_total": 23.094,
        "request_time_messages": 23.094, "ws0-3A_load_average": 0.732,
    }


async def test_python_golden_request_is_what_urllib_sends() -> None:
    """The Python client's bytes above are urllib's own: urllib's request to a capture
    server equals the golden one (Host aside: the client names api.stathat.com)."""
    captured: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        captured.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(capture, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    data = urllib.parse.urlencode({"ezkey": "K", "stat": "user created", "count": 1})

    def post() -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/ez", data.encode("ascii"))
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    try:
        assert await asyncio.to_thread(post) == b"ok"
    finally:
        server.close()
        await server.wait_closed()
    golden = request_bytes(PY_HEAD, "/ez", data)
    assert captured == [golden.replace(b"Host: api.stathat.com",
                                       f"Host: 127.0.0.1:{port}".encode())]
