"""``/api/alerts``: CRUD of alert rules over the real app, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any

from store import Store
from store.base import AlertStateRow, AlertTransitionRow
from tests.http_support import auth, new_key, serve

HOOK = {"webhook": "http://127.0.0.1:9/hook", "secret": "s3cret-value"}
RULE: dict[str, Any] = {"name": "errors high", "metric": "app.errors", "aggregation": "sum",
                        "window": "5m", "op": ">", "threshold": 10, "for": "1m",
                        "notify": [HOOK, {"email": "oncall@example.com"}]}
MISSING: dict[str, Any] = {"name": "beat gone", "metric": "app.*.beat", "absent_for": "10m",
                           "notify": [{"email": "oncall@example.com"}]}


async def test_create_get_list_replace_delete(store: Store) -> None:
    admin = auth(await new_key(store, scopes=("admin", "read")))
    reader = auth(await new_key(store, scopes=("read",)))
    async with serve(store) as api:
        created = await api.post("/api/alerts", json=RULE, headers=admin)
        assert created.status == 200, await created.text()
        rule = await created.json()
        assert rule["kind"] == "threshold" and rule["window"] == "5m" and rule["for"] == "1m"
        assert rule["notify"][0] == {"webhook": HOOK["webhook"], "secret": "********"}
        assert rule["state"] == "ok" and rule["states"] == []
        assert "s3cret" not in await created.text()
        second = await (await api.post("/api/alerts", json=MISSING, headers=admin)).json()
        assert second["kind"] == "missing" and second["absent_for"] == "10m"

        got = await api.get(f"/api/alerts/{rule['id']}", headers=reader)
        assert got.status == 200 and (await got.json())["name"] == "errors high"
        listed = await (await api.get("/api/alerts", headers=reader)).json()
        assert [r["id"] for r in listed["alerts"]] == [rule["id"], second["id"]]
        assert listed["next_cursor"] is None
        page = await (await api.get("/api/alerts?limit=1", headers=reader)).json()
        assert [r["id"] for r in page["alerts"]] == [rule["id"]]
        rest = await (await api.get(f"/api/alerts?cursor={page['next_cursor']}",
                                    headers=reader)).json()
        assert [r["id"] for r in rest["alerts"]] == [second["id"]]

        # Written back as read (secret redacted): the stored secret is kept.
        changed = {k: rule[k] for k in ("name", "metric", "aggregation", "window", "op",
                                        "for", "notify")} | {"threshold": 20}
        put = await api.put(f"/api/alerts/{rule['id']}", json=changed, headers=admin)
        assert put.status == 200, await put.text()
        assert (await put.json())["threshold"] == 20
        stored = await store.get_rule(rule["id"])
        assert stored is not None and "s3cret-value" in stored.body

        deleted = await api.delete(f"/api/alerts/{rule['id']}", headers=admin)
        assert (deleted.status, await deleted.json()) == (200, {"id": rule["id"],
                                                                 "deleted": True})
        gone = await api.get(f"/api/alerts/{rule['id']}", headers=reader)
        assert gone.status == 404 and (await gone.json())["error"]["code"] == "not_found"


async def test_scopes(store: Store) -> None:
    reader = auth(await new_key(store, scopes=("read", "write")))
    admin_only = auth(await new_key(store, scopes=("admin",)))
    async with serve(store) as api:
        refused = await api.post("/api/alerts", json=RULE, headers=reader)
        assert refused.status == 403
        assert "'admin'" in (await refused.json())["error"]["message"]
        assert (await api.delete("/api/alerts/1", headers=reader)).status == 403
        assert (await api.put("/api/alerts/1", json=RULE, headers=reader)).status == 403
        assert (await api.get("/api/alerts", headers=admin_only)).status == 403
        assert (await api.get("/api/alerts")).status == 401


async def test_a_bad_rule_is_a_422_naming_the_field(store: Store) -> None:
    admin = auth(await new_key(store, scopes=("admin", "read")))
    async with serve(store) as api:
        for change, field in (({"aggregation": "median"}, "aggregation"),
                              ({"window": "five minutes"}, "window"),
                              ({"for": "1y"}, "for"),
                              ({"notify": [{"webhook": "file:///etc/passwd", "secret": "x"}]},
                               "notify[0].webhook")):
            response = await api.post("/api/alerts", json=RULE | change, headers=admin)
            assert response.status == 422
            error = (await response.json())["error"]
            assert error["code"] == "invalid"
            assert [d["field"] for d in error["details"]] == [field]
        assert (await api.post("/api/alerts", data=b"{", headers=admin | {
            "Content-Type": "application/json"})).status == 400
        assert (await api.get("/api/alerts/abc", headers=admin | auth(
            await new_key(store, scopes=("read",))))).status == 422
        assert (await api.get("/api/alerts?limit=0", headers=auth(
            await new_key(store, scopes=("read",))))).status == 422
        # A redacted secret with nothing stored to keep.
        created = await (await api.post("/api/alerts", json=RULE, headers=admin)).json()
        other = RULE | {"notify": [{"webhook": "http://elsewhere/", "secret": "********"}]}
        response = await api.put(f"/api/alerts/{created['id']}", json=other, headers=admin)
        assert response.status == 422
        assert (await response.json())["error"]["details"][0]["field"] == "notify[0].secret"


async def test_states_and_history(store: Store) -> None:
    admin = auth(await new_key(store, scopes=("admin", "read")))
    async with serve(store) as api:
        rule = await (await api.post("/api/alerts", json=RULE, headers=admin)).json()
        rule_id = rule["id"]
        assert await store.acquire_lease("alerts", "t", 0.0, 1e12)
        moves = [AlertTransitionRow(0, rule_id, "app.errors", a, b, 1_800_000_000.0 + n, v)
                 for n, (a, b, v) in enumerate([("ok", "pending", 11.0),
                                                ("pending", "firing", 12.0)])]
        state = AlertStateRow(rule_id, "app.errors", "firing", 1_800_000_001.0, 12.0,
                              1_800_000_001.0, True)
        assert await store.save_evaluation("alerts", "t", 1.0, [state], moves, [])
        got = await (await api.get(f"/api/alerts/{rule_id}", headers=admin)).json()
        assert got["state"] == "firing"
        assert got["states"] == [{"metric": "app.errors", "state": "firing",
                                  "since": "2027-01-15T08:00:01Z", "value": 12.0}]
        history = await (await api.get(f"/api/alerts/{rule_id}/history?limit=1",
                                       headers=admin)).json()
        assert [(h["from"], h["to"], h["value"]) for h in history["history"]] == [
            ("pending", "firing", 12.0)]
        older = await (await api.get(
            f"/api/alerts/{rule_id}/history?cursor={history['next_cursor']}",
            headers=admin)).json()
        assert [h["to"] for h in older["history"]] == ["pending"]
        assert older["next_cursor"] is None
        missing = await api.get("/api/alerts/999999/history", headers=admin)
        assert missing.status == 404
