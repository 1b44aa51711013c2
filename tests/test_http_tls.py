"""TLS through ``runner.start_http`` with a self-signed certificate made by the openssl
CLI, and the refusal of plain HTTP on a non-loopback address."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from glowing_fiesta.config import Config, ConfigError
from glowing_fiesta.runner import start_http
from query.config import HttpConfig
from store import Store
from tests.http_support import auth, new_key


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


async def test_https_with_a_self_signed_certificate(
    store: Store, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    config = Config(http=HttpConfig(port=0, tls_cert=cert, tls_key=key)).validate()
    token = await new_key(store)
    runner = await start_http(config, store)
    try:
        port = runner.addresses[0][1]
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=trust) as response:
                assert response.status == 200
                assert await response.json() == {
                    "status": "ok", "pending_batches": 0, "spool_batches": 0}
            async with session.post(f"https://127.0.0.1:{port}/api/metrics/counter",
                                    json={"metric": "tls.ok"}, headers=auth(token),
                                    ssl=trust) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):  # not trusted without the CA
                await session.get(f"https://127.0.0.1:{port}/healthz")
            with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
                await session.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        await runner.cleanup()


def test_plain_http_only_on_loopback_unless_allowed(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    Config(http=HttpConfig(host="127.0.0.1")).validate()
    Config(http=HttpConfig(host="::1")).validate()
    with pytest.raises(ConfigError, match="refusing plain HTTP"):
        Config(http=HttpConfig(host="0.0.0.0")).validate()
    Config(http=HttpConfig(host="0.0.0.0", allow_plain_http=True)).validate()
    Config(http=HttpConfig(host="0.0.0.0", tls_cert=cert, tls_key=key)).validate()
    with pytest.raises(ConfigError, match="go together"):
        Config(http=replace(HttpConfig(), tls_cert=cert)).validate()
