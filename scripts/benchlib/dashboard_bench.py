"""scripts/bench: the dashboard in headless Chromium against a real ``run`` process.

Two days of per-minute data (a counter, a value with three samples a minute, a sparse
counter, sixty small counters) go in through HTTP batch ingest; the browser logs in
with the printed first-run link, then, with an empty cache each time:

- first load: the navigation to ``/`` until its load event (HTML, CSS, uPlot, app.js),
  in the page's own Navigation Timing;
- first chart: from the navigation start of ``/#m=web.latency_ms`` (a value: avg plus
  its min-max band, three API calls; the 1 h default range) until the page's
  ``gf:chart-drawn`` performance mark, i.e. uPlot has drawn;
- bytes: the transfer sizes (headers included) of that navigation and every resource
  it fetched, API answers included, from Resource Timing.

The median of the runs is reported, and a warm (cached) load beside it. ``--screenshot
PATH`` also saves a picture of the 1 d view of that data (docs/dashboard.png).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from mysql_bench import log

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,860", "--hide-scrollbars")


def demo_points(now: int) -> list[dict[str, Any]]:
    """A small web service's last two days, one flush a minute."""
    out: list[dict[str, Any]] = []
    start = now - 2 * 86400
    for ts in range(start - start % 60, now, 60):
        hour = ts / 3600
        daily = math.sin(2 * math.pi * (hour % 24) / 24)  # busier in the day
        wobble = math.sin(ts / 997) + 0.5 * math.sin(ts / 311)
        requests = max(0, round(120 + 80 * daily + 15 * wobble))
        out.append({"metric": "web.requests", "type": "counter", "value": requests,
                    "timestamp": ts})
        base = 35 + 12 * daily + 4 * wobble
        for spread in (-0.6, -0.2, 0.1, 0.4, 1.8):
            out.append({"metric": "web.latency_ms", "type": "value",
                        "value": round(base * (1 + spread * (0.6 + 0.4 * abs(wobble))), 3),
                        "timestamp": ts})
        if (ts // 60) % 17 == 0:
            out.append({"metric": "web.errors", "type": "counter", "value": 1 + (ts % 3),
                        "timestamp": ts})
        out.append({"metric": "db.query_ms", "type": "value",
                    "value": round(4 + 2 * daily + abs(wobble), 3), "timestamp": ts})
        if ts % 300 == 0:
            out.append({"metric": "jobs.done", "type": "counter", "value": 5 + ts % 7,
                        "timestamp": ts})
    for i in range(60):
        out.append({"metric": f"app.worker.{i:02d}.busy", "type": "counter", "value": i,
                    "timestamp": now - 30})
    return out


def seed(base_url: str, token: str) -> int:
    data = demo_points(int(time.time()))
    for i in range(0, len(data), 1000):
        body = json.dumps({"points": data[i:i + 1000]}).encode()
        request = urllib.request.Request(
            base_url + "/api/metrics/batch", data=body, method="POST",
            headers={"X-API-Key": token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
    return len(data)


def browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


TRANSFERRED = """
const nav = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource');
const api = resources.filter((r) => new URL(r.name).pathname.startsWith('/api/'));
return {
  load_ms: nav.loadEventEnd,
  bytes: nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0),
  decoded: nav.decodedBodySize + resources.reduce((n, r) => n + r.decodedBodySize, 0),
  requests: 1 + resources.length,
  chart_ms: (performance.getEntriesByName('gf:chart-drawn')[0] || {}).startTime ?? null,
  // from the first API request to the last API answer: the store's share of the wait
  api_ms: api.length ? Math.max(...api.map((r) => r.responseEnd)) -
                       Math.min(...api.map((r) => r.startTime)) : null,
};
"""


def measure(driver: Any, url: str, *, cold: bool, chart: bool) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    if cold:
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.execute_script(
        "return document.readyState === 'complete'"))
    if chart:
        wait.until(lambda d: d.execute_script(
            "return performance.getEntriesByName('gf:chart-drawn').length > 0"))
    time.sleep(0.1)  # let Resource Timing record the last answers
    return dict(driver.execute_script(TRANSFERRED))


def dashboard_bench(bench: Any) -> dict[str, Any]:
    import importlib

    main = importlib.import_module("__main__")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return {"skipped": f"{path} missing (apt-get install chromium chromium-driver)"}
    try:
        import selenium  # noqa: F401
    except ImportError:
        return {"skipped": "selenium missing (pip install -e '.[dev]')"}
    tmp = bench.tmp / "dashboard"
    tmp.mkdir()
    db = f"sqlite:///{tmp / 'db.sqlite'}"
    made = subprocess.run(
        [main.CLI, "keys", "create", "seed", "--rate-limit", "100000/s", "--database-url", db,
         "--state-dir", str(tmp)], capture_output=True, text=True, cwd=tmp, check=False)
    if made.returncode != 0:
        return {"skipped": f"keys create failed: {made.stderr.strip()[-200:]}"}
    token = made.stdout.strip().splitlines()[0]
    server = main.Proc(main.pinned(main.DAEMON_CPU, [
        main.CLI, "run", "--database-url", db, "--state-dir", str(tmp), "--udp-port", "0",
        "--tcp-port", "0", "--http-port", "0"]), cwd=tmp)
    bench.stack.callback(server.stop)
    link = server.wait_for(r"(http://127\.0\.0\.1:(\d+))/login#code=\S+", 60)
    base_url = link.group(1)
    server.wait_for(r"glowing_fiesta: ready", 30)
    log("dashboard: seeding two days of per-minute data through HTTP ingest")
    points = seed(base_url, token)
    runs = 3 if bench.args.quick else 10
    driver = browser(tmp / "profile")
    bench.stack.callback(shutil.rmtree, tmp / "profile", True)
    bench.stack.callback(driver.quit)
    driver.get(link.group(0))
    wait_path(driver, "/")
    log(f"dashboard: first load and first chart, {runs} runs each, empty cache")
    cold = [measure(driver, base_url + "/", cold=True, chart=False) for _ in range(runs)]
    chart = [measure(driver, base_url + "/#m=web.latency_ms", cold=True, chart=True)
             for _ in range(runs)]
    warm = [measure(driver, base_url + "/#m=web.latency_ms", cold=False, chart=True)
            for _ in range(runs)]
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    out = {
        "points": points, "runs": runs,
        "first_load_ms": statistics.median(r["load_ms"] for r in cold),
        "first_load_bytes": statistics.median(r["bytes"] for r in cold),
        "first_chart_ms": statistics.median(r["chart_ms"] for r in chart),
        "first_chart_bytes": statistics.median(r["bytes"] for r in chart),
        "first_chart_decoded_bytes": statistics.median(r["decoded"] for r in chart),
        "first_chart_requests": statistics.median(r["requests"] for r in chart),
        "first_chart_api_ms": statistics.median(r["api_ms"] for r in chart),
        "warm_chart_ms": statistics.median(r["chart_ms"] for r in warm),
        "warm_chart_bytes": statistics.median(r["bytes"] for r in warm),
        "javascript_errors": len(errors),
    }
    if bench.args.screenshot:
        screenshot(driver, base_url, Path(bench.args.screenshot))
    return out


def wait_path(driver: Any, path: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: re.match(r"https?://[^/]+(/[^#?]*)", d.current_url).group(1) == path)


def screenshot(driver: Any, base_url: str, path: Path) -> None:
    """The 1 d view: the latency's avg and min-max band, the request counter overlaid."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(base_url + "/#m=web.latency_ms,db.query_ms&r=1d&q=web.")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.getElementById('chart').dataset.state === 'ready'"
        " && document.querySelectorAll('#metric-list li').length > 0"))
    time.sleep(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    log(f"dashboard: screenshot saved to {path}")
