"""Run the installed ``glowing-fiesta`` console script as a real subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "glowing-fiesta")
_LISTENING = re.compile(r"listening on (UDP|TCP|HTTPS?) ([\d.]+):(\d+)")


class DaemonProcess:
    """A started daemon; ``ports`` maps "UDP"/"TCP"/"HTTP" to the bound port."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ports: dict[str, int] = {}
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str, cwd: Path | None = None, timeout: float = 30) -> DaemonProcess:
        process = await asyncio.create_subprocess_exec(
            CLI, *args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        daemon = cls(process)
        try:
            await asyncio.wait_for(daemon._wait_ready(), timeout)
        except BaseException:
            await daemon.kill()
            raise
        daemon._reader = asyncio.create_task(daemon._read_rest())
        return daemon

    async def _wait_ready(self) -> None:
        assert self.process.stderr is not None
        while True:
            raw = await self.process.stderr.readline()
            if not raw:
                raise RuntimeError("daemon exited before ready:\n" + "".join(self.log))
            line = raw.decode(errors="replace")
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.ports[match.group(1).rstrip("S")] = int(match.group(3))
            if line.rstrip().endswith(": ready"):
                return

    async def _read_rest(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.log.append(raw.decode(errors="replace"))

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig``, wait for exit; return the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        status = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return status

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run a one-shot command; (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        CLI, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
