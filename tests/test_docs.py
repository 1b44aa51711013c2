"""The manual is held against the code: the README (short: the two set-up commands, the
API summary), docs/configuration.md (generated from the CLI), docs/api.md (every HTTP
route), and every relative link and GF_ variable in them."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.config_table import document, options_by_command

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 15 * 1024


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def without_code(text: str) -> str:
    """The prose of a page: fenced blocks and inline code taken out."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes,
    repeats numbered."""
    out: set[str] = set()
    for heading in re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", text,
                                                   flags=re.M | re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.add(candidate)
    return out


def test_configuration_is_the_generators_output() -> None:
    assert document() == CONFIGURATION, (
        "docs/configuration.md is stale: .venv/bin/python scripts/config_table.py "
        "> docs/configuration.md")


def test_every_option_is_documented_with_its_environment_variable() -> None:
    rows = {
        row.split("|")[1].strip().strip("`"): row
        for row in CONFIGURATION.splitlines()
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
    quick = section(README, "Quick start")
    block = re.search(r"^```sh\n(.*?)^```", quick, re.M | re.S)
    assert block, "the quick start has no sh block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "GF_TEST_REQUIRE_SERVICES=1" in ci


def test_every_http_route_is_documented() -> None:
    from query.app import ROUTES

    # A row's first cell names one route or several: `GET /a`, `POST /a`
    first_cells = re.findall(r"^\| (`[^|]*`) \|", section(README, "HTTP API"), re.M)
    summary = {route for cell in first_cells for route in re.findall(r"`(\w+ /\S*)`", cell)}
    routes = {f"{route.method} {route.path}" for route in ROUTES}
    assert summary == routes, "the README's route table differs from query.app.ROUTES"
    for route in routes:
        assert route in API, f"docs/api.md does not document {route}"


def test_readme_stays_short() -> None:
    size = len(README.encode())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move detail to docs/"


def test_relative_links_resolve() -> None:
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(text)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            assert linked.exists(), f"{where}: no such file"
            if anchor:
                assert linked.suffix == ".md", where
                assert anchor in anchors(linked.read_text()), f"{where}: no such heading"


def test_every_gf_variable_named_is_an_option() -> None:
    known = {o.envvar for opts in options_by_command().values() for o in opts}
    known |= {"GF_TEST_MYSQL_URL", "GF_TEST_REDIS_URL", "GF_TEST_REQUIRE_SERVICES"}
    for page in PAGES:
        text = page.read_text()
        shell = set(re.findall(r"\bexport (GF_[A-Z_]+)=", text))  # the examples' own
        named = set(re.findall(r"\bGF_[A-Z0-9_]*[A-Z0-9]\b", text)) - shell
        assert named <= known, f"{page.name}: not options: {sorted(named - known)}"
