"""The README is held against the code: every CLI option with its GF_ variable, every
HTTP route, and the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.config_table import document, options_by_command

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_configuration_is_the_generators_output() -> None:
    assert document() == CONFIGURATION, (
        "docs/configuration.md is stale: .venv/bin/python scripts/config_table.py "
        "> docs/configuration.md")


def test_every_option_is_documented_with_its_environment_variable() -> None:
    documented = CONFIGURATION
    rows = {
        row.split("|")[1].strip().strip("`"): row
        for row in documented.splitlines()
        if row.startswith("| `--")
    }
    options = {
        "/".join(o.opts + o.secondary_opts): o
        for opts in options_by_command().values()
        for o in opts
    }
    assert set(rows) == set(options), "docs/configuration.md differs from the CLI"
    for flag, option in options.items():
        assert f"`{option.envvar}`" in rows[flag], flag


def test_quick_start_has_the_two_commands() -> None:
    quick = section("Quick start")
    assert "make run" in quick and "make test" in quick
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "GF_TEST_REQUIRE_SERVICES=1" in ci


def test_every_http_route_is_documented() -> None:
    from query.app import ROUTES

    documented = section("HTTP API")
    for route in ROUTES:
        assert f"{route.method} {route.path}" in documented, route.path
