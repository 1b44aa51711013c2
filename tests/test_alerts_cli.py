"""``glowing-fiesta alerts add|list|rm`` as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.alert_support import Receiver
from tests.daemon import run_cli

RULE = {"name": "errors high", "metric": "app.errors", "window": "5m", "op": ">",
        "threshold": 10, "notify": [{"webhook": "http://127.0.0.1:9/", "secret": "hush-hush"}]}


async def test_add_list_rm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    status, out, err = await run_cli("alerts", "add", json.dumps(RULE), "--database-url", url)
    assert status == 0, err
    rule_id = int(out)
    rule_file = tmp_path / "rule.json"
    rule_file.write_text(json.dumps({"name": "beat gone", "metric": "app.*.beat",
                                     "absent_for": "10m",
                                     "notify": [{"email": "oncall@example.com"}]}))
    status, out, err = await run_cli("alerts", "add", f"@{rule_file}", "--database-url", url)
    assert status == 0, err
    second = int(out)
    status, listing, _ = await run_cli("alerts", "list", "--database-url", url)
    assert status == 0
    lines = listing.splitlines()
    assert lines[1].split()[:4] == [str(rule_id), "ok", "threshold", "app.errors"]
    assert lines[2].split()[:4] == [str(second), "ok", "missing", "app.*.beat"]
    assert "hush-hush" not in listing
    status, out, _ = await run_cli("alerts", "rm", str(rule_id), "--database-url", url)
    assert status == 0 and f"deleted rule {rule_id}" in out
    status, _, err = await run_cli("alerts", "rm", str(rule_id), "--database-url", url)
    assert status == 1 and "no alert rule" in err


async def test_a_bad_rule_names_the_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    status, _, err = await run_cli("alerts", "add", json.dumps(RULE | {"window": "soon"}),
                                   "--database-url", url)
    assert status == 2 and "window" in err
    status, _, err = await run_cli("alerts", "add", "{nope", "--database-url", url)
    assert status == 2 and "not JSON" in err


async def test_alerts_test_sends_to_every_target(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        url = f"sqlite:///{tmp_path / 'a.db'}"
        rule = RULE | {"notify": [{"webhook": receiver.url, "secret": "hush-hush"},
                                  {"email": "oncall@example.com"}]}
        status, out, err = await run_cli("alerts", "add", json.dumps(rule), "--database-url",
                                         url)
        assert status == 0, err
        status, out, err = await run_cli("alerts", "test", out.strip(), "--database-url", url)
        # The webhook is sent; the e-mail fails: no --smtp-host (status 1, said so).
        assert status == 1
        assert "target 0 (127.0.0.1): sent" in out
        assert "target 1 (oncall@example.com): FAILED" in err and "--smtp-host" in err
        (delivery,) = receiver.deliveries
        assert delivery.payload["test"] is True and delivery.signed_with("hush-hush")
        assert "hush-hush" not in out + err
    finally:
        await receiver.stop()
