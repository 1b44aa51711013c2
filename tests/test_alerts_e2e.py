"""Alerts end to end with real processes: ``glowing-fiesta run``/``serve``, StatsD lines
over UDP or points over HTTP, rules made through the API, a real local webhook receiver
(aiohttp) and a real local SMTP server (aiosmtpd), SQLite and MariaDB.

Evaluations every 0.5 s and windows of a few seconds keep these short; waits poll for
an outcome with a generous timeout (no timed assertions)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.alert_support import Receiver
from tests.daemon import DaemonProcess, run_cli

SECRET = "e2e-secret"
# --webhook-timeout 1: the lease (which outlasts a delivery round) expires 2 s after a
# killed leader's last renewal.
FAST = ("--alert-interval", "0.5", "--webhook-timeout", "1")


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append(message_from_bytes(content))
        return "250 OK"


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(mailbox), "127.0.0.1", 0)
    try:
        yield mailbox, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def admin_key(database_url: str) -> str:
    status, out, err = await run_cli("keys", "create", "ops", "--scopes", "admin,read,write",
                                     "--rate-limit", "100000/s", "--database-url", database_url)
    assert status == 0, err
    return out.split()[0]


async def start(command: str, database_url: str, state: Path, *options: str,
                daemons: list[DaemonProcess]) -> DaemonProcess:
    extra = ["--udp-port", "0", "--tcp-port", "0", "--flush-interval", "0.2"] \
        if command == "run" else []
    daemon = await DaemonProcess.start(
        command, "--database-url", database_url, "--state-dir", str(state), "--host",
        "127.0.0.1", "--http-port", "0", *extra, *FAST, *options)
    daemons.append(daemon)
    return daemon


async def post_rule(service: DaemonProcess, key: str, rule: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session, session.post(
        f"{service.base_url}/api/alerts", json=rule, headers={"X-API-Key": key}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return int(body["id"])


def send_udp(service: DaemonProcess, *lines: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in lines:
            sock.sendto(line.encode(), service.udp)


async def test_threshold_and_missing_data_fire_once_and_resolve_once(
    tmp_path: Path, receiver: Receiver, smtp_server: tuple[Mailbox, int],
    daemons: list[DaemonProcess],
) -> None:
    mailbox, smtp_port = smtp_server
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    key = await admin_key(url)
    service = await start("run", url, tmp_path / "state", "--smtp-host", "127.0.0.1",
                          "--smtp-port", str(smtp_port), "--smtp-from", "gf@example.com",
                          daemons=daemons)
    hook = {"webhook": receiver.url, "secret": SECRET}
    await post_rule(service, key, {
        "name": "errors", "metric": "app.errors", "aggregation": "sum", "window": "3s",
        "op": ">", "threshold": 5, "notify": [hook, {"email": "oncall@example.com"}]})
    await post_rule(service, key, {"name": "beat", "metric": "app.beat",
                                   "absent_for": "3s", "notify": [hook]})
    send_udp(service, "app.beat:1|c")
    send_udp(service, *["app.errors:1|c"] * 10)  # 10 > 5: fires
    await until(lambda: ("app.errors", "firing") in receiver.states(), "the firing")
    fired = next(d for d in receiver.deliveries if d.payload["metric"] == "app.errors")
    assert fired.signed_with(SECRET)
    assert fired.payload["value"] == 10.0
    assert fired.payload["link"] == f"{service.base_url}/#m=app.errors&r=1h"
    # The window passes without errors: resolved once.
    await until(lambda: ("app.errors", "ok") in receiver.states(), "the resolve")
    # No heartbeat for 3 s: the missing-data rule fires; a new beat resolves it.
    await until(lambda: ("app.beat", "firing") in receiver.states(), "the missing data")
    send_udp(service, "app.beat:1|c")
    await until(lambda: ("app.beat", "ok") in receiver.states(), "the data back")
    await until(lambda: len(mailbox.messages) >= 2, "the e-mails")
    await asyncio.sleep(2)  # several evaluations more: nothing is sent twice
    errors = [s for m, s in receiver.states() if m == "app.errors"]
    assert errors == ["firing", "ok"]
    beats = [s for m, s in receiver.states() if m == "app.beat"]
    assert beats[:2] == ["firing", "ok"]
    subjects = [m["Subject"] for m in mailbox.messages]
    assert subjects[:2] == ["[FIRING] errors: app.errors", "[resolved] errors: app.errors"]
    assert mailbox.messages[0]["To"] == "oncall@example.com"
    mail_key = mailbox.messages[0]["X-GF-Idempotency-Key"]
    assert len(mail_key) == 32 and mail_key != fired.key  # one key per target
    assert all(SECRET not in line for line in service.log)
    async with aiohttp.ClientSession() as session, session.get(
            f"{service.base_url}/metrics") as response:
        exposition = await response.text()
    assert "gf_alert_leader 1.0" in exposition
    assert "gf_alert_notifications_sent_total" in exposition
    assert await service.stop() == 0


@pytest.mark.slow
async def test_a_receiver_down_for_a_while_gets_it_after_it_comes_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    receiver = await Receiver().start()
    port = receiver.port
    await receiver.stop()  # down: connections refused
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    key = await admin_key(url)
    service = await start("run", url, tmp_path / "state", daemons=daemons)
    await post_rule(service, key, {"name": "errors", "metric": "app.errors", "window": "30s",
                                   "op": ">", "threshold": 5,
                                   "notify": [{"webhook": receiver.url, "secret": SECRET}]})
    send_udp(service, *["app.errors:1|c"] * 10)
    await service.wait_for_log(r"alert notification \d+ failed \(attempt 2\)", timeout=60)
    receiver = await Receiver(port=port).start()  # back, on the same address
    try:
        await until(lambda: bool(receiver.deliveries), "the delivery", timeout=90)
        assert receiver.states() == [("app.errors", "firing")]
        assert receiver.deliveries[0].signed_with(SECRET)
        assert "e2e-secret" not in "\n".join(service.log)
        assert receiver.url.split("/hook")[0] not in "\n".join(service.log)  # host only
    finally:
        await receiver.stop()
    assert await service.stop() == 0


@pytest.mark.slow
async def test_sigkill_between_firing_and_delivery_still_delivers(
    tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    key = await admin_key(url)
    service = await start("run", url, tmp_path / "state", daemons=daemons)
    await post_rule(service, key, {"name": "errors", "metric": "app.errors", "window": "1m",
                                   "op": ">", "threshold": 5,
                                   "notify": [{"webhook": receiver.url, "secret": SECRET}]})
    receiver.status = 503  # the firing is stored, its delivery fails and waits
    send_udp(service, *["app.errors:1|c"] * 10)
    await until(lambda: bool(receiver.attempt_keys), "the first attempt")
    await service.stop(signal.SIGKILL)
    receiver.status = 200
    again = await start("run", url, tmp_path / "state", daemons=daemons)
    await until(lambda: bool(receiver.deliveries), "the delivery after the restart",
                timeout=90)
    await asyncio.sleep(2)
    assert receiver.states() == [("app.errors", "firing")]  # exactly the pending one
    assert receiver.deliveries[0].key == receiver.attempt_keys[0]  # the same key
    assert await again.stop() == 0


@pytest.mark.slow
async def test_two_serve_processes_on_one_mariadb_notify_once_per_transition(
    mysql_url: str, tmp_path: Path, receiver: Receiver, daemons: list[DaemonProcess]
) -> None:
    key = await admin_key(mysql_url)
    gap = ("--alert-min-gap", "0")  # the second round fires again at once
    first = await start("serve", mysql_url, tmp_path / "one", *gap, daemons=daemons)
    second = await start("serve", mysql_url, tmp_path / "two", *gap, daemons=daemons)
    await post_rule(first, key, {"name": "errors", "metric": "app.errors", "window": "3s",
                                 "op": ">", "threshold": 5,
                                 "notify": [{"webhook": receiver.url, "secret": SECRET}]})
    async with aiohttp.ClientSession() as session:
        for service in (first, second):  # each takes half of the errors
            async with session.post(f"{service.base_url}/api/metrics/counter",
                                    json={"metric": "app.errors", "value": 4},
                                    headers={"X-API-Key": key}) as response:
                assert response.status == 200
        await until(lambda: ("app.errors", "ok") in receiver.states(), "fire and resolve")
        await asyncio.sleep(3)  # both keep evaluating: nothing more is sent
        assert receiver.states() == [("app.errors", "firing"), ("app.errors", "ok")]
        leaders = []
        for service in (first, second):
            async with session.get(f"{service.base_url}/metrics") as response:
                leaders.append("gf_alert_leader 1.0" in await response.text())
        assert sorted(leaders) == [False, True]
        # The leader stops (giving the lease up): the other takes over and notifies.
        leader, other = (first, second) if leaders[0] else (second, first)
        assert await leader.stop() == 0
        async with session.post(f"{other.base_url}/api/metrics/counter",
                                json={"metric": "app.errors", "value": 9},
                                headers={"X-API-Key": key}) as response:
            assert response.status == 200
        await until(lambda: len(receiver.states()) == 4, "the second round")
    assert receiver.states()[2:] == [("app.errors", "firing"), ("app.errors", "ok")]
    assert await other.stop() == 0
