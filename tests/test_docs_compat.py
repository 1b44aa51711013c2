"""docs/ingest-compat.md and docs/migrating.md held against the code: the name table,
the StatHat routes, the carbon options and the sections a migrating user looks for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.stathat import metric_to_stat, stat_to_metric
from query.app import ROUTES, Route

DOCS = Path(__file__).resolve().parent.parent / "docs"
COMPAT = (DOCS / "ingest-compat.md").read_text()
MIGRATING = (DOCS / "migrating.md").read_text()
NAME_ROWS = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$",
                       COMPAT.split("<!-- names:")[1].split("\n\n")[0], re.M)


def test_the_name_table_is_the_rule() -> None:
    assert len(NAME_ROWS) >= 5
    for stat, metric in NAME_ROWS:
        assert stat_to_metric(stat) == metric, stat
        assert metric_to_stat(metric) == stat, metric


@pytest.mark.parametrize("route", [r for r in ROUTES if r.name.startswith("stathat_")],
                         ids=lambda r: r.name)
def test_every_stathat_route_is_documented(route: Route) -> None:
    assert f"`{route.method} {route.path}" in COMPAT


def test_carbon_options_and_answers_are_documented() -> None:
    for text in ("--carbon-port", "GF_CARBON_PORT", "--carbon-counter-pattern",
                 "GF_CARBON_COUNTER_PATTERN", '`{"status":200,"msg":"ok"}`',
                 '{"status":500,"msg":"invalid keys"}'):
        assert text in COMPAT, text


def test_migrating_names_one_setting_per_source() -> None:
    sections = re.findall(r"^## (.+)$", MIGRATING, re.M)
    assert sections == ["From StatHat", "From Etsy statsd + Graphite",
                        "From collectd or Telegraf (write_graphite, outputs.graphite)"]
    for body in MIGRATING.split("\n## ")[1:]:
        assert "**The one setting:" in body
