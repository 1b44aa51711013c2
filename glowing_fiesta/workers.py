"""``--workers N``: N processes share the listening ports (SO_REUSEPORT).

The parent binds nothing itself. It picks concrete ports for any port 0, starts N
worker processes with multiprocessing's *spawn* method, waits until every worker is
listening, forwards SIGTERM/SIGINT to them and exits 0 when all of them exit 0 (if one
worker fails, the others are stopped and the parent exits 1, so the supervisor
restarts the whole group).

Each worker is a complete collector or HTTP service: its own event loop, aggregator,
flusher and writer id (the id contains the pid). The kernel spreads UDP datagrams and
TCP connections over the workers by source address and port; the additive upserts merge
whatever each worker wrote for the same metric-second, so N workers store exactly what
one would.

Why spawn and not fork or a subprocess per worker: spawn gives each worker a fresh
interpreter (no event loop, thread or lock state inherited from the parent, which is
what makes fork fragile), while still passing the one frozen Config as an object and a
readiness Event through multiprocessing, instead of re-serializing options into a
command line and scraping a child's log for readiness.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import replace
from multiprocessing.connection import wait
from multiprocessing.synchronize import Event
from types import FrameType

from glowing_fiesta.config import Config
from glowing_fiesta.logs import configure_logging
from glowing_fiesta.notify import Notifier

log = logging.getLogger("glowing_fiesta")

READY_TIMEOUT = 60.0  # seconds for every worker to be listening
STOP_TIMEOUT = 60.0  # seconds for the workers' drain and final flush after a signal


def pick_port(host: str, port: int | None, kind: socket.SocketKind) -> int | None:
    """``port``, or a free one if it is 0 (the workers must all bind the same number)."""
    if port != 0:
        return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_ports(config: Config, *, collector: bool, http: bool) -> Config:
    c, h = config.collector, config.http
    if collector:
        c = replace(c, udp_port=pick_port(c.host, c.udp_port, socket.SOCK_DGRAM),
                    tcp_port=pick_port(c.host, c.tcp_port, socket.SOCK_STREAM),
                    carbon_port=pick_port(c.host, c.carbon_port, socket.SOCK_STREAM))
    if http:
        h = replace(h, port=pick_port(h.host, h.port, socket.SOCK_STREAM) or h.port)
    return replace(config, collector=c, http=h)


def _worker(config: Config, collector: bool, http: bool, index: int, ready: Event) -> None:
    """A worker process's entry point (spawned: imports happen here, fresh)."""
    from glowing_fiesta.runner import run_async, run_services

    configure_logging(config.log_level, config.log_format)
    status = run_async(run_services(
        config, collector=collector, http=http, on_ready=ready.set, reuse_port=True,
        worker=index,
    ))
    raise SystemExit(status)


def run_workers(
    config: Config, workers: int, *, collector: bool, http: bool,
    notifier: Notifier | None = None,
) -> int:
    """Run ``workers`` processes until a signal; return the exit status for the parent."""
    notifier = notifier or Notifier()
    config = resolve_ports(config, collector=collector, http=http)
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)

    processes: list[multiprocessing.process.BaseProcess] = []
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        events = [context.Event() for _ in range(workers)]
        for index in range(workers):
            child = context.Process(
                target=_worker, args=(config, collector, http, index + 1, events[index]),
                name=f"glowing-fiesta-worker-{index + 1}",
            )
            child.start()
            processes.append(child)
        if not _wait_ready(processes, events, stopping):
            _stop_all(processes)
            return 1
        c = config.collector
        if collector:
            for label, port in (("UDP", c.udp_port), ("TCP", c.tcp_port)):
                if port is not None:
                    log.info("listening on %s %s:%d", label, c.host, port)
        if http:
            log.info("listening on HTTP %s:%d", config.http.host, config.http.port)
        log.info("%d workers ready", workers)
        log.info("ready")
        notifier.ready(f"ready: {workers} workers")
        failed = False
        pending = list(processes)
        ping_every = notifier.watchdog_interval  # the units set WatchdogSec=
        while pending:
            done = wait([p.sentinel for p in pending], timeout=ping_every)
            if ping_every is not None:
                notifier.watchdog()  # the parent's loop is this wait: it is alive
            for process in [p for p in pending if p.sentinel in done]:
                process.join()
                pending.remove(process)
                if process.exitcode != 0:
                    failed = True
                    log.error("%s exited with status %s", process.name, process.exitcode)
                    if not stopping:  # one failed on its own: stop the group
                        forward(signal.SIGTERM, None)
        notifier.stopping("stopping")
        return 1 if failed else 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in processes:
            if process.exitcode is None:
                process.kill()
                process.join()


def _wait_ready(
    processes: list[multiprocessing.process.BaseProcess], events: list[Event],
    stopping: list[int],
) -> bool:
    """True once every worker is listening; False if one exits first or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(event.is_set() for event in events):
        if stopping or time.monotonic() > deadline:
            log.error("workers not ready (stopped or timed out)")
            return False
        for process in processes:
            if process.exitcode is not None:
                log.error("%s exited with status %s before it was ready",
                          process.name, process.exitcode)
                return False
        wait([p.sentinel for p in processes], timeout=0.05)
    return True


def _stop_all(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(STOP_TIMEOUT)
