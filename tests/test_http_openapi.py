"""The OpenAPI document held against the router, and the served document."""

from __future__ import annotations

from typing import Any

from query.app import ROUTES, make_app
from query.config import HttpConfig
from query.dashboard import ROUTES as DASHBOARD_ROUTES
from query.openapi import openapi_document
from store import Store
from tests.http_support import serve

DOC = openapi_document(HttpConfig())


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op
            for path, item in DOC["paths"].items() for method, op in item.items()}


def test_every_route_is_documented_and_every_operation_routed(store: Store) -> None:
    app = make_app(HttpConfig(), store)
    pages = {name for *_, name in DASHBOARD_ROUTES}  # HTML pages, not the JSON API
    routed = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None
              and route.name not in pages}
    assert routed == set(operations())
    assert {(r.method, r.path) for r in ROUTES} == routed


def test_security_and_errors_match_the_scopes() -> None:
    ops = operations()
    for route in ROUTES:
        op = ops[(route.method, route.path)]
        responses = set(op["responses"])
        if route.scope is None:
            assert op["security"] == []
            continue
        assert op["security"] == [{"ApiKey": []}, {"Basic": []}]
        assert {"200", "401", "403", "429", "503"} <= responses
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert route.scope in op["responses"]["403"]["description"]
        if route.method == "POST" and route.scope == "write":
            assert {"400", "409", "413", "415", "422"} <= responses
            assert op["requestBody"]["required"] is True
    assert DOC["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": DOC["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert DOC["components"]["securitySchemes"]["Basic"]["scheme"] == "basic"


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(DOC):
        node: Any = DOC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


async def test_the_served_document(store: Store) -> None:
    async with serve(store) as api:
        response = await api.get("/api/openapi.json")
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"]
    assert set(document["paths"]) == set(DOC["paths"])
