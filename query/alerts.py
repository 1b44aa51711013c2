"""Alert rules over HTTP: ``/api/alerts`` (create, list), ``/api/alerts/{id}`` (get,
replace, delete) and ``/api/alerts/{id}/history``.

Rules are validated by ``protocol.alerts`` (a 422 names each bad field) and stored as
their JSON; secrets are stored (the notifier signs with them) but never answered: a
secret reads as ``********``, and a rule written back with that placeholder keeps its
stored secret. Creating, replacing and deleting need a key with the ``admin`` scope;
reading needs ``read``. The evaluation itself runs elsewhere (the ``alerts`` package,
started by the service's runner): this module only reads and writes the tables.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import orjson
from aiohttp import web

from protocol.alerts import MAX_RULES, OK, Rule, RuleError, keep_secrets, parse_rule, rule_json
from protocol.units import format_timestamp
from query.errors import ApiError, invalid, json_response
from query.ingest import read_json
from query.read import _int, _only
from query.state import STORE
from store.base import AlertRuleRow, AlertStateRow, AlertTransitionRow, StoreError

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_ID: Final = 2**53  # ids are positive and fit a JSON number exactly
_LIST_PARAMS: Final = frozenset({"limit", "cursor"})
_STATE_ORDER: Final = {"ok": 0, "pending": 1, "firing": 2}


async def create_rule(request: web.Request) -> web.Response:
    rule = _parse(await read_json(request))
    store = request.app[STORE]
    now = int(time.time())
    try:
        rule_id = await store.create_rule(rule.name, rule.metric, _body(rule), now, MAX_RULES)
        stored = None if rule_id is None else await store.get_rule(rule_id)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    if stored is None:
        raise ApiError(409, f"the database holds {MAX_RULES} rules already: delete some "
                            "first", code="too_many_rules")
    return json_response(_answer(stored, []))


async def list_rules(request: web.Request) -> web.Response:
    query = request.query
    _only(query, _LIST_PARAMS)
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = _int(query, "cursor", 0, 0, MAX_ID) if "cursor" in query else 0
    store = request.app[STORE]
    try:
        rows = await store.list_rules(limit + 1, after)
        page = rows[:limit]
        states = await store.alert_states([row.id for row in page])
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    by_rule: dict[int, list[AlertStateRow]] = {}
    for state in states:
        by_rule.setdefault(state.rule_id, []).append(state)
    return json_response({
        "alerts": [_answer(row, by_rule.get(row.id, [])) for row in page],
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
    })


async def get_rule(request: web.Request) -> web.Response:
    row = await _stored(request)
    try:
        states = await request.app[STORE].alert_states([row.id])
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    return json_response(_answer(row, states))


async def replace_rule(request: web.Request) -> web.Response:
    rule_id = _rule_id(request)
    new = _parse(await read_json(request))
    old = await _stored(request)
    try:
        new = keep_secrets(new, parse_rule(orjson.loads(old.body)))
    except RuleError as exc:
        raise ApiError(422, str(exc), exc.errors) from None
    store = request.app[STORE]
    try:
        if not await store.update_rule(rule_id, new.name, new.metric, _body(new),
                                       int(time.time())):
            raise ApiError(404, f"no alert rule {rule_id}")
        stored = await store.get_rule(rule_id)
        states = await store.alert_states([rule_id])
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    if stored is None:
        raise ApiError(404, f"no alert rule {rule_id}")
    return json_response(_answer(stored, states))


async def delete_rule(request: web.Request) -> web.Response:
    rule_id = _rule_id(request)
    try:
        deleted = await request.app[STORE].delete_rule(rule_id)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    if not deleted:
        raise ApiError(404, f"no alert rule {rule_id}")
    return json_response({"id": rule_id, "deleted": True})


async def rule_history(request: web.Request) -> web.Response:
    query = request.query
    _only(query, _LIST_PARAMS)
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = _int(query, "cursor", 0, 1, MAX_ID) if "cursor" in query else None
    row = await _stored(request)
    try:
        history = await request.app[STORE].rule_history(row.id, limit + 1, before)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    page = history[:limit]
    return json_response({
        "id": row.id,
        "history": [_transition(t) for t in page],
        "next_cursor": str(page[-1].id) if len(history) > limit else None,
    })


def _parse(body: object) -> Rule:
    try:
        return parse_rule(body)
    except RuleError as exc:
        raise ApiError(422, str(exc), exc.errors) from None


def _body(rule: Rule) -> str:
    return orjson.dumps(rule_json(rule, redact=False)).decode()


def _rule_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 16 and 0 < int(text) <= MAX_ID):
        raise invalid("id", "must be a positive integer (a rule's id)")
    return int(text)


async def _stored(request: web.Request) -> AlertRuleRow:
    rule_id = _rule_id(request)
    try:
        row = await request.app[STORE].get_rule(rule_id)
    except StoreError as exc:
        raise ApiError(503, "the store is unavailable") from exc
    if row is None:
        raise ApiError(404, f"no alert rule {rule_id}")
    return row


def _answer(row: AlertRuleRow, states: Sequence[AlertStateRow]) -> dict[str, object]:
    """A stored rule as answered: its fields with secrets redacted, and its states."""
    rule = parse_rule(orjson.loads(row.body))
    worst = max((s.state for s in states), key=lambda s: _STATE_ORDER.get(s, 0), default=OK)
    return {
        "id": row.id,
        "kind": rule.kind,
        **rule_json(rule),
        "created_at": format_timestamp(row.created_at),
        "updated_at": format_timestamp(row.updated_at),
        "state": worst,
        "states": [
            {"metric": s.metric, "state": s.state, "since": format_timestamp(int(s.since)),
             "value": s.value}
            for s in states
        ],
    }


def _transition(t: AlertTransitionRow) -> dict[str, object]:
    return {"id": t.id, "metric": t.metric, "from": t.from_state, "to": t.to_state,
            "time": format_timestamp(int(t.at)), "value": t.value}
