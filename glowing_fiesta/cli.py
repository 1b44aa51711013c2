"""The ``glowing-fiesta`` command. Every option has a GF_ environment variable.

Options come from the config dataclasses: a field declares its option where it is
declared (protocol.options), and this module turns it into a click option and back:

    max_foo: int = field(default=10, metadata=cli("--max-foo", "What it bounds.", min=1))

in CollectorConfig (collector/config.py) is all it takes for ``collector`` and ``run`` to
offer ``--max-foo`` with GF_MAX_FOO, default 10 and its range, and for build_config to
fill ``config.collector.max_foo``: each section's options are the fields of its
dataclass that have ``cli(...)`` (``section_options``). To convert an option written the
old way (an ``option("--max-foo", ...)`` here plus a line in build_config), move its
help and range into the field's ``cli(...)`` and delete both. A command's own argument
that is not configuration (``keys create --scopes``) is a field of a small dataclass
here, declared the same way (NewKey).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import orjson

from alerts.config import AlertConfig
from alerts.notifier import DeliveryError
from alerts.notifier import Notifier as AlertNotifier
from collector.config import AdminConfig, CollectorConfig
from collector.retention import FLUSH_RECORD_SLACK, retention_levels, retention_pass
from glowing_fiesta import __version__
from glowing_fiesta.config import Config, ConfigError
from glowing_fiesta.logs import configure_logging
from glowing_fiesta.notify import Notifier
from glowing_fiesta.runner import run_async, run_services
from glowing_fiesta.workers import run_workers
from protocol.alerts import (
    MAX_RULES,
    Notice,
    RuleError,
    idempotency_key,
    parse_rule,
    rule_json,
    target_json,
    webhook_payload,
)
from protocol.options import KEY, CliOption, cli
from protocol.tokens import display_prefix, generate_token, hash_token, parse_scopes
from protocol.units import format_duration, format_timestamp, parse_duration, parse_rate_limit
from query.config import HttpConfig
from store import Store, StoreError, open_store
from store.spool import Quarantine

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def option(name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option whose environment variable is GF_ + the option name."""
    envvar = "GF_" + name.lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(name, *decls, envvar=envvar, show_envvar=True, show_default=True,
                        **kwargs)


def cli_spec(f: dataclasses.Field[Any]) -> CliOption | None:
    spec = f.metadata.get(KEY)
    return spec if isinstance(spec, CliOption) else None


def field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int."""
    if isinstance(hint, UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not NoneType)
    return hint


def click_default(f: dataclasses.Field[Any], spec: CliOption) -> Any:
    """The field's default as the option shows it: durations as written (``7d``)."""
    if spec.default_from is not None:
        return None
    default = field_default(f)
    return format_duration(default) if spec.duration and default is not None else default


