"""Run the installed ``glowing-fiesta`` console script as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "glowing-fiesta")
_LISTENING = re.compile(r"listening on (UDP|TCP|HTTP)S? [\d.]+:(\d+)")
_READY = re.compile(r'glowing_fiesta: ready$|"logger":"glowing_fiesta","message":"ready"')


class DaemonProcess:
    """A started daemon, its log lines collected; ``ports`` maps "UDP"/"TCP"/"HTTP" to
    the bound port (read from its "listening on" lines)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log())

    @classmethod
    async def start(
        cls, *args: str, cwd: Path | None = None, timeout: float = 30
    ) -> DaemonProcess:
        """Start ``glowing-fiesta ARGS`` and wait for its "ready" log line."""
        process = await asyncio.create_subprocess_exec(
            CLI, *args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        daemon = cls(process)
        try:
            await daemon.wait_for_log(_READY, timeout=timeout)
        except BaseException:
            await daemon.kill()
            raise
        return daemon

    @property
    def udp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["UDP"])

    @property
    def tcp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["TCP"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['HTTP']}"

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            match = _LISTENING.search(line)
            if match:
                self.ports[match.group(1)] = int(match.group(2))
            self.log.append(line)
            self._new_line.set()
        self._new_line.set()

    async def wait_for_log(
        self, pattern: str | re.Pattern[str], *, after: int = 0, timeout: float = 30
    ) -> int:
        """Wait for a log line matching ``pattern`` (from line ``after`` on); its index."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for index in range(seen, len(self.log)):
                if regex.search(self.log[index]):
                    return index
            seen = len(self.log)
            if self._reader.done():
                raise AssertionError(f"process exited; no log line {regex.pattern!r}:\n"
                                     + self.transcript())
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no log line {regex.pattern!r} in {timeout}s:\n"
                                     + self.transcript())
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), left)

    def count_log(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.log if regex.search(line))

    def transcript(self) -> str:
        return "\n".join(self.log[-80:])

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig``, wait for exit; return the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        status = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return status

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


async def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run a one-shot command; (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        CLI, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def create_key(database_url: str, name: str, *options: str) -> str:
    """``glowing-fiesta keys create NAME`` (which migrates too); the token it printed."""
    status, out, err = await run_cli("keys", "create", name, "--database-url", database_url,
                                     *options)
    assert status == 0, err
    match = re.search(r"gf_[0-9A-Za-z]{32}", out)
    assert match is not None, out
    assert match.group() not in err  # printed once, on stdout, and nowhere else
    return match.group()
