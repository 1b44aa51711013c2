"""Alert rules, their state machine and their notifications: pure code, no I/O.

A rule is a threshold rule (an aggregation of a metric over a window compared with a
number) or a missing-data rule (no point for ``absent_for``). Its metric may be a glob
(``app.*.errors``: ``*`` stands for any run of name characters within one segment);
each matching metric then has its own state. A (rule, metric) moves

    ok -> pending -> firing -> ok

(``pending`` only while the condition has held for less than the rule's ``for``), and
``step`` is that machine: (state, observation, now) in, (new state, transitions,
notification) out. The evaluator (alerts/) feeds it; the store keeps what it returns.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, cast
from urllib.parse import quote, urlsplit

from protocol.buckets import AGGREGATIONS, Aggregation
from protocol.names import MAX_NAME_LENGTH
from protocol.points import FieldError
from protocol.units import format_duration, format_timestamp, parse_duration

Op = Literal[">", ">=", "<", "<=", "=="]
OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq,
}
State = Literal["ok", "pending", "firing"]
OK: Final = "ok"
PENDING: Final = "pending"
FIRING: Final = "firing"
RuleKind = Literal["threshold", "missing"]

# Bounds on every part of a rule (the API answers 422 past them).
MAX_RULE_NAME: Final = 200
MAX_TARGETS: Final = 10
MAX_URL_LENGTH: Final = 2000
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321's path limit
MAX_SECRET_LENGTH: Final = 200
MAX_WINDOW: Final = 7 * 86400  # a week: the raw retention's default
MAX_FOR: Final = 7 * 86400
MAX_ABSENT_FOR: Final = 30 * 86400
MAX_MATCHES: Final = 1000  # metrics one glob rule watches, at most
MAX_RULES: Final = 20_000  # rules in a database, at most
REDACTED: Final = "********"  # what the API shows for a secret (and takes to keep it)

THRESHOLD_FIELDS: Final = frozenset(
    {"name", "metric", "aggregation", "window", "op", "threshold", "for", "notify"})
MISSING_FIELDS: Final = frozenset({"name", "metric", "absent_for", "notify"})
# Additive aggregations are 0 over a window without data; the others have no value.
_ZERO_WHEN_EMPTY: Final = frozenset({"sum", "count", "rate"})

_GLOB = re.compile(r"[A-Za-z0-9_*-]+(?:\.[A-Za-z0-9_*-]+)*", re.ASCII)
_EMAIL = re.compile(r"[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a rule's notifications go: a webhook (with its HMAC secret) or an address."""

    webhook: str | None = None
    secret: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    metric: str  # a name or a glob
    kind: RuleKind
    notify: tuple[Target, ...]
    aggregation: Aggregation = "sum"
    window: int = 300  # seconds
    op: Op = ">"
    threshold: float = 0.0
    for_: int = 0  # seconds the condition holds before firing
    absent_for: int = 0  # seconds without a point (missing-data rules)