def field_option(
    cls: type, name: str, *, flag: str | None = None, help: str | None = None
) -> Callable[[F], F]:
    """The click option of field ``name`` of the config dataclass ``cls``: flag, help,
    type, range, default and GF_ variable from the field (``flag``, ``help``: as one
    command words it). Its click parameter name is always the field's own option name,
    so build_config finds it."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    spec = cli_spec(f)
    if spec is None:
        raise TypeError(f"{cls.__name__}.{name} has no cli(...) in its metadata")
    base = _base_type(typing.get_type_hints(cls)[name])
    kwargs: dict[str, Any] = {}
    if spec.duration:
        kwargs["type"] = DURATION
    elif spec.choices:
        kwargs["type"] = click.Choice(list(spec.choices))
    elif base is bool:
        kwargs["is_flag"] = True
    elif base is int:
        lo, hi = (None if b is None else int(b) for b in (spec.min, spec.max))
        kwargs["type"] = click.IntRange(lo, hi) if (lo, hi) != (None, None) else int
    elif base is float:
        kwargs["type"] = (click.FloatRange(spec.min, spec.max)
                          if (spec.min, spec.max) != (None, None) else float)
    elif base is Path:
        kwargs["type"] = click.Path(path_type=Path, exists=spec.existing_file,
                                    dir_okay=not spec.existing_file)
    flag = flag or spec.flag
    return option(flag, spec.name, default=click_default(f, spec), help=help or spec.help,
                  **kwargs)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def section_options(cls: type) -> list[Decorator]:
    """Every command-line option of a config dataclass, in field order."""
    return [field_option(cls, f.name) for f in dataclasses.fields(cls) if cli_spec(f)]


def from_params(cls: type[T], params: dict[str, Any], **shared: Any) -> T:
    """``cls`` from the options a command was given: each field with an option takes
    its value when the command has it (else its default, or ``shared``: the value the
    field takes from another option)."""
    values = dict(shared)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = cli_spec(f)
        if spec is None or spec.name not in params:
            continue
        value = params[spec.name]
        if value is None and spec.default_from is not None:
            continue
        if value is not None and hints[f.name] is float:
            value = float(value)  # a duration is whole seconds
        values[f.name] = value
    return cls(**values)


def _stacked(f: F, decorators: list[Decorator]) -> F:
    """Apply option decorators so that --help lists them in the order given."""
    out: Callable[..., Any] = f
    for decorator in reversed(decorators):
        out = decorator(out)
    return typing.cast(F, out)


def common_options(f: F) -> F:
    return _stacked(f, [field_option(Config, name) for name in
                        ("database_url", "state_dir", "log_level", "log_format")])


def collector_options(f: F) -> F:
    return _stacked(f, section_options(CollectorConfig))


def admin_options(f: F) -> F:
    return _stacked(f, section_options(AdminConfig))


def http_options(f: F) -> F:
    return _stacked(f, section_options(HttpConfig))


def alert_options(f: F) -> F:
    return _stacked(f, section_options(AlertConfig))


def build_config(params: dict[str, Any]) -> Config:
    """The one Config, from the options a command was given (missing ones: defaults)."""
    top = from_params(Config, params)
    collector = from_params(CollectorConfig, params, state_dir=top.state_dir)
    # The HTTP service shares these with the collector: one option each.
    http = from_params(HttpConfig, params, host=collector.host,
                       key_cache_ttl=collector.key_cache_ttl,
                       retention_raw=collector.retention_raw, state_dir=top.state_dir,
                       sketches=collector.sketches, sketch_alpha=collector.sketch_alpha)
    config = dataclasses.replace(top, collector=collector, http=http,
                                 admin=from_params(AdminConfig, params),
                                 alerts=from_params(AlertConfig, params))
    try:
        return config.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glowing-fiesta")
def main() -> None:
    """Glowing Fiesta: a StatsD-compatible metrics daemon and query service."""


def _serve(params: dict[str, Any], *, collector: bool, http: bool) -> None:
    config = build_config(params)
    configure_logging(config.log_level, config.log_format)
    # systemd's NOTIFY_SOCKET and WATCHDOG_USEC: read here, the one place that reads
    # the environment.
    notifier = Notifier.from_environ(os.environ)
    if config.workers > 1:  # validate() refused --admin-port with it
        raise SystemExit(run_workers(config, config.workers, collector=collector, http=http,
                                     notifier=notifier))
    raise SystemExit(run_async(run_services(
        config, collector=collector, http=http, notifier=notifier)))


@main.command()
@common_options
@collector_options
@admin_options
@http_options
@alert_options
def run(**params: Any) -> None:
    """Collector and HTTP service in one process (the embedded default)."""
    _serve(params, collector=True, http=True)


WORKERS = field_option(Config, "workers")


@main.command()
@common_options
@collector_options
@admin_options
@WORKERS
def collector(**params: Any) -> None:
    """The UDP/TCP collector only."""
    _serve(params, collector=True, http=False)


@main.command()
@common_options
@http_options
@field_option(CollectorConfig, "host", help="Address for the HTTP service.")
@field_option(CollectorConfig, "retention_raw", help="Oldest timestamp accepted by HTTP ingest.")
@field_option(CollectorConfig, "key_cache_ttl")
@field_option(CollectorConfig, "spool_max_bytes")
@field_option(CollectorConfig, "sketches")
@field_option(CollectorConfig, "sketch_alpha")
@WORKERS
@alert_options
def serve(**params: Any) -> None:
    """The HTTP query and ingest service only."""
    _serve(params, collector=False, http=True)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
@common_options
def migrate(**params: Any) -> None:
    """Apply pending migrations."""

    async def go(store: Store) -> int:
        applied = await store.migrate()
        version = await store.schema_version()
        click.echo(f"applied {applied or 'nothing'}; schema version {version}")
        return 0

    _with_store(build_config(params), go, migrate=False)


@main.group()
def keys() -> None:
    """API keys: create, list, revoke."""


@dataclasses.dataclass(frozen=True, slots=True)
class NewKey:
    """The options of ``keys create`` (its own, not configuration)."""

    scopes: str = dataclasses.field(default="write,read", metadata=cli(
        "--scopes",
        "Comma-separated: write (ingest), read (queries), admin (alert rules)."))
    rate_limit: str | None = dataclasses.field(default=None, metadata=cli(
        "--rate-limit",
        "Requests per key, e.g. 100/s or 6000/m [default: --default-rate-limit]."))


def new_key_options(f: F) -> F:
    return _stacked(f, section_options(NewKey))


@keys.command("create")
@common_options
@click.argument("name")
@new_key_options
def keys_create(name: str, scopes: str, rate_limit: str | None, **params: Any) -> None:
    """Create a key and print its token (shown once: only its SHA-256 is stored)."""
    config = build_config(params)
    try:
        scope_list = parse_scopes(scopes)
        if rate_limit is not None:
            parse_rate_limit(rate_limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    token = generate_token()

    async def go(store: Store) -> int:
        await store.create_key(name, hash_token(token), display_prefix(token), scope_list,
                               rate_limit, int(time.time()))
        click.echo(token)
        click.echo(f"created key {name!r} (scopes {','.join(scope_list)}); "
                   "the token is shown only once", err=True)
        return 0

    _with_store(config, go)


@keys.command("list")
@common_options
def keys_list(**params: Any) -> None:
    """List keys (never their tokens)."""

    async def go(store: Store) -> int:
        click.echo(f"{'NAME':<24} {'PREFIX':<10} {'SCOPES':<12} {'RATE':<10} "
                   f"{'CREATED':<21} REVOKED")
        for key in await store.list_keys():
            click.echo(
                f"{key.name:<24} {key.display_prefix:<10} {','.join(key.scopes):<12} "
                f"{key.rate_limit or 'default':<10} {format_timestamp(key.created_at):<21} "
                f"{format_timestamp(key.revoked_at) if key.revoked_at else '-'}"
            )
        return 0

    _with_store(build_config(params), go)


@keys.command("revoke")
@common_options
@click.argument("name_or_prefix")
def keys_revoke(name_or_prefix: str, **params: Any) -> None:
    """Revoke keys by name or display prefix (takes effect within --key-cache-ttl)."""

    async def go(store: Store) -> int:
        count = await store.revoke_key(name_or_prefix, int(time.time()))
        if not count:
            click.echo(f"no active key named or prefixed {name_or_prefix!r}", err=True)
            return 1
        click.echo(f"revoked {count} key(s)")
        return 0

    _with_store(build_config(params), go)


@main.group()
def alerts() -> None:
    """Alert rules: add, list, rm, test (the HTTP service evaluates them)."""


def _rule_text(source: str) -> str:
    """A rule's JSON: given inline, as ``@path``, or ``-`` for standard input."""
    if source == "-":
        return sys.stdin.read(1_000_000)
    if source.startswith("@"):
        try:
            return Path(source[1:]).read_text()[:1_000_000]
        except OSError as exc:
            raise click.BadParameter(str(exc)) from None
    return source


