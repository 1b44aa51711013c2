"""A real local webhook receiver (aiohttp on 127.0.0.1:0) for the alert tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from protocol.alerts import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Delivery:
    body: bytes
    signature: str
    key: str

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed_with(self, secret: str) -> bool:
        return verify(secret, self.body, self.signature)


@dataclass
class Receiver:
    """Records every POST to /hook; answers ``status`` (503 to play a broken receiver)."""

    status: int = 200
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    attempt_keys: list[str] = field(default_factory=list)  # every request's key, answered or not
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.attempt_keys.append(request.headers.get(IDEMPOTENCY_HEADER, ""))
        body = await request.read()
        if self.status != 200:
            return web.Response(status=self.status)
        self.deliveries.append(Delivery(body, request.headers.get(SIGNATURE_HEADER, ""),
                                        request.headers.get(IDEMPOTENCY_HEADER, "")))
        return web.json_response({"ok": True})

    def states(self) -> list[tuple[str, str]]:
        return [(d.payload["metric"], d.payload["state"]) for d in self.deliveries]
