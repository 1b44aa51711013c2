"""The dashboard's alert panel and threshold lines in a real headless Chromium against a
real `glowing-fiesta run` evaluating real rules: the panel lists each rule with its
state, a click charts the rule's metric, and the chart holds the rule's threshold as a
line. Any JavaScript error or CSP violation fails the test."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium, javascript_errors
from tests.daemon import DaemonProcess, run_cli
from tests.test_dashboard_browser import Page

pytestmark = pytest.mark.slow


def call(base_url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base_url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


async def test_alert_panel_and_threshold_line(tmp_path: Path,
                                              daemons: list[DaemonProcess]) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    state = str(tmp_path / "state")
    status, out, err = await run_cli("keys", "create", "ops", "--scopes", "admin,read,write",
                                     "--database-url", db, "--rate-limit", "100000/s")
    assert status == 0, err
    token = out.strip()
    daemon = await DaemonProcess.start(
        "run", "--database-url", db, "--state-dir", state, "--udp-port", "0",
        "--tcp-port", "0", "--http-port", "0", "--alert-interval", "0.5", cwd=tmp_path)
    daemons.append(daemon)
    [link] = [re.search(r"http://\S+/login#code=\S+", line).group(0)  # type: ignore[union-attr]
              for line in daemon.log if "/login#code=" in line]
    base = daemon.base_url
    now = int(time.time())
    call(base, token, "POST", "/api/metrics/batch", {"points": [
        {"metric": "web.errors", "type": "counter", "value": 2, "timestamp": ts}
        for ts in range(now - 120, now)]})
    hook = [{"webhook": "http://127.0.0.1:9/unused", "secret": "s"}]
    firing = call(base, token, "POST", "/api/alerts", {
        "name": "errors high", "metric": "web.errors", "window": "5m", "op": ">",
        "threshold": 5, "notify": hook})
    quiet = call(base, token, "POST", "/api/alerts", {
        "name": "beat gone", "metric": "app.beat", "absent_for": "1h", "notify": hook})
    deadline = time.monotonic() + 60
    while call(base, token, "GET", f"/api/alerts/{firing['id']}")["state"] != "firing":
        assert time.monotonic() < deadline, "the rule never fired"
        await asyncio.sleep(0.2)
    await asyncio.to_thread(scenario, tmp_path / "profile", base, link, token,
                            firing["id"], quiet["id"])
    assert await daemon.stop() == 0


def scenario(profile: Path, base_url: str, link: str, token: str, firing: int,
             quiet: int) -> None:
    with chromium(profile) as driver:
        page = Page(driver, base_url, token)
        driver.get(link)
        page.wait.until(lambda d: d.current_url.split("#")[0].endswith("/"))

        def panel(_: Any) -> Any:
            return driver.execute_script(
                "return [...document.querySelectorAll('#alert-list li')]"
                ".map((li) => [Number(li.dataset.rule), li.dataset.state])")

        page.wait.until(lambda d: panel(d) == [[firing, "firing"], [quiet, "ok"]],
                        "the alert panel")
        assert "2 rules, 1 firing" in page.find("#alerts-status").text
        before = page.revision()
        page.find(f'#alert-list li[data-rule="{firing}"] .alert-name').click()
        page.wait_drawn(before, [{"metric": "web.errors", "aggregation": "sum"},
                                 {"rule": firing, "threshold": 5.0}])
        data = driver.execute_script("return document.getElementById('chart').gfPlot.data")
        assert len(data) == 3 and set(data[2]) == {5.0}
        assert any(v for v in data[1])  # the metric's own series holds the data
        # The missing-data rule draws no line; its exact name is offered even before data.
        assert page.find(f'#alert-list li[data-rule="{quiet}"] .alert-name').get_attribute(
            "disabled") is None
        assert javascript_errors(driver) == []