def _rule_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2**62):
        raise click.BadParameter(f"a rule id is a positive integer, not {text!r}")
    return int(text)


@alerts.command("add")
@common_options
@click.argument("rule")
def alerts_add(rule: str, **params: Any) -> None:
    """Add a rule from its JSON (inline, @file or - for stdin); print its id."""
    try:
        parsed = parse_rule(orjson.loads(_rule_text(rule)))
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    except RuleError as exc:
        raise click.BadParameter(str(exc)) from None
    body = orjson.dumps(rule_json(parsed, redact=False)).decode()

    async def go(store: Store) -> int:
        rule_id = await store.create_rule(parsed.name, parsed.metric, body, int(time.time()),
                                          MAX_RULES)
        if rule_id is None:
            click.echo(f"the database holds {MAX_RULES} rules already", err=True)
            return 1
        click.echo(rule_id)
        return 0

    _with_store(build_config(params), go)


@alerts.command("list")
@common_options
def alerts_list(**params: Any) -> None:
    """List the rules with their states (never their secrets)."""

    async def go(store: Store) -> int:
        click.echo(f"{'ID':>6} {'STATE':<8} {'KIND':<9} {'METRIC':<32} NAME")
        after = 0
        while page := await store.list_rules(1000, after):
            states: dict[int, set[str]] = {}
            for state in await store.alert_states([r.id for r in page]):
                states.setdefault(state.rule_id, set()).add(state.state)
            for row in page:
                held = states.get(row.id, set())
                worst = next((s for s in ("firing", "pending") if s in held), "ok")
                kind = parse_rule(orjson.loads(row.body)).kind
                click.echo(f"{row.id:>6} {worst:<8} {kind:<9} {row.metric:<32} {row.name}")
            after = page[-1].id
        return 0

    _with_store(build_config(params), go)


