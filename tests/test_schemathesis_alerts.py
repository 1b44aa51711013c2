"""schemathesis on the alert routes with a key that has every scope (admin, read,
write): the generated rules are created, read, replaced and deleted for real, so the
success answers are checked against the document too (tests/test_schemathesis.py runs
every route with a read/write key, where the admin routes answer 403)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from query.app import make_app
from query.config import HttpConfig
from query.openapi import openapi_document
from store import open_store
from tests.http_support import auth, config, new_key
from tests.test_schemathesis import CHECKS, LiveApp


def run_admin_app(database: Path, ready: threading.Event, out: dict[str, Any]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{database}")
        runner: web.AppRunner | None = None
        try:
            await store.migrate()
            out["token"] = await new_key(store, scopes=("admin", "read", "write"))
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
def admin_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    ready = threading.Event()
    out: dict[str, Any] = {}
    database = tmp_path_factory.mktemp("schemathesis_alerts") / "metrics.db"
    thread = threading.Thread(target=run_admin_app, args=(database, ready, out), daemon=True)
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


CASES = [
    (method.upper(), path, mode)
    for path, item in openapi_document(HttpConfig())["paths"].items() if "/api/alerts" in path
    for method in item
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
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
