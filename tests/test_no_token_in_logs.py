"""No whole token in any log or error body (issue 9): the real ``glowing-fiesta run``
(collector + HTTP service), debug logs in text and in JSON, lines and requests with
valid, revoked, unknown and typo'd tokens; then every token used is searched for in
the whole log output and in every HTTP answer."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import aiohttp
import pytest

from protocol.tokens import display_prefix, generate_token
from tests.daemon import DaemonProcess, create_key, run_cli

TOKEN = re.compile(r"gf_[0-9A-Za-z]{32}")


def lines_for(valid: str, revoked: str, unknown: str, read_only: str) -> list[bytes]:
    """Every way a line can carry (or nearly carry) a token, good and bad."""
    lines = []
    for token in (valid, revoked, unknown, read_only):
        lines += [
            f"{token}.web.hits:1|c",  # good for the valid key only
            f"{token}web.hits:1|c",  # the missing-dot typo
            f"{token}.web.hits:abc|c",  # bad value
            f"{token}.bad..name:1|c",  # bad name
            f"{token}.web.hits:1|s",  # unknown type
            f"{token}.web.hits:1|c|@2",  # bad rate
            f"{token}.web.hits:1|c|T1",  # bad timestamp
            f"{token}.web.hits:1|ms",  # kind conflict (web.hits is a counter)
            f"{token}.web.hits:+1|g",  # unsupported
            f"{token}.web.hits:1|c|zz",  # unknown field
            f"{token}.web.hits",  # no value
            f"{token}",  # a token alone
            f"x{token}.y:1|c",  # a token inside a name
            f"{token}.{token}.z:1|c",  # twice
            f"{token}x.web.hits:1|c",  # one character too many
        ]
    return [line.encode() for line in lines]


async def requests(base: str, valid: str, revoked: str, unknown: str,
                   read_only: str) -> list[str]:
    """HTTP calls with every kind of token; returns the body of every error answer.

    (Not the successful ones: ``GET /api/metrics`` lists the names that were stored,
    and names that embed a token are the parser's and the ingest's to refuse.)"""
    bodies: list[str] = []
    headers_for = [valid, revoked, unknown, read_only, valid + "x", valid[:-1],
                   "Bearer " + valid, valid.lower(), " " + revoked]
    async with aiohttp.ClientSession() as session:
        for key in headers_for:
            for method, path, body in [
                ("POST", "/api/metrics/counter", {"metric": "http.hits", "value": 1}),
                ("POST", "/api/metrics/counter", {"metric": f"{valid}web.hits"}),
                ("POST", "/api/metrics/value", {"metric": f"{key}.v", "value": "nan"}),
                ("POST", "/api/metrics/batch", {"points": [
                    {"metric": f"{valid}.a", "type": "counter", "value": 1},
                    {"metric": "b..c", "type": "gauge", "value": key}]}),
                ("GET", "/api/metrics", None),
                ("GET", f"/api/metrics/{valid}web.hits", None),
                ("GET", f"/api/metrics/{key}", None),
                ("GET", f"/api/metrics/http.hits?from={key}", None),
                ("GET", "/api/metrics/http.hits?interval=7m", None),
            ]:
                async with session.request(method, base + path, json=body,
                                           headers={"X-API-Key": key}) as response:
                    if response.status >= 400:
                        bodies.append(await response.text())
            async with session.post(base + "/api/metrics/counter", data=f"{{{key}",
                                    headers={"X-API-Key": key,
                                             "Content-Type": "application/json"}) as response:
                assert response.status >= 400
                bodies.append(await response.text())
    return bodies


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_whole_token_in_logs_or_errors(
    tmp_path: Path, daemons: list[DaemonProcess], log_format: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'metrics.db'}"
    valid = await create_key(database_url, "valid")
    revoked = await create_key(database_url, "revoked")
    read_only = await create_key(database_url, "reader", "--scopes", "read")
    status, _out, err = await run_cli("keys", "revoke", "revoked", "--database-url",
                                      database_url)
    assert status == 0, err
    unknown = generate_token()
    daemon = await DaemonProcess.start(
        "run", "--database-url", database_url, "--state-dir", str(tmp_path / "state"),
        "--udp-port", "0", "--tcp-port", "0", "--http-port", "0", "--admin-port", "0",
        "--flush-interval", "0.1", "--log-level", "debug", "--log-format", log_format,
        "--max-line-length", "256",
    )
    daemons.append(daemon)
    lines = lines_for(valid, revoked, unknown, read_only)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"{valid}.web.hits:1|c".encode(), daemon.udp)  # kind fixed first
        sock.sendto(b"\n".join(lines), daemon.udp)
        for line in lines:  # one per datagram too: each its own drop log sample
            sock.sendto(line, daemon.udp)
    for line in lines:  # over TCP: one connection per line, the last one over-long
        reader, writer = await asyncio.open_connection(*daemon.tcp)
        writer.write(line + b"\n" + (line * 20)[:300] + b"\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed: over-long
        writer.close()
        await writer.wait_closed()
    bodies = await requests(daemon.base_url, valid, revoked, unknown, read_only)
    assert await daemon.stop() == 0, daemon.transcript()

    tokens = [valid, revoked, unknown, read_only, valid[:-1] + "Q"]
    log = "\n".join(daemon.log)
    assert "dropped" in log and "bad_key" in log  # the drops were logged, with samples
    assert display_prefix(valid) in log  # redacted to the display prefix, not hidden
    assert len(bodies) > 50
    for token in tokens:
        assert token not in log, f"a whole token in the log:\n{_around(log, token)}"
        for body in bodies:
            assert token not in body, f"a whole token in an HTTP answer: {body[:300]}"
    # Nothing token-shaped either (a typo'd or one-off token is a secret too).
    assert TOKEN.search(log) is None, _around(log, TOKEN.search(log).group())  # type: ignore[union-attr]


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    return text[start : end if end >= 0 else None]


def test_redaction_keeps_the_display_prefix_and_cuts_every_token_shaped_run() -> None:
    from protocol.tokens import redact_tokens, redact_tokens_bytes

    token = generate_token()
    text = f"{token}.a x{token}web {token}{token[3:]}"
    redacted = redact_tokens(text)
    assert token not in redacted and TOKEN.search(redacted) is None
    assert redacted.startswith(display_prefix(token) + "....a x" + display_prefix(token))
    raw = redact_tokens_bytes(text.encode())
    assert raw.decode() == redacted
    assert redact_tokens("gf_short.name and gf_") == "gf_short.name and gf_"
