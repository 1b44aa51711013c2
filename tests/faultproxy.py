"""A TCP proxy in front of MariaDB that a test can cut, stall and reset.

The collector under test connects to ``proxy.port`` (``proxy.url(mysql_url)``) instead
of the server. The proxy reads just enough of the MySQL client/server protocol to find
statements: every client packet is ``[3-byte little-endian length][sequence id]
[payload]``, and a COM_QUERY payload is ``0x03`` followed by the SQL text. That is how
it can break a connection right after the client has sent COMMIT, the moment where the
client cannot know whether its transaction was applied.

Faults:
- ``cut()``: every open connection is reset and new ones are reset on accept (the
  server is "down"); ``restore()`` ends it.
- ``stall()``: connections stay open but no byte moves either way (a hung server or a
  partitioned network); ``restore()`` lets the held bytes through.
- ``reset_next_commits(n, forward=True)``: the next ``n`` COMMITs are passed to the
  server, its answer is swallowed, and the connection is reset: the transaction IS
  committed but the client sees a lost connection. With ``forward=False`` the COMMIT is
  swallowed instead: the transaction is NOT committed, and the client sees the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from urllib.parse import urlsplit

COM_QUERY = 0x03


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        proxy: FaultProxy,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.server_writer: asyncio.StreamWriter | None = None
        self.swallow_reply = False  # a forwarded COMMIT: drop its answer, then reset
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        try:
            server_reader, self.server_writer = await asyncio.open_connection(
                *self.proxy.upstream
            )
        except OSError:
            self.reset()
            return
        self.tasks = [
            asyncio.create_task(self._client_to_server()),
            asyncio.create_task(self._server_to_client(server_reader)),
        ]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.reset()

    async def _client_to_server(self) -> None:
        buffer = b""
        while True:
            data = await self.client_reader.read(65536)
            if not data:
                # The client closed: pass the FIN on (held while stalled, like a
                # partitioned network), so the server ends the session and rolls back
                # whatever transaction it left open.
                await self.proxy._flowing.wait()
                if self.server_writer is not None:
                    self.server_writer.close()
                return
            buffer += data
            out = b""
            # Forward whole packets, one at a time, so a COMMIT can be singled out.
            while len(buffer) >= 4:
                length = struct.unpack("<I", buffer[:3] + b"\0")[0]
                if len(buffer) < 4 + length:
                    break
                packet, buffer = buffer[: 4 + length], buffer[4 + length :]
                if self._is_commit(packet) and self.proxy.commits_to_break > 0:
                    self.proxy.commits_to_break -= 1
                    self.proxy.commits_broken += 1
                    await self._send_upstream(out)
                    out = b""
                    if self.proxy.break_forward:
                        self.swallow_reply = True
                        await self._send_upstream(packet)
                        return  # the answer comes back on the other task
                    self.reset()
                    return
                out += packet
            await self._send_upstream(out)

    def _is_commit(self, packet: bytes) -> bool:
        if len(packet) < 5 or packet[4] != COM_QUERY:
            return False
        if packet[5:].strip().upper() != b"COMMIT":
            return False
        self.proxy.commits_seen += 1
        return True

    async def _send_upstream(self, data: bytes) -> None:
        if not data or self.server_writer is None:
            return
        await self.proxy._flowing.wait()
        self.server_writer.write(data)
        await self.server_writer.drain()

    async def _server_to_client(self, server_reader: asyncio.StreamReader) -> None:
        while True:
            data = await server_reader.read(65536)
            if not data:
                await self.proxy._flowing.wait()
                self.client_writer.close()
                return
            if self.swallow_reply:
                self.reset()  # the server committed; the client never hears of it
                return
            await self.proxy._flowing.wait()
            self.client_writer.write(data)
            await self.client_writer.drain()

    def reset(self) -> None:
        """Abort both sides: the client gets a RST, not a clean FIN."""
        if self.closed:
            return
        self.closed = True
        self.proxy.resets += 1
        _abort(self.client_writer)
        if self.server_writer is not None:
            _abort(self.server_writer)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy._links.discard(self)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 3306)) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections = 0  # accepted since start
        self.resets = 0
        self.commits_seen = 0
        self.commits_broken = 0
        self.commits_to_break = 0
        self.break_forward = True
        self._cut = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, mysql_url: str) -> str:
        """``mysql_url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(mysql_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(self, reader, writer)
        if self._cut:
            link.reset()
            return
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await link.run()
        finally:
            self._handlers.discard(task)

    # -- faults ----------------------------------------------------------------

    def cut(self) -> None:
        """The database is gone: reset every connection, now and on accept."""
        self._cut = True
        self.reset_all()

    def stall(self) -> None:
        """Hold every byte, both ways, on old and new connections."""
        self._flowing.clear()

    def restore(self) -> None:
        self._cut = False
        self._flowing.set()

    def reset_all(self) -> None:
        for link in list(self._links):
            link.reset()

    def reset_next_commits(self, count: int, *, forward: bool = True) -> None:
        self.commits_to_break = count
        self.break_forward = forward

    async def close(self) -> None:
        self.restore()
        if self._server is not None:
            self._server.close()
        self.reset_all()  # each handler ends once its link is reset
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
