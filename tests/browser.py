"""Debian's Chromium driven by selenium: headless, no browser download, a fresh profile.

Holds no tests itself. ``chromium(tmp)`` skips the test when Chromium, its driver or
selenium is missing, and fails it instead when GF_TEST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,900")


def _missing(what: str) -> None:
    message = f"{what} not available: apt-get install -y chromium chromium-driver"
    if os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (GF_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium whose console log is kept (``driver.get_log("browser")``)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() and os.access(path, os.X_OK)):
            _missing(path)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def javascript_errors(driver: Any) -> list[dict[str, Any]]:
    """Console entries at SEVERE: uncaught exceptions, console.error, CSP violations,
    failed loads. Reading the log empties it."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
