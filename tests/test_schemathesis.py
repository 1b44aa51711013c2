"""schemathesis against the live app: property-based requests generated from the served
OpenAPI document, with a valid key. No answer may be a server error, and every answer
must conform to the document (status, content type, headers, body schema).

The app runs with a real SQLite store in a background thread with its own event loop,
on 127.0.0.1 port 0; schemathesis drives it over real HTTP from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from query.app import make_app
from query.config import HttpConfig
from query.openapi import openapi_document
from store import open_store
from tests.http_support import auth, config, new_key

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


@dataclass
class LiveApp:
    url: str
    token: str


def run_app(database: Path, scopes: tuple[str, ...], ready: threading.Event,
            out: dict[str, Any]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{database}")
        runner: web.AppRunner | None = None
        try:
            await store.migrate()
            out["token"] = await new_key(store, scopes=scopes)
            runner = web.AppRunner(make_app(config(), store), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            out["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
            out["loop"] = asyncio.get_running_loop()
            out["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            await store.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # surfaced by the fixture
        out["error"] = exc
    finally:
        ready.set()


@contextlib.contextmanager
def live(tmp_path_factory: pytest.TempPathFactory, name: str,
         scopes: tuple[str, ...]) -> Iterator[LiveApp]:
    """The app in its thread, with a key of ``scopes``, for the length of the block."""
    ready = threading.Event()
    out: dict[str, Any] = {}
    database = tmp_path_factory.mktemp(name) / "metrics.db"
    thread = threading.Thread(target=run_app, args=(database, scopes, ready, out),
                              daemon=True)
    thread.start()
    assert ready.wait(60), "the app did not start"
    if "error" in out:
        raise out["error"]
    try:
        yield LiveApp(out["url"], out["token"])
    finally:
        out["loop"].call_soon_threadsafe(out["stop"].set)
        thread.join(60)
        assert not thread.is_alive()
        if "error" in out:
            raise out["error"]


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live(tmp_path_factory, "schemathesis", ("read", "write")) as app:
        yield app


@pytest.fixture(scope="module")
def admin_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """A key with every scope: the generated alert rules are created, read, replaced and
    deleted for real, so their success answers are checked against the document too
    (with the read/write key of ``live_app`` the admin routes answer 403)."""
    with live(tmp_path_factory, "schemathesis_alerts", ("admin", "read", "write")) as app:
        yield app


@pytest.fixture(scope="module")
def live_schema(live_app: LiveApp) -> Any:
    return schemathesis.openapi.from_url(f"{live_app.url}/api/openapi.json")


# Parametrized from the document the app builds (the test of the served copy is in
# test_http_openapi). Not schemathesis.pytest.from_fixture: with pytest 9 its lazy
# loader fails ("'Function' object has no attribute '_nodeid'"), so each test draws
# its cases from the operation's own Hypothesis strategy.
# Negative cases (data that violates the document) only where there is input to break.
CASES = [
    (method.upper(), path, mode)
    for path, item in openapi_document(HttpConfig())["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_live_app_conforms_to_its_document(
    live_schema: Any, live_app: LiveApp, method: str, path: str, mode: GenerationMode
) -> None:
    operation = live_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=live_app.url, headers=auth(live_app.token),
                               checks=CHECKS)

    conforms()


# -- the alert routes, with an admin key ------------------------------------------

ALERT_CASES = [
    (method.upper(), path, mode)
    for path, item in openapi_document(HttpConfig())["paths"].items() if "/api/alerts" in path
    for method in item
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), ALERT_CASES)
def test_alert_routes_conform_with_an_admin_key(
    admin_app: LiveApp, method: str, path: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{admin_app.url}/api/openapi.json")
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=admin_app.url, headers=auth(admin_app.token),
                               checks=CHECKS)

    conforms()


@pytest.mark.slow
def test_the_generated_rules_were_stored(admin_app: LiveApp) -> None:
    """After the cases above: some generated rules were valid, so the success answers
    were checked, not only the 422s."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{admin_app.url}/api/alerts?limit=1000",
                                     headers=auth(admin_app.token))
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["alerts"]
