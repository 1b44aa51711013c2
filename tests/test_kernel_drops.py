"""Datagrams the kernel drops for the collector's UDP socket (receive buffer full) are
logged like every other drop: one line per 10 s at most, saying how many (issue 15).

The real daemon with the smallest receive buffer, stopped (SIGSTOP) while a burst
arrives, so that the kernel must drop: no timing luck involved.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path

from tests.daemon import DaemonProcess
from tests.http_support import scrape, value

KERNEL_DROP_LINE = r"the kernel dropped (\d+) datagram\(s\) for our UDP socket \((\d+) since"


async def burst_while_stopped(daemon: DaemonProcess, datagrams: int) -> None:
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(datagrams):
                sock.sendto(b"burst.%d:1|c" % i + b" " * 1000, daemon.udp)
    finally:
        daemon.process.send_signal(signal.SIGCONT)


async def test_kernel_drops_are_logged_rate_limited(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = await DaemonProcess.start(
        "collector", "--database-url", f"sqlite:///{tmp_path / 'm.db'}",
        "--state-dir", str(tmp_path), "--host", "127.0.0.1", "--udp-port", "0",
        "--tcp-port", "0", "--admin-port", "0", "--udp-rcvbuf", "4096",
        "--flush-interval", "0.2",
    )
    daemons.append(daemon)
    admin_line = daemon.log[await daemon.wait_for_log(r"admin endpoints .* on ")]
    admin = "http://{}:{}".format(*re.findall(r" on ([\d.]+):(\d+)", admin_line)[0])
    await burst_while_stopped(daemon, 500)
    first = await daemon.wait_for_log(KERNEL_DROP_LINE, timeout=30)
    match = re.search(KERNEL_DROP_LINE, daemon.log[first])
    assert match is not None
    dropped, total = int(match.group(1)), int(match.group(2))
    assert dropped == total > 0
    assert "WARNING glowing_fiesta.drops" in daemon.log[first]
    # A second burst at once: counted at once, logged only after the interval.
    await burst_while_stopped(daemon, 500)
    while value(await scrape(admin), "gf_collector_udp_kernel_drops_total") <= total:
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # two more checks of /proc: still no second line
    assert daemon.count_log(KERNEL_DROP_LINE) == 1
    second = await daemon.wait_for_log(KERNEL_DROP_LINE, after=first + 1, timeout=30)
    again = re.search(KERNEL_DROP_LINE, daemon.log[second])
    assert again is not None
    figures = await scrape(admin)
    assert int(again.group(2)) == value(figures, "gf_collector_udp_kernel_drops_total")
    assert int(again.group(1)) == int(again.group(2)) - total  # each drop told once
    assert await daemon.stop() == 0, daemon.transcript()