class RuleError(ValueError):
    """A rule that does not validate: one FieldError per problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def parse_rule(body: object) -> Rule:
    """A rule from its JSON form; raises RuleError naming each bad field."""
    if not isinstance(body, dict):
        raise RuleError([FieldError(None, "body", "must be a JSON object")])
    errors: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        errors.append(FieldError(None, field, message))

    kind: RuleKind = "missing" if "absent_for" in body else "threshold"
    allowed = MISSING_FIELDS if kind == "missing" else THRESHOLD_FIELDS
    for key in body:
        if key not in allowed:
            bad(str(key)[:100], f"unknown field for a {kind} rule; known: "
                                f"{', '.join(sorted(allowed))}")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_RULE_NAME \
            or not name.isprintable():
        bad("name", f"must be a printable string of 1 to {MAX_RULE_NAME} characters")
    metric = body.get("metric")
    if not isinstance(metric, str) or len(metric) > MAX_NAME_LENGTH \
            or _GLOB.fullmatch(metric) is None:
        bad("metric", "must be a metric name or a glob (A-Z a-z 0-9 _ - and '*' in "
                      f"'.'-separated segments, at most {MAX_NAME_LENGTH} characters)")
    notify = _targets(body.get("notify"), bad)
    rule = Rule(name if isinstance(name, str) else "", metric if isinstance(metric, str)
                else "", kind, notify)
    if kind == "missing":
        rule = replace(rule, absent_for=_duration(body, "absent_for", None, 1, MAX_ABSENT_FOR,
                                                  bad))
    else:
        aggregation = body.get("aggregation", "sum")
        if aggregation not in AGGREGATIONS:
            bad("aggregation", f"must be one of {', '.join(AGGREGATIONS)}")
            aggregation = "sum"
        op = body.get("op")
        if op not in OPS:
            bad("op", f"must be one of {', '.join(OPS)}")
            op = ">"
        threshold = body.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not math.isfinite(threshold) or abs(threshold) > 1e300:
            bad("threshold", "must be a finite number")
            threshold = 0.0
        rule = replace(
            rule, aggregation=cast(Aggregation, aggregation), op=cast(Op, op),
            threshold=float(threshold),
            window=_duration(body, "window", None, 1, MAX_WINDOW, bad),
            for_=_duration(body, "for", "0s", 0, MAX_FOR, bad),
        )
    if errors:
        raise RuleError(errors)
    return rule


def _duration(body: Mapping[str, object], field: str, default: str | None, low: int,
              high: int, bad: Callable[[str, str], None]) -> int:
    value = body.get(field, default)
    if value is None:
        bad(field, "is required (a duration such as 30s, 5m, 1h)")
        return low
    if isinstance(value, bool) or not isinstance(value, str | int):
        bad(field, "must be a duration such as 30s, 5m, 1h")
        return low
    try:
        if isinstance(value, int):
            seconds = value
        elif re.fullmatch(r"0[smhdw]?", value.strip(), re.ASCII):
            seconds = 0  # parse_duration takes no zero; "for": "0s" is the default
        else:
            seconds = parse_duration(value)
    except ValueError as exc:
        bad(field, str(exc))
        return low
    if not low <= seconds <= high:
        bad(field, f"must be from {low} s to {high} s")
        return low
    return seconds


def _targets(value: object, bad: Callable[[str, str], None]) -> tuple[Target, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TARGETS:
        bad("notify", f"must be a list of 1 to {MAX_TARGETS} targets")
        return ()
    targets = []
    for n, item in enumerate(value):
        field = f"notify[{n}]"
        if not isinstance(item, dict):
            bad(field, 'must be {"webhook": url, "secret": str} or {"email": address}')
            continue
        if set(item) == {"email"}:
            email = item["email"]
            if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH \
                    or _EMAIL.fullmatch(email) is None:
                bad(field + ".email", "must be an email address")
                continue
            targets.append(Target(email=email))
        elif set(item) == {"webhook", "secret"}:
            url, secret = item["webhook"], item["secret"]
            problem = webhook_url_error(url)
            if problem is not None:
                bad(field + ".webhook", problem)
                continue
            if not isinstance(secret, str) or not 1 <= len(secret) <= MAX_SECRET_LENGTH \
                    or not secret.isprintable():
                bad(field + ".secret", f"must be a string of 1 to {MAX_SECRET_LENGTH} "
                                       "printable characters")
                continue
            targets.append(Target(webhook=cast(str, url), secret=secret))
        else:
            bad(field, 'must be {"webhook": url, "secret": str} or {"email": address}')
    return tuple(targets)


def webhook_url_error(url: object) -> str | None:
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or not url.isascii() \
            or not url.isprintable():
        return f"must be an http(s) URL of at most {MAX_URL_LENGTH} ASCII characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "must be an http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (sign with the secret instead)"
    return None


def rule_json(rule: Rule, *, redact: bool = True) -> dict[str, object]:
    """The JSON form of a rule (``parse_rule``'s inverse); secrets as REDACTED."""
    out: dict[str, object] = {"name": rule.name, "metric": rule.metric}
    if rule.kind == "missing":
        out["absent_for"] = format_duration(rule.absent_for)
    else:
        out.update(aggregation=rule.aggregation, window=format_duration(rule.window),
                   op=rule.op, threshold=rule.threshold)
        out["for"] = format_duration(rule.for_)
    out["notify"] = [target_json(t, redact=redact) for t in rule.notify]
    return out


def target_json(target: Target, *, redact: bool = True) -> dict[str, str]:
    if target.email is not None:
        return {"email": target.email}
    return {"webhook": target.webhook or "",
            "secret": REDACTED if redact else target.secret or ""}


def keep_secrets(new: Rule, old: Rule) -> Rule:
    """``new`` with each REDACTED secret replaced by the stored secret of the same webhook
    URL in ``old``: a rule read from the API can be written back unchanged. Raises
    RuleError for a REDACTED secret with no stored one to keep."""
    stored = {t.webhook: t.secret for t in old.notify if t.webhook is not None}
    targets = []
    for n, target in enumerate(new.notify):
        if target.secret == REDACTED:
            secret = stored.get(target.webhook or "")
            if secret is None:
                raise RuleError([FieldError(None, f"notify[{n}].secret",
                                            "no stored secret for this webhook to keep")])
            target = replace(target, secret=secret)
        targets.append(target)
    return replace(new, notify=tuple(targets))


# -- globs -------------------------------------------------------------------------


def is_glob(metric: str) -> bool:
    return "*" in metric


def glob_prefix(metric: str) -> str:
    """The literal head of a glob: the store lists names from it."""
    return metric.split("*", 1)[0]


def glob_regex(metric: str) -> re.Pattern[str]:
    """``app.*.errors`` -> a pattern where ``*`` is any run of name characters within a
    segment (never a ``.``), as Graphite's globs."""
    return re.compile(
        "".join("[A-Za-z0-9_-]*" if part == "*" else re.escape(part)
                for part in re.split(r"(\*)", metric)), re.ASCII)


# -- the state machine -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one (rule, metric) stands."""

    state: State = OK
    since: float = 0.0  # when it entered ``state``
    value: float | None = None  # the value of the last evaluation
    last_notified: float | None = None  # when a firing was last notified
    notified: bool = False  # the current firing has been notified (so its resolve is)


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: State
    to_state: State
    at: float
    value: float | None


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to send: ``state`` is firing or ok (a resolve)."""

    state: State
    at: float
    value: float | None


def observe(rule: Rule, value: float | None) -> float | None:
    """A threshold rule's aggregate over its window; ``value`` None (no data) is 0 for
    the additive aggregations and stays None (no verdict) for avg, min and max."""
    if value is None and rule.aggregation in _ZERO_WHEN_EMPTY:
        return 0.0
    return value


def condition(rule: Rule, value: float | None) -> bool | None:
    """Whether the rule's condition holds for ``value`` (threshold rules: the aggregate;
    missing-data rules: seconds since the last point). None: no verdict."""
    if value is None or not math.isfinite(value):
        return None
    if rule.kind == "missing":
        return value >= rule.absent_for
    return OPS[rule.op](value, rule.threshold)


def step(
    rule: Rule, current: AlertState, value: float | None, now: float, *, min_gap: float
) -> tuple[AlertState, list[Transition], Notice | None]:
    """One evaluation of one (rule, metric): its new state, the transitions to store
    and the notification to send, if any.

    The flapping guard: a firing is notified at most once per ``min_gap`` seconds; one
    that comes sooner is stored but notified only once the gap has passed (if it is
    still firing then). A resolve is always notified, when its firing was.
    """
    holds = condition(rule, value)
    state = current.state
    if holds is None:  # no verdict: nothing moves (the value is not even stored)
        return current, [], None
    seen = replace(current, value=value)
    if state == OK:
        if not holds:
            return seen, [], None
        if rule.for_ > 0:
            return (replace(seen, state=PENDING, since=now),
                    [Transition(OK, PENDING, now, value)], None)
        return _fire(seen, OK, value, now, min_gap)
    if state == PENDING:
        if not holds:
            return (replace(seen, state=OK, since=now), [Transition(PENDING, OK, now, value)],
                    None)
        if now - current.since >= rule.for_:
            return _fire(seen, PENDING, value, now, min_gap)
        return seen, [], None
    # firing
    if not holds:
        resolved = replace(seen, state=OK, since=now, notified=False)
        notice = Notice(OK, now, value) if current.notified else None
        return resolved, [Transition(FIRING, OK, now, value)], notice
    if not current.notified and _gap_passed(current, now, min_gap):
        return (replace(seen, notified=True, last_notified=now), [],
                Notice(FIRING, now, value))
    return seen, [], None


def _fire(
    seen: AlertState, from_state: State, value: float | None, now: float, min_gap: float
) -> tuple[AlertState, list[Transition], Notice | None]:
    transition = [Transition(from_state, FIRING, now, value)]
    firing = replace(seen, state=FIRING, since=now)
    if _gap_passed(seen, now, min_gap):
        return (replace(firing, notified=True, last_notified=now), transition,
                Notice(FIRING, now, value))
    return replace(firing, notified=False), transition, None


def _gap_passed(state: AlertState, now: float, min_gap: float) -> bool:
    return state.last_notified is None or now - state.last_notified >= min_gap


def missing_value(last_seen: float | None, watched_since: float, now: float) -> float:
    """Seconds a metric has been absent, as a missing-data rule sees it: counted from its
    newest point, but never from before ``watched_since`` (when the rule was created, or
    when the store last came back after an outage: data held back by an outage is not
    "missing", so no alert storm follows one)."""
    return now - max(last_seen if last_seen is not None else watched_since, watched_since)


# -- notifications -----------------------------------------------------------------

SIGNATURE_HEADER: Final = "X-GF-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
RETRY_FOR: Final = 24 * 3600  # seconds a notification is retried before it is given up
FIRST_RETRY: Final = 5.0  # seconds
MAX_RETRY_DELAY: Final = 3600.0


def idempotency_key(rule_id: int, metric: str, state: str, at: float, target: int) -> str:
    """The same for every delivery attempt of one notification to one target, and
    different for any other: receivers de-duplicate on it."""
    text = f"{rule_id}\0{metric}\0{state}\0{round(at * 1000)}\0{target}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def dashboard_link(base_url: str, metric: str) -> str:
    """The dashboard's graph of ``metric`` over the last hour."""
    return f"{base_url.rstrip('/')}/#m={quote(metric, safe='._-')}&r=1h"


