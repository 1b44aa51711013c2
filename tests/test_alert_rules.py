"""protocol.alerts: rule validation, globs, the state machine, signatures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.alerts import (
    FIRING,
    OK,
    PENDING,
    REDACTED,
    AlertState,
    RuleError,
    glob_prefix,
    glob_regex,
    idempotency_key,
    keep_secrets,
    missing_value,
    parse_rule,
    retry_delay,
    rule_json,
    sign,
    step,
    verify,
    webhook_payload,
)

HOOK = {"webhook": "http://127.0.0.1:9/hook", "secret": "s3cret"}


def threshold(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "errors high", "metric": "app.errors",
                            "aggregation": "sum", "window": "5m", "op": ">",
                            "threshold": 10, "for": "1m", "notify": [HOOK]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def fields(body: object) -> list[str]:
    with pytest.raises(RuleError) as info:
        parse_rule(body)
    return [e.field for e in info.value.errors]


def test_threshold_rule_parses_and_round_trips() -> None:
    rule = parse_rule(threshold())
    assert (rule.kind, rule.window, rule.for_, rule.threshold) == ("threshold", 300, 60, 10.0)
    shown = rule_json(rule)
    assert shown["notify"] == [{"webhook": HOOK["webhook"], "secret": REDACTED}]
    assert parse_rule(rule_json(rule, redact=False)) == rule


def test_missing_rule_parses() -> None:
    rule = parse_rule({"name": "gone", "metric": "app.*.beat", "absent_for": "10m",
                       "notify": [{"email": "oncall@example.com"}]})
    assert (rule.kind, rule.absent_for, rule.notify[0].email) == ("missing", 600,
                                                                  "oncall@example.com")


@pytest.mark.parametrize(("change", "field"), [
    ({"aggregation": "p99.9x"}, "aggregation"),
    ({"window": "5 minutes"}, "window"),
    ({"window": "0s"}, "window"),
    ({"for": "-1m"}, "for"),
    ({"op": "!="}, "op"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"metric": "app..errors"}, "metric"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"notify": []}, "notify"),
    ({"notify": [HOOK] * 11}, "notify"),
    ({"notify": [{"webhook": "ftp://example.com/", "secret": "s"}]}, "notify[0].webhook"),
    ({"notify": [{"webhook": "http://u:p@example.com/", "secret": "s"}]},
     "notify[0].webhook"),
    ({"notify": [{"webhook": "http://example.com/" + "a" * 2000, "secret": "s"}]},
     "notify[0].webhook"),
    ({"notify": [{"webhook": "http://example.com/", "secret": ""}]}, "notify[0].secret"),
    ({"notify": [{"email": "not an address"}]}, "notify[0].email"),
    ({"notify": [{"sms": "123"}]}, "notify[0]"),
    ({"extra": 1}, "extra"),
])
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    assert fields(threshold(**change)) == [field]


def test_missing_fields_are_named() -> None:
    assert fields({"notify": [HOOK]}) == ["name", "metric", "op", "threshold", "window"]
    assert fields({"name": "n", "metric": "m", "absent_for": "soon", "notify": [HOOK]}) == [
        "absent_for"]
    assert fields([1]) == ["body"]


def test_keep_secrets_takes_the_stored_secret_back() -> None:
    old = parse_rule(threshold())
    new = parse_rule(threshold(notify=[{"webhook": HOOK["webhook"], "secret": REDACTED}]))
    assert keep_secrets(new, old).notify[0].secret == "s3cret"
    other = parse_rule(threshold(notify=[{"webhook": "http://x/", "secret": REDACTED}]))
    with pytest.raises(RuleError):
        keep_secrets(other, old)


def test_glob_matches_within_one_segment() -> None:
    pattern = glob_regex("app.*.errors")
    assert glob_prefix("app.*.errors") == "app."
    assert pattern.fullmatch("app.web.errors")
    assert not pattern.fullmatch("app.web.api.errors")
    assert not pattern.fullmatch("app.web.errorsx")
    assert glob_regex("a.b*").fullmatch("a.bcd") and not glob_regex("a.b*").fullmatch("a.b.c")


def test_ok_pending_firing_ok() -> None:
    rule = parse_rule(threshold())  # > 10 for 1m
    s0 = AlertState()
    s1, t1, n1 = step(rule, s0, 11.0, 1000.0, min_gap=300)
    assert (s1.state, [(t.from_state, t.to_state) for t in t1], n1) == (PENDING, [
        (OK, PENDING)], None)
    s2, t2, n2 = step(rule, s1, 12.0, 1030.0, min_gap=300)
    assert (s2.state, t2, n2) == (PENDING, [], None)
    s3, t3, n3 = step(rule, s2, 13.0, 1060.0, min_gap=300)
    assert s3.state == FIRING and t3[0].value == 13.0 and n3 is not None
    assert n3.state == FIRING
    s4, t4, n4 = step(rule, s3, 14.0, 1070.0, min_gap=300)
    assert (s4.state, t4, n4) == (FIRING, [], None)  # fires once
    s5, t5, n5 = step(rule, s4, 1.0, 1080.0, min_gap=300)
    assert s5.state == OK and [(t.from_state, t.to_state) for t in t5] == [(FIRING, OK)]
    assert n5 is not None and n5.state == OK  # resolves once
    assert step(rule, s5, 2.0, 1090.0, min_gap=300)[1:] == ([], None)


def test_pending_that_clears_goes_back_to_ok_silently() -> None:
    rule = parse_rule(threshold())
    s1, _, _ = step(rule, AlertState(), 11.0, 0.0, min_gap=300)
    s2, t2, n2 = step(rule, s1, 5.0, 10.0, min_gap=300)
    assert s2.state == OK and t2[0].to_state == OK and n2 is None


def test_flapping_guard_holds_a_refiring_until_the_gap_passes() -> None:
    rule = parse_rule(threshold(**{"for": "0s"}))
    s, _, n = step(rule, AlertState(), 11.0, 0.0, min_gap=300)
    assert n is not None
    s, _, n = step(rule, s, 1.0, 10.0, min_gap=300)
    assert n is not None and n.state == OK  # resolve: always
    s, t, n = step(rule, s, 11.0, 20.0, min_gap=300)
    assert s.state == FIRING and t and n is None  # stored, not notified
    s, t, n = step(rule, s, 11.0, 200.0, min_gap=300)
    assert n is None
    s, t, n = step(rule, s, 11.0, 300.0, min_gap=300)
    assert n is not None and n.state == FIRING and t == []  # late, once
    s, t, n = step(rule, s, 1.0, 310.0, min_gap=300)
    assert n is not None and n.state == OK


def test_unnotified_firing_resolves_silently() -> None:
    rule = parse_rule(threshold(**{"for": "0s"}))
    s = AlertState(last_notified=0.0)
    s, _, n = step(rule, s, 11.0, 10.0, min_gap=300)
    assert s.state == FIRING and n is None
    s, t, n = step(rule, s, 1.0, 20.0, min_gap=300)
    assert s.state == OK and t and n is None


def test_no_data_is_zero_for_sums_and_no_verdict_for_averages() -> None:
    from protocol.alerts import observe
    rule = parse_rule(threshold(op="<", threshold=1, **{"for": "0s"}))
    assert observe(rule, None) == 0.0
    assert step(rule, AlertState(), observe(rule, None), 0.0, min_gap=0)[0].state == FIRING
    avg = parse_rule(threshold(aggregation="avg"))
    firing = AlertState(state=FIRING, notified=True)
    assert step(avg, firing, observe(avg, None), 5.0, min_gap=0) == (firing, [], None)


def test_missing_rule_and_outage_grace() -> None:
    rule = parse_rule({"name": "n", "metric": "m", "absent_for": "60s", "notify": [HOOK]})
    assert missing_value(100.0, 0.0, 150.0) == 50.0
    assert missing_value(None, 100.0, 130.0) == 30.0  # counted from the rule's creation
    # The store was down until t=500: absence counts from 500, not from 100.
    assert missing_value(100.0, 500.0, 520.0) == 20.0
    s, _, n = step(rule, AlertState(), missing_value(100.0, 0.0, 170.0), 170.0, min_gap=0)
    assert s.state == FIRING and n is not None
    s, _, n = step(rule, s, missing_value(171.0, 0.0, 172.0), 172.0, min_gap=0)
    assert s.state == OK and n is not None and n.state == OK


def test_signature_and_payload() -> None:
    rule = parse_rule(threshold())
    _, _, notice = step(rule, AlertState(state=PENDING, since=0.0), 20.0, 100.0, min_gap=0)
    assert notice is not None
    key = idempotency_key(7, "app.errors", FIRING, 100.0, 0)
    assert key == idempotency_key(7, "app.errors", FIRING, 100.0, 0)
    assert key != idempotency_key(7, "app.errors", FIRING, 100.0, 1)
    payload = webhook_payload(7, rule, "app.errors", notice, "http://h:8000/", key)
    assert payload["link"] == "http://h:8000/#m=app.errors&r=1h"
    assert payload["state"] == FIRING and payload["value"] == 20.0
    body = json.dumps(payload).encode()
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and verify("s3cret", body, header)
    assert not verify("other", body, header) and not verify("s3cret", body + b" ", header)


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay(50) == 3600.0
