"""schemathesis against the live app: property-based requests generated from the served
OpenAPI document, with a valid key. No answer may be a server error, and every answer
must conform to the document (status, content type, headers, body schema).

The app runs with a real SQLite store in a background thread with its own event loop,
on 127.0.0.1 port 0; schemathesis drives it over real HTTP from the test thread.
"""

from __future__ import annotations

import asyncio
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


def run_app(database: Path, ready: threading.Event, out: dict[str, Any]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{database}")
        runner: web.AppRunner | None = None
        try:
            await store.migrate()
            out["token"] = await new_key(store)
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


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    ready = threading.Event()
    out: dict[str, Any] = {}
    database = tmp_path_factory.mktemp("schemathesis") / "metrics.db"
    thread = threading.Thread(target=run_app, args=(database, ready, out), daemon=True)
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