@alerts.command("rm")
@common_options
@click.argument("rule_id")
def alerts_rm(rule_id: str, **params: Any) -> None:
    """Delete a rule (by its id) with its states and history."""
    number = _rule_id(rule_id)

    async def go(store: Store) -> int:
        if not await store.delete_rule(number):
            click.echo(f"no alert rule {number}", err=True)
            return 1
        click.echo(f"deleted rule {number}")
        return 0

    _with_store(build_config(params), go)


@alerts.command("test")
@common_options
@alert_options
@click.argument("rule_id")
def alerts_test(rule_id: str, **params: Any) -> None:
    """Send a test notification (marked "test": true) to each of a rule's targets now."""
    number = _rule_id(rule_id)
    config = build_config(params)

    async def go(store: Store) -> int:
        row = await store.get_rule(number)
        if row is None:
            click.echo(f"no alert rule {number}", err=True)
            return 1
        rule = parse_rule(orjson.loads(row.body))
        now = time.time()
        notifier = AlertNotifier(store, config.alerts)
        failed = 0
        try:
            for n, target in enumerate(rule.notify):
                key = idempotency_key(number, rule.metric, "test", now, n)
                payload = webhook_payload(number, rule, rule.metric, Notice("firing", now, None),
                                          config.alerts.base_url or "http://127.0.0.1:8000",
                                          key)
                payload["test"] = True
                where = target.email or urlsplit(target.webhook or "").hostname
                try:
                    await notifier.send(target_json(target, redact=False),
                                        orjson.dumps(payload), key)
                except DeliveryError as exc:
                    failed += 1
                    click.echo(f"target {n} ({where}): FAILED: {exc}", err=True)
                    continue
                click.echo(f"target {n} ({where}): sent")
        finally:
            await notifier.close()
        return 1 if failed else 0

    _with_store(config, go)


@main.group()
def retention() -> None:
    """Expire old data."""


@retention.command("run")
@common_options
@field_option(CollectorConfig, "retention_raw", help="Keep per-second points this long.")
@field_option(CollectorConfig, "retention_1m")
@field_option(CollectorConfig, "retention_1h")
@field_option(CollectorConfig, "retention_chunk", flag="--chunk",
              help="Rows deleted per metric per statement.")
def retention_run(**params: Any) -> None:
    """One retention pass over every level: expired rows deleted in small chunks."""
    config = build_config(params)
    chunk = config.collector.retention_chunk

    async def go(store: Store) -> int:
        now = int(time.time())
        for table, keep in retention_levels(config.collector):
            raw = table == "points_1s"
            deleted = await retention_pass(
                store, now - keep, chunk, table=table, pace=False,
                flush_records_before=now - keep - FLUSH_RECORD_SLACK if raw else None,
            )
            click.echo(f"{table}: deleted {deleted} rows older than "
                       f"{format_timestamp(now - keep)}")
        return 0

    _with_store(config, go)


@main.group()
def quarantine() -> None:
    """Batches the database refused for good: list, replay, discard."""