def webhook_payload(
    rule_id: int, rule: Rule, metric: str, notice: Notice, base_url: str, key: str
) -> dict[str, object]:
    payload: dict[str, object] = {
        "rule": {"id": rule_id, "name": rule.name, "kind": rule.kind},
        "metric": metric,
        "state": notice.state,
        "value": notice.value,
        "time": format_timestamp(int(notice.at)),
        "link": dashboard_link(base_url, metric),
        "idempotency_key": key,
    }
    if rule.kind == "threshold":
        payload["condition"] = {"aggregation": rule.aggregation, "window": rule.window,
                                "op": rule.op, "threshold": rule.threshold}
    else:
        payload["condition"] = {"absent_for": rule.absent_for}
    return payload


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` + hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header)


def email_message(payload: Mapping[str, object]) -> tuple[str, str]:
    """(subject, text body) of a notification by email."""
    rule = cast(Mapping[str, object], payload["rule"])
    word = "FIRING" if payload["state"] == FIRING else "resolved"
    subject = f"[{word}] {rule['name']}: {payload['metric']}"
    body = (f"Alert {rule['name']!s} is {payload['state']} for {payload['metric']}.\n"
            f"Value: {payload['value']}\nTime: {payload['time']}\n"
            f"Condition: {payload['condition']}\nGraph: {payload['link']}\n")
    return subject.replace("\r", " ").replace("\n", " ")[:250], body


def retry_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: 5 s doubling, at most an hour."""
    return min(FIRST_RETRY * 2.0 ** min(attempts - 1, 20), MAX_RETRY_DELAY)
