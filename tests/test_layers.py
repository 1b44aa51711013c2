"""The import direction of DESIGN.md section 1, held: protocol <- store <-
{collector, query, alerts} <- glowing_fiesta; collector, query and alerts never import
each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"protocol", "store", "collector", "query", "alerts", "glowing_fiesta"}
ALLOWED = {
    "protocol": {"protocol"},
    "store": {"protocol", "store"},
    "collector": {"protocol", "store", "collector"},
    "query": {"protocol", "store", "query"},
    "alerts": {"protocol", "store", "alerts"},
    "glowing_fiesta": OURS,
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in modules
    }
    assert {path: bad for path, bad in wrong.items() if bad} == {}
