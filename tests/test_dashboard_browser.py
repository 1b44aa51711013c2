"""The dashboard in a real headless Chromium against a real `glowing-fiesta run`
process holding real data (sent through HTTP ingest): the first-run link logs in, the
list is searched (prefix, glob, pages), a chart is opened, its range, overlay and
aggregation changed, and each time the series uPlot holds are compared with what the
JSON API answers for the same view. Any JavaScript error, CSP violation or failed load
in the browser's console fails the test."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium, javascript_errors
from tests.daemon import DaemonProcess, run_cli

pytestmark = pytest.mark.slow

WEB_METRICS = ["web.errors", "web.latency_ms", "web.requests"]
APP_METRICS = [f"app.worker.{i:02d}.busy" for i in range(60)]  # more than a page (50)


def points(now: int) -> list[dict[str, Any]]:
    """Two days of traffic: a counter and a value every minute, a sparse counter, and
    sixty small counters for paging."""
    out: list[dict[str, Any]] = []
    start = now - 2 * 86400
    for ts in range(start - start % 60, now, 60):
        phase = ts / 3600
        out.append({"metric": "web.requests", "type": "counter",
                    "value": 1 + (ts // 60) % 7, "timestamp": ts})
        for spread in (-5.5, 0.25, 9.0):
            out.append({"metric": "web.latency_ms", "type": "value",
                        "value": round(20 + 8 * math.sin(phase) + spread * (1 + (ts // 60) % 3),
                                       3),
                        "timestamp": ts})
        if ts % 600 == 0:
            out.append({"metric": "web.errors", "type": "counter", "value": 1,
                        "timestamp": ts})
    for i, name in enumerate(APP_METRICS):
        out.append({"metric": name, "type": "counter", "value": i, "timestamp": now - 30})
    return out


def seed(base_url: str, token: str) -> None:
    data = points(int(time.time()))
    for i in range(0, len(data), 1000):
        request = urllib.request.Request(
            base_url + "/api/metrics/batch", method="POST",
            data=json.dumps({"points": data[i:i + 1000]}).encode(),
            headers={"X-API-Key": token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200


def api(base_url: str, token: str, path: str, **params: Any) -> Any:
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"X-API-Key": token})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


# Sets the custom range inputs to two epoch times, formatted in the browser's time zone.
LOCAL_INPUTS = """
const pad = (n) => String(n).padStart(2, "0");
const local = (epoch) => {
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
};
document.getElementById("from").value = local(arguments[0]);
document.getElementById("to").value = local(arguments[1]);
"""


class Page:
    """The dashboard in the browser, with waits on what the page says it has done."""

    def __init__(self, driver: Any, base_url: str, read_token: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.base_url = base_url
        self.token = read_token
        self.by = By
        self.wait = WebDriverWait(driver, 30)

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def listed(self) -> list[str]:
        # One script, not an element per name: the list may be re-rendered meanwhile.
        return list(self.driver.execute_script(
            "return [...document.querySelectorAll('#metric-list li')]"
            ".map((li) => li.dataset.metric)"))

    def wait_listed(self, expected: list[str]) -> None:
        self.wait.until(lambda _: self.listed() == expected,
                        f"metric list is not {expected[:5]}...")

    def search(self, text: str) -> None:
        box = self.find("#search")
        box.clear()
        box.send_keys(text)
        # The search runs once typing pauses; it writes itself into the URL first.
        self.wait.until(lambda d: urllib.parse.parse_qs(
            urllib.parse.urlsplit(d.current_url).fragment).get("q") == [text])

    def revision(self) -> str:
        return str(self.find("#chart").get_attribute("data-revision") or "")

    def wait_drawn(self, before: str, series: list[dict[str, str]]) -> None:
        def drawn(_: Any) -> bool:
            chart = self.find("#chart")
            return (chart.get_attribute("data-state") == "ready"
                    and self.revision() != before
                    and json.loads(chart.get_attribute("data-series") or "[]") == series)

        self.wait.until(drawn, f"chart not drawn with {series}")

    def assert_drawn_matches_api(self) -> dict[str, int]:
        """uPlot's own data, series by series, against the API's answer for the view
        (percentiles at a minute at the finest: their buckets are a subset of the x
        axis, the steps between them null)."""
        chart = self.find("#chart")
        view = json.loads(chart.get_attribute("data-view"))
        series = json.loads(chart.get_attribute("data-series"))
        data = self.driver.execute_script("return document.getElementById('chart').gfPlot.data")
        assert len(data) == len(series) + 1
        xs = data[0]
        for column, drawn in zip(series, data[1:], strict=True):
            step = view["step"]
            if re.fullmatch(r"p[0-9.]+|unique|last", column["aggregation"]):
                step = max(step, 60)
            # a coarser step: from its first whole bucket in the view
            start = view["from"] if step == view["step"] else -(-view["from"] // step) * step
            answer = api(self.base_url, self.token, f"/api/metrics/{column['metric']}",
                         **{"from": start, "to": view["to"], "interval": f"{step}s",
                            "aggregation": column["aggregation"]})
            by_ts = {epoch(p["timestamp"]): p["value"] for p in answer["points"]}
            assert set(by_ts) <= set(xs), column
            if step == view["step"]:
                assert xs == list(by_ts), column
            assert drawn == [by_ts.get(x) for x in xs], column
            assert any(v not in (None, 0) for v in drawn), column  # real data, not a flat line
        return view


async def test_dashboard_in_chromium(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    state = str(tmp_path / "state")
    status, out, err = await run_cli("keys", "create", "seed", "--database-url", db,
                                     "--state-dir", state, "--rate-limit", "100000/s")
    assert status == 0, err
    write_token = out.strip()
    daemon = await DaemonProcess.start(
        "run", "--database-url", db, "--state-dir", state, "--udp-port", "0",
        "--tcp-port", "0", "--http-port", "0", cwd=tmp_path)
    daemons.append(daemon)
    [link] = [re.search(r"http://\S+/login#code=\S+", line).group(0)  # type: ignore[union-attr]
              for line in daemon.log if "/login#code=" in line]
    await asyncio.to_thread(scenario, tmp_path / "profile", daemon.base_url, link,
                            write_token)
    assert await daemon.stop() == 0


def scenario(profile: Path, base_url: str, link: str, token: str) -> None:
    with chromium(profile) as driver:
        page = Page(driver, base_url, token)
        # A wrong code: the page says why (the browser logs the 401 load, nothing else).
        driver.get(base_url + "/login#code=not-the-code")
        page.wait.until(lambda _: "used already" in page.find("#login-status").text)
        assert urllib.parse.urlsplit(driver.current_url).fragment == ""
        [refused] = javascript_errors(driver)
        assert "/login - Failed to load resource" in refused["message"]
        assert "401" in refused["message"], refused
        # The first-run link (pasted into that tab: only the fragment changes) logs in and
        # lands on the dashboard, the code gone from the URL.
        driver.get(link)
        page.wait.until(lambda d: urllib.parse.urlsplit(d.current_url).path == "/")
        assert "code=" not in driver.current_url
        # Nothing sent yet: the page says how, and picks the names up once they arrive.
        page.wait.until(lambda _: "No metrics yet" in page.find("#list-status").text)
        seed(base_url, token)
        page.wait.until(lambda _: len(page.listed()) > 0)
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly
        assert page.listed()[:3] == APP_METRICS[:3]  # by name: app.* before web.*

        # Prefix search, paged by the API's cursor.
        page.search("app.")
        page.wait_listed(APP_METRICS[:50])
        page.find("#next").click()
        page.wait_listed(APP_METRICS[50:])
        assert page.find("#next").get_attribute("disabled") is not None
        page.find("#prev").click()
        page.wait_listed(APP_METRICS[:50])

        # Glob search (a dot-bounded *), then open a value metric: avg with its min-max band.
        page.search("web.*")
        page.wait_listed(WEB_METRICS)
        page.search("*.latency_?s")
        page.wait_listed(["web.latency_ms"])
        before = page.revision()
        page.find('#metric-list li[data-metric="web.latency_ms"] .metric-name').click()
        band = [{"metric": "web.latency_ms", "aggregation": a} for a in ("avg", "max", "min")]
        page.wait_drawn(before, band)
        assert page.assert_drawn_matches_api()["step"] == 10  # 1 h in 10 s buckets
        assert driver.execute_script(
            "return document.getElementById('chart').gfPlot.bands.length") == 1

        # A longer range: the same series, rebuilt from the API in 5-minute buckets.
        before = page.revision()
        page.find('#ranges button[data-range="1d"]').click()
        page.wait_drawn(before, band)
        view = page.assert_drawn_matches_api()
        assert view["step"] == 300 and view["to"] - view["from"] == 86400

        # A custom range (the inputs are in the browser's local time): exactly that window.
        before = page.revision()
        page.find('#ranges button[data-range="custom"]').click()
        page.wait_drawn(before, band)  # starts as the window shown before
        hour = int(time.time()) // 3600 * 3600
        start, end = hour - 40 * 3600, hour - 28 * 3600
        driver.execute_script(LOCAL_INPUTS, start, end)
        before = page.revision()
        page.find("#apply").click()
        page.wait_drawn(before, band)
        view = page.assert_drawn_matches_api()
        assert (view["from"], view["to"], view["step"]) == (start, end, 300)
        fragment = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).fragment)
        assert (fragment["r"], fragment["from"], fragment["to"]) == (
            ["custom"], [str(start)], [str(end)])
        before = page.revision()
        page.find('#ranges button[data-range="1d"]').click()
        page.wait_drawn(before, band)

        # Overlay a counter, then switch the aggregation of both.
        page.search("web.")
        page.wait_listed(WEB_METRICS)
        before = page.revision()
        page.find('#metric-list li[data-metric="web.requests"] .metric-add').click()
        page.wait_drawn(before, [*band, {"metric": "web.requests", "aggregation": "sum"}])
        page.assert_drawn_matches_api()
        from selenium.webdriver.support.ui import Select

        before = page.revision()
        Select(page.find("#aggregation")).select_by_value("max")
        both_max = [{"metric": "web.latency_ms", "aggregation": "max"},
                    {"metric": "web.requests", "aggregation": "max"}]
        page.wait_drawn(before, both_max)
        page.assert_drawn_matches_api()
        # A percentile: the value's p99 from its sketches; the counter has none, so it
        # is charted with its default (sum).
        before = page.revision()
        Select(page.find("#aggregation")).select_by_value("p99")
        p99 = [{"metric": "web.latency_ms", "aggregation": "p99"},
               {"metric": "web.requests", "aggregation": "sum"}]
        page.wait_drawn(before, p99)
        page.assert_drawn_matches_api()
        before = page.revision()
        Select(page.find("#aggregation")).select_by_value("max")
        page.wait_drawn(before, both_max)

        # The view is in the URL (never the key): opened afresh, it draws the same chart.
        url = driver.current_url
        fragment = urllib.parse.parse_qs(urllib.parse.urlsplit(url).fragment)
        assert fragment["m"] == ["web.latency_ms,web.requests"]
        assert fragment["r"] == ["1d"] and fragment["a"] == ["max"]
        assert "gf_" not in url
        driver.get("about:blank")
        driver.get(url)
        page.wait_drawn("", both_max)
        page.assert_drawn_matches_api()

        # Auto-refresh redraws in place (same uPlot instance, new revision).
        driver.execute_script("document.getElementById('chart').gfPlot.gfMark = 1")
        before = page.revision()
        page.find("#refresh").click()
        assert "live=1" in driver.current_url
        # 1 d in 300 s buckets refreshes every 60 s; the 1 h view every 10 s.
        page.find('#ranges button[data-range="1h"]').click()
        page.wait_drawn(before, both_max)
        driver.execute_script("document.getElementById('chart').gfPlot.gfMark = 2")
        before = page.revision()
        page.wait_drawn(before, both_max)  # the timer's redraw
        assert driver.execute_script("return document.getElementById('chart').gfPlot.gfMark") == 2
        # At 1 h (10 s buckets) a p99 comes per minute, beside the counter's 10 s.
        before = page.revision()
        Select(page.find("#aggregation")).select_by_value("p99")
        page.wait_drawn(before, p99)
        assert page.assert_drawn_matches_api()["step"] == 10
        assert driver.execute_script(
            "return document.querySelector('#metric-list li[data-metric=\"web.latency_ms\"]"
            " .kind').textContent") == "v"

        # A shared link followed from another site: the browser withholds the Strict
        # cookie on that navigation, yet the page's own API calls carry it.
        shared = base_url + "/#m=web.requests&r=7d"
        driver.get("data:text/html," + urllib.parse.quote(
            f"<a id=go href='{shared}'>shared view</a>"))
        driver.find_element(page.by.ID, "go").click()
        page.wait_drawn("", [{"metric": "web.requests", "aggregation": "sum"}])
        assert urllib.parse.urlsplit(driver.current_url).path == "/"

        errors = javascript_errors(driver)
        assert errors == [], errors

        # Logging out ends the session: the dashboard sends the browser to the login page.
        page.find("#logout").click()
        page.wait.until(lambda d: urllib.parse.urlsplit(d.current_url).path == "/login")
        # A shared view opened without a session: login (the form, with a key), then back
        # to that view.
        driver.get(base_url + "/#m=web.requests&r=7d")
        page.wait.until(lambda d: urllib.parse.urlsplit(d.current_url).path == "/login")
        assert urllib.parse.urlsplit(driver.current_url).fragment == "m=web.requests&r=7d"
        page.find("#key").send_keys(token)
        page.find("#login-form button").click()
        page.wait.until(lambda d: urllib.parse.urlsplit(d.current_url).path == "/")
        page.wait_drawn("", [{"metric": "web.requests", "aggregation": "sum"}])
        assert page.assert_drawn_matches_api()["step"] == 1800
        assert javascript_errors(driver) == []