@dataclasses.dataclass(frozen=True, slots=True)
class QuarantinePick:
    """The options of ``quarantine replay`` and ``discard`` (their own, not configuration)."""

    all: bool = dataclasses.field(default=False, metadata=cli(
        "--all", "Every quarantined batch, instead of the IDs given."))


def quarantine_pick_options(f: F) -> F:
    return _stacked(f, section_options(QuarantinePick))


def _quarantine_ids(ids: tuple[str, ...], params: dict[str, Any]) -> tuple[set[int], bool]:
    """(the IDs named, --all), or a usage error unless exactly one of them is given."""
    every = bool(params.pop("all"))
    if bool(ids) == every:
        raise click.UsageError("name quarantined batch IDs (see quarantine list), or --all")
    try:
        return {int(i) for i in ids}, every
    except ValueError:
        raise click.UsageError(f"batch IDs are numbers: {' '.join(ids)}") from None


@quarantine.command("list")
@common_options
def quarantine_list(**params: Any) -> None:
    """List the quarantined batches (from --state-dir), with the error that set each aside."""
    config = build_config(params)

    async def go() -> int:
        held = Quarantine(config.state_dir)
        try:
            batches = await held.list()
        finally:
            await held.close()
        if not batches:
            click.echo(f"the quarantine in {config.state_dir} is empty", err=True)
            return 0
        click.echo(f"{'ID':>6} {'ROWS':>6} {'SET ASIDE':<21} {'BATCH':<40} ERROR")
        for b in batches:
            click.echo(f"{b.id:>6} {b.rows:>6} {format_timestamp(int(b.quarantined_at)):<21} "
                       f"{f'{b.writer_id}/{b.seq}':<40} {b.error}")
        return 0

    raise SystemExit(asyncio.run(go()))


@quarantine.command("replay")
@common_options
@click.argument("ids", nargs=-1)
@quarantine_pick_options
def quarantine_replay(ids: tuple[str, ...], **params: Any) -> None:
    """Write quarantined batches to the database again (after fixing the cause); those it
    takes leave the quarantine, the others stay with the new error. Exactly once: a
    batch keeps the (writer, seq) it was set aside with."""
    chosen_ids, every = _quarantine_ids(ids, params)
    config = build_config(params)

    async def go(store: Store) -> int:
        held = Quarantine(config.state_dir)
        failed = 0
        try:
            for b in await held.list():
                if not every and b.id not in chosen_ids:
                    continue
                batch = await held.get(b.id)
                if batch is None:
                    continue
                try:
                    result = await store.write_batch(batch)
                except StoreError as exc:
                    failed += 1
                    await held.note_error(b.id, str(exc))
                    click.echo(f"{b.id}: refused again: {exc}", err=True)
                    continue
                await held.remove(b.id)
                sketches = f", {result.sketches} sketch(es)" if result.sketches else ""
                click.echo(f"{b.id}: {result.rows} row(s){sketches} written" if result.applied
                           else f"{b.id}: applied before; removed")
        finally:
            await held.close()
        return 1 if failed else 0

    _with_store(config, go)


@quarantine.command("discard")
@common_options
@click.argument("ids", nargs=-1)
@quarantine_pick_options
def quarantine_discard(ids: tuple[str, ...], **params: Any) -> None:
    """Delete quarantined batches for good."""
    chosen_ids, every = _quarantine_ids(ids, params)
    config = build_config(params)

    async def go() -> int:
        held = Quarantine(config.state_dir)
        try:
            chosen = [b.id for b in await held.list() if every or b.id in chosen_ids]
            for quarantine_id in chosen:
                await held.remove(quarantine_id)
        finally:
            await held.close()
        click.echo(f"discarded {len(chosen)} batch(es)")
        return 0

    raise SystemExit(asyncio.run(go()))


def _with_store(
    config: Config, command: Callable[[Store], Awaitable[int]], *, migrate: bool = True
) -> None:
    """Run a one-shot command on the configured store (migrated first), then exit with
    its status; a database error becomes a one-line message and status 1."""

    async def go() -> int:
        store = open_store(config.database_url)
        try:
            if migrate:
                await store.migrate()
            return await command(store)
        finally:
            await store.close()

    try:
        status = asyncio.run(go())
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(status)
