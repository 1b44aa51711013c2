"""Logging: stdlib only, one line per event, text or JSON; dropped input logged with
rate limiting and a sample; no print() in the service code."""

from __future__ import annotations

import ast
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.stats import CollectorStats
from glowing_fiesta.logs import JsonFormatter, configure_logging
from protocol.lines import Reason

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = ("protocol", "store", "collector", "query", "glowing_fiesta")
CLI = Path(sys.executable).parent / "glowing-fiesta"


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiohttp.access").setLevel(access_level)


def test_json_formatter_writes_one_object_per_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("collector.flusher", logging.ERROR, __file__, 1,
                                   "flush of %d rows failed:\n%s", (3, "details"),
                                   sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "collector.flusher"
    assert entry["message"] == "flush of 3 rows failed:\ndetails"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert "ValueError: boom" in entry["exception"]


def test_configure_logging_json(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    logging.getLogger("glowing_fiesta").info("ready")
    logging.getLogger("glowing_fiesta").debug("not at info level")
    logging.getLogger("collector.daemon").warning("multi\nline")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("info", "glowing_fiesta", "ready"),
        ("warning", "collector.daemon", "multi\nline"),
    ]


def test_configure_logging_text(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning", "text")
    logging.getLogger("store.sqlite").info("quiet")
    logging.getLogger("store.sqlite").warning("database is slow")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING store.sqlite: database is slow")


def test_dropped_lines_are_logged_once_per_interval_with_a_sample(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = CollectorStats()
    with caplog.at_level(logging.WARNING, logger="glowing_fiesta.drops"):
        for _ in range(1000):
            stats.drop(Reason.PARSE_ERROR, 1, b"garbage  (expected name:value|type)")
        stats.drop(Reason.BAD_NAME, 1, b"..x:1|c")
    assert stats.drops[Reason.PARSE_ERROR] == 1000
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2  # one per reason, not one per line
    assert "parse_error" in messages[0] and "garbage" in messages[0]
    assert "bad_name" in messages[1] and "..x:1|c" in messages[1]


def test_no_print_in_service_code() -> None:
    offenders = []
    for package in SERVICE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "print"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "use logging (or click.echo in the CLI): " + ", ".join(offenders)


def test_daemon_logs_json_lines(tmp_path: Path) -> None:
    """The real daemon with --log-format json: every line of its stderr is one JSON
    object, from start to exit, including a dropped-line warning with its sample."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("GF_") and name not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    process = subprocess.Popen(
        [str(CLI), "collector", "--database-url", f"sqlite:///{tmp_path / 'm.db'}",
         "--state-dir", str(tmp_path), "--udp-port", "0", "--tcp-port", "0",
         "--log-format", "json"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        for raw in stderr:
            lines.put(raw)
        lines.put(b"")  # end of output

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[dict[str, str]] = []

    def next_entry() -> dict[str, str] | None:
        raw = lines.get(timeout=60)
        if not raw:
            return None
        entry = json.loads(raw)  # fails the test on any non-JSON line
        assert isinstance(entry, dict)
        seen.append(entry)
        return entry

    def wait_for(message_part: str, *, exact: bool = False) -> dict[str, str]:
        while (entry := next_entry()) is not None:
            message = entry["message"]
            if message == message_part or (not exact and message_part in message):
                return entry
        raise AssertionError(f"no log line with {message_part!r}: {seen}")

    try:
        udp = wait_for("listening on UDP")
        port = int(udp["message"].rsplit(":", 1)[1])
        wait_for("ready", exact=True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"ok:1|c\nthis is not a line\nok:2|c", ("127.0.0.1", port))
        drop = wait_for("dropped")
        assert drop["level"] == "warning" and drop["logger"] == "glowing_fiesta.drops"
        assert "parse_error" in drop["message"] and "this is not a line" in drop["message"]
        process.send_signal(signal.SIGTERM)
        while next_entry() is not None:
            pass
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        stderr.close()
    assert any("final flush done" in entry["message"] for entry in seen), seen
    assert {"ts", "level", "logger", "message"} <= set(seen[0])
