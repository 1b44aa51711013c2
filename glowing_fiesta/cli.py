"""The ``glowing-fiesta`` command. Every option has a GF_ environment variable."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from collector.admin import AdminConfig
from collector.config import CollectorConfig
from collector.retention import FLUSH_RECORD_SLACK, retention_levels, retention_pass
from glowing_fiesta import __version__
from glowing_fiesta.config import Config, ConfigError
from glowing_fiesta.logs import configure_logging
from glowing_fiesta.notify import Notifier
from glowing_fiesta.runner import run_async, run_services
from glowing_fiesta.workers import run_workers
from protocol.tokens import display_prefix, generate_token, hash_token, parse_scopes
from protocol.units import format_timestamp, parse_duration, parse_rate_limit
from query.config import HttpConfig
from store import Store, StoreError, open_store

F = TypeVar("F", bound=Callable[..., Any])


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


def option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option whose environment variable is GF_ + the option name."""
    envvar = "GF_" + name.lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def _stacked(f: F, decorators: list[Callable[[F], F]]) -> F:
    """Apply option decorators so that --help lists them in the order given."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def common_options(f: F) -> F:
    return _stacked(f, [
        option("--database-url", default="sqlite:///var/glowing-fiesta.db",
               help="sqlite:///relative/path, sqlite:////abs/path or mysql://user:pass@host:port/db"),
        option("--state-dir", type=click.Path(path_type=Path), default=Path("var"),
               help="Directory for local state (the spool)."),
        option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
               default="info", help="Least severe log level written to stderr."),
        option("--log-format", type=click.Choice(["text", "json"]), default="text",
               help="One line per event: plain text, or one JSON object per line."),
    ])


def collector_options(f: F) -> F:
    d = CollectorConfig()
    return _stacked(f, [
        option("--host", default=d.host, help="Address for the UDP/TCP listeners (and HTTP)."),
        option("--udp-port", type=click.IntRange(0, 65535), default=d.udp_port,
               help="UDP port for StatsD lines; 0 binds an ephemeral port."),
        option("--tcp-port", type=click.IntRange(0, 65535), default=d.tcp_port,
               help="TCP port for newline-delimited lines; 0 binds an ephemeral port."),
        option("--flush-interval", type=click.FloatRange(min=0.01), default=d.flush_interval,
               help="Seconds between flushes to the database."),
        option("--udp-rcvbuf", type=click.IntRange(min=4096), default=d.udp_rcvbuf,
               help="UDP receive buffer (SO_RCVBUF) to ask for, in bytes."),
        option("--max-line-length", type=click.IntRange(min=64), default=d.max_line_length,
               help="Longer lines are dropped (too_long)."),
        option("--max-tcp-connections", type=click.IntRange(min=1),
               default=d.max_tcp_connections,
               help="Open TCP connections; more are closed at once (counted)."),
        option("--tcp-idle-timeout", type=click.FloatRange(min=1), default=d.tcp_idle_timeout,
               help="Seconds before an idle TCP connection is closed."),
        option("--max-metrics", type=click.IntRange(min=1), default=d.max_metrics,
               help="Distinct metric names per collector; new names past it are dropped."),
        option("--max-pending-buckets", type=click.IntRange(min=1000),
               default=d.max_pending_buckets,
               help="Unflushed metric-seconds held in memory; past it samples are dropped."),
        option("--retention-raw", type=DURATION, default="7d",
               help="How long per-second points are kept; also the oldest |T accepted."),
        option("--retention-1m", type=DURATION, default="90d",
               help="How long per-minute rollups (points_1m) are kept."),
        option("--retention-1h", type=DURATION, default="730d",
               help="How long per-hour rollups (points_1h) are kept."),
        option("--require-key/--no-require-key", default=d.require_key,
               help="Drop UDP/TCP lines without a valid key prefix."),
        option("--key-cache-ttl", type=click.FloatRange(min=0), default=d.key_cache_ttl,
               help="Seconds an API-key lookup is cached (revocation delay)."),
        option("--flush-timeout", type=click.FloatRange(min=0.1), default=d.flush_timeout,
               help="Seconds one database write may take; then it is abandoned and retried."),
        option("--spool-after", type=click.FloatRange(min=0), default=d.spool_after,
               help="Seconds of failing flushes before pending batches go to the spool "
               "in --state-dir."),
        option("--max-pending-rows", type=click.IntRange(min=1000), default=d.max_pending_rows,
               help="Unwritten rows held in memory; past it they go to the spool at once."),
        option("--spool-max-bytes", type=click.IntRange(min=0), default=d.spool_max_bytes,
               help="Spool size budget in bytes (compressed); 0: only the disk limits it."),
        option("--retention-interval", type=DURATION, default="5m",
               help="Time between the collector's retention passes; 0: none."),
        option("--retention-chunk", type=click.IntRange(min=1), default=d.retention_chunk,
               help="Rows a retention statement deletes per metric."),
    ])


def admin_options(f: F) -> F:
    d = AdminConfig()
    return _stacked(f, [
        option("--admin-host", default=d.host,
               help="Address for the collector's /metrics and /healthz (no authentication)."),
        option("--admin-port", type=click.IntRange(0, 65535), default=None,
               help="Port for the collector's /metrics and /healthz; 0 binds an ephemeral "
               "port [default: no admin listener]."),
        option("--self-metrics/--no-self-metrics", default=False,
               help="Also record the collector's own figures as glowing_fiesta.collector.* "
               "metrics, every flush interval."),
    ])


def http_options(f: F) -> F:
    d = HttpConfig()
    return _stacked(f, [
        option("--http-host", default=None,
               help="Address for the HTTP service [default: --host]."),
        option("--http-port", type=click.IntRange(0, 65535), default=d.port,
               help="HTTP port; 0 binds an ephemeral port."),
        option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
               default=None, help="PEM certificate chain: serve HTTPS."),
        option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
               default=None, help="PEM private key for --tls-cert."),
        option("--allow-plain-http", is_flag=True, default=False,
               help="Serve plain HTTP on a non-loopback address (behind a TLS proxy)."),
        option("--redis-url", default=None,
               help="Share rate limits across processes through Redis."),
        option("--commit-window", type=click.FloatRange(min=0), default=d.commit_window,
               help="Seconds an HTTP ingest waits to share a commit with others."),
        option("--max-body-size", type=click.IntRange(min=1024), default=d.max_body_size,
               help="Largest accepted request body, in bytes."),
        option("--default-rate-limit", default=d.default_rate_limit,
               help="Rate limit of keys created without one, e.g. 100/s."),
        option("--graphite-max-series", type=click.IntRange(min=1),
               default=d.graphite_max_series,
               help="Series one Graphite path expression may match in /render."),
    ])


def build_config(params: dict[str, Any]) -> Config:
    """The one Config, from the options a command was given (missing ones: defaults)."""
    c, h = CollectorConfig(), HttpConfig()
    get = params.get
    host = get("host", c.host)
    state_dir = get("state_dir") or Path("var")
    retention_raw = get("retention_raw", c.retention_raw)
    key_ttl = get("key_cache_ttl", c.key_cache_ttl)
    collector = CollectorConfig(
        host=host,
        udp_port=get("udp_port", c.udp_port),
        tcp_port=get("tcp_port", c.tcp_port),
        flush_interval=get("flush_interval", c.flush_interval),
        udp_rcvbuf=get("udp_rcvbuf", c.udp_rcvbuf),
        max_line_length=get("max_line_length", c.max_line_length),
        max_tcp_connections=get("max_tcp_connections", c.max_tcp_connections),
        tcp_idle_timeout=get("tcp_idle_timeout", c.tcp_idle_timeout),
        max_metrics=get("max_metrics", c.max_metrics),
        max_pending_buckets=get("max_pending_buckets", c.max_pending_buckets),
        retention_raw=retention_raw,
        require_key=get("require_key", c.require_key),
        key_cache_ttl=key_ttl,
        state_dir=state_dir,
        flush_timeout=get("flush_timeout", c.flush_timeout),
        spool_after=get("spool_after", c.spool_after),
        max_pending_rows=get("max_pending_rows", c.max_pending_rows),
        spool_max_bytes=get("spool_max_bytes", c.spool_max_bytes),
        retention_interval=float(get("retention_interval", c.retention_interval)),
        retention_chunk=get("retention_chunk", c.retention_chunk),
        retention_1m=get("retention_1m", c.retention_1m),
        retention_1h=get("retention_1h", c.retention_1h),
    )
    http = HttpConfig(
        host=get("http_host") or host,
        port=get("http_port", h.port),
        tls_cert=get("tls_cert"),
        tls_key=get("tls_key"),
        allow_plain_http=get("allow_plain_http", False),
        redis_url=get("redis_url"),
        key_cache_ttl=key_ttl,
        commit_window=get("commit_window", h.commit_window),
        max_body_size=get("max_body_size", h.max_body_size),
        default_rate_limit=get("default_rate_limit", h.default_rate_limit),
        graphite_max_series=get("graphite_max_series", h.graphite_max_series),
        retention_raw=retention_raw,
        state_dir=state_dir,
    )
    config = Config(
        database_url=get("database_url", "sqlite:///var/glowing-fiesta.db"),
        log_level=get("log_level", "info"),
        log_format=get("log_format", "text"),
        state_dir=state_dir,
        collector=collector,
        http=http,
    )
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
    admin = AdminConfig(
        host=params.get("admin_host") or AdminConfig().host,
        port=params.get("admin_port"),
        self_metrics=bool(params.get("self_metrics")),
    )
    configure_logging(config.log_level, config.log_format)
    # systemd's NOTIFY_SOCKET and WATCHDOG_USEC: read here, the one place that reads
    # the environment.
    notifier = Notifier.from_environ(os.environ)
    workers = int(params.get("workers") or 1)
    if workers > 1:
        if admin.port is not None:
            raise click.UsageError("--admin-port cannot be used with --workers")
        raise SystemExit(run_workers(config, workers, collector=collector, http=http,
                                     notifier=notifier))
    raise SystemExit(run_async(run_services(
        config, collector=collector, http=http, notifier=notifier, admin=admin)))


@main.command()
@common_options
@collector_options
@admin_options
@http_options
def run(**params: Any) -> None:
    """Collector and HTTP service in one process (the embedded default)."""
    _serve(params, collector=True, http=True)


WORKERS = option(
    "--workers", type=click.IntRange(1, 256), default=1,
    help="Processes sharing the ports (SO_REUSEPORT), one event loop each.",
)


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
@option("--host", default="127.0.0.1", help="Address for the HTTP service.")
@option("--retention-raw", type=DURATION, default="7d",
        help="Oldest timestamp accepted by HTTP ingest.")
@option("--key-cache-ttl", type=click.FloatRange(min=0), default=10.0,
        help="Seconds an API-key lookup is cached (revocation delay).")
@option("--spool-max-bytes", type=click.IntRange(min=0),
        default=CollectorConfig().spool_max_bytes,
        help="Spool size budget in bytes (compressed); 0: only the disk limits it.")
@WORKERS
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


@keys.command("create")
@common_options
@click.argument("name")
@click.option("--scopes", default="write,read", show_default=True,
              help="Comma-separated: write (ingest), read (queries).")
@click.option("--rate-limit", default=None,
              help="Requests per key, e.g. 100/s or 6000/m [default: --default-rate-limit].")
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
def retention() -> None:
    """Expire old data."""


@retention.command("run")
@common_options
@option("--retention-raw", type=DURATION, default="7d", help="Keep per-second points this long.")
@option("--retention-1m", type=DURATION, default="90d",
        help="How long per-minute rollups (points_1m) are kept.")
@option("--retention-1h", type=DURATION, default="730d",
        help="How long per-hour rollups (points_1h) are kept.")
@click.option("--chunk", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows deleted per metric per statement.")
def retention_run(chunk: int, **params: Any) -> None:
    """One retention pass over every level: expired rows deleted in small chunks."""
    config = build_config(params)

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
