"""The dashboard's server side over real HTTP: pages and assets with their CSP and
cache headers, login with a read key into an HttpOnly SameSite=Strict cookie that the
guard accepts for GET read routes only, logout, the first-run one-time login, and the
`run` process printing its link on loopback only. The page itself: test_dashboard_browser.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from glowing_fiesta.config import Config
from glowing_fiesta.runner import _first_run_code
from query.app import make_app
from query.config import HttpConfig
from query.dashboard import (
    ASSET_CACHE,
    CSP,
    DASHBOARD_KEY_NAME,
    FIRST_RUN,
    UPLOT_VERSION,
    WEB,
    FirstRunLogin,
    first_run_code,
)
from store import Store
from tests.daemon import DaemonProcess
from tests.http_support import TEST_CONFIG, assert_error, auth, config, new_key, serve

JSON_HEADERS = {"Content-Type": "application/json"}


class Page(HTMLParser):
    """The scripts, stylesheets and inline content of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.inline: list[str] = []  # what a strict CSP would block
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if "style" in named or any(name.startswith("on") for name in named):
            self.inline.append(f"<{tag}> attribute")
        if tag == "script":
            assert named.get("src"), "inline script"
            self.scripts.append(str(named["src"]))
        if tag == "link":
            self.links.append(str(named["href"]))
        if tag == "style":
            self.inline.append("<style>")
        self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline.append("script body")


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def assert_strict_csp(headers: object) -> None:
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    assert csp == CSP
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]


async def login(client: object, token: str) -> object:
    response = await client.post("/login", json={"key": token})  # type: ignore[attr-defined]
    return response


async def test_pages_and_assets_carry_csp_and_cache_headers(store: Store) -> None:
    async with serve(store) as client:
        page = await client.get("/login")
        assert page.status == 200 and page.content_type == "text/html"
        assert_strict_csp(page.headers)
        assert page.headers["Cache-Control"] == "no-cache"
        parsed = parse(await page.text())
        assert parsed.inline == []
        assets = parsed.scripts + parsed.links
        assert len(assets) == 3  # login.js, style.css, favicon.svg
        for url in assets:
            assert re.fullmatch(r"/static/[A-Za-z0-9_.-]+\.[0-9a-f]{8}\.(js|css|svg)", url), url
            asset = await client.get(url)
            assert asset.status == 200, url
            assert asset.headers["Cache-Control"] == ASSET_CACHE
            assert_strict_csp(asset.headers)
            # Content-hashed names: the name changes whenever the bytes do.
            body = await asset.read()
            assert url.rsplit(".", 2)[1] == hashlib.sha256(body).hexdigest()[:8]
            again = await client.get(url, headers={"If-None-Match": asset.headers["ETag"]})
            assert again.status == 304 and await again.read() == b""

        missing = await client.get("/static/app.00000000.js")
        assert missing.status == 404
        assert_error(await missing.json(), "not_found")
        traversal = await client.get("/static/..%2Fdashboard.py")
        assert traversal.status == 404


async def test_index_redirects_to_login_without_a_session_unless_linked_from_elsewhere(
    store: Store,
) -> None:
    async with serve(store) as client:
        response = await client.get("/", allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"] == "/login"
        # From another site the browser withholds the SameSite=Strict cookie, so its
        # absence proves nothing: the page is served and its API calls decide.
        linked = await client.get("/", headers={"Sec-Fetch-Site": "cross-site"},
                                  allow_redirects=False)
        assert linked.status == 200 and linked.content_type == "text/html"


async def test_assets_are_gzipped_when_asked_and_uplot_is_the_vendored_version(
    store: Store,
) -> None:
    token = await new_key(store, scopes=("read",))
    async with serve(store) as client:
        assert (await login(client, token)).status == 200  # type: ignore[attr-defined]
        index = await client.get("/")
        assert index.status == 200
        assert_strict_csp(index.headers)
        parsed = parse(await index.text())
        assert parsed.inline == []
        [uplot] = [s for s in parsed.scripts if "uPlot.iife.min" in s]
        plain = await client.get(uplot, headers={"Accept-Encoding": "identity"})
        body = await plain.read()
        assert "Content-Encoding" not in plain.headers
        assert body == (WEB / "vendor" / "uplot" / "uPlot.iife.min.js").read_bytes()
        assert body.startswith(f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */"
                               .encode())
        packed = await client.get(uplot, headers={"Accept-Encoding": "gzip"})
        assert packed.headers["Content-Encoding"] == "gzip"
        assert await packed.read() == body  # the client decompressed it
        assert int(packed.headers["Content-Length"]) < len(body) / 2
    version_note = (WEB / "vendor" / "uplot" / "VERSION.md").read_text()
    assert f"uplot@{UPLOT_VERSION}" in version_note
    assert "MIT License" in (WEB / "vendor" / "uplot" / "LICENSE").read_text()


async def test_login_sets_an_httponly_strict_cookie_the_read_routes_accept(
    store: Store,
) -> None:
    token = await new_key(store, scopes=("read", "write"))
    async with serve(store) as client:
        no_session = await client.get("/api/metrics")
        assert no_session.status == 401
        response = await login(client, token)
        assert response.status == 200  # type: ignore[attr-defined]
        body = await response.json()  # type: ignore[attr-defined]
        assert body == {"logged_in": True, "key": token[:8]}
        cookie = response.headers["Set-Cookie"]  # type: ignore[attr-defined]
        assert cookie.startswith(f"gf_session={token};")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "SameSite=Strict" in cookie and "Path=/" in cookie
        assert response.headers["Cache-Control"] == "no-store"  # type: ignore[attr-defined]

        # The cookie (kept by the client's jar) is the key of GET read routes ...
        listed = await client.get("/api/metrics")
        assert listed.status == 200
        assert "X-RateLimit-Limit" in listed.headers
        missing = await client.get("/api/metrics/no.such.metric")
        assert missing.status == 404
        # ... and of nothing else: ingest needs the header, even for a write key.
        ingest = await client.post("/api/metrics/counter", json={"metric": "a.b"})
        assert ingest.status == 401
        assert_error(await ingest.json(), "unauthorized")
        assert (await client.post("/api/metrics/counter", json={"metric": "a.b"},
                                  headers=auth(token))).status == 200


async def test_login_refuses_bad_keys_bodies_and_cross_origin_posts(store: Store) -> None:
    write_only = await new_key(store, scopes=("write",))
    revoked = await new_key(store, scopes=("read",), name="gone")
    await store.revoke_key("gone", 1)
    reader = await new_key(store, scopes=("read",))
    async with serve(store) as client:
        for token, status, code in ((write_only, 403, "forbidden"),
                                    (revoked, 401, "unauthorized"),
                                    ("gf_" + "x" * 32, 401, "unauthorized"),
                                    ("not a key", 401, "unauthorized")):
            response = await login(client, token)
            assert response.status == status, token  # type: ignore[attr-defined]
            assert_error(await response.json(), code)  # type: ignore[attr-defined]
            assert "Set-Cookie" not in response.headers  # type: ignore[attr-defined]
        for data, headers, status in (
            (b"key=" + reader.encode(), {"Content-Type": "application/x-www-form-urlencoded"},
             415),
            (b"{", JSON_HEADERS, 400),
            (b'{"key": 1}', JSON_HEADERS, 422),
            (b'{"key": "a", "code": "b"}', JSON_HEADERS, 422),
            (b'{"key": "' + b"x" * 5000 + b'"}', JSON_HEADERS, 413),
        ):
            response = await client.post("/login", data=data, headers=headers)
            assert response.status == status, data[:20]
            assert "Set-Cookie" not in response.headers
        # Login CSRF: another site's page must not log this browser in with its key.
        host = client.make_url("").host
        port = client.make_url("").port
        for headers in ({"Origin": "https://evil.example"},
                        {"Origin": f"http://{host}.evil.example:{port}"},
                        {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            response = await client.post("/login", json={"key": reader}, headers=headers)
            assert response.status == 403, headers
            assert "Set-Cookie" not in response.headers
        same = await client.post("/login", json={"key": reader},
                                 headers={"Origin": str(client.make_url("")).rstrip("/"),
                                          "Sec-Fetch-Site": "same-origin"})
        assert same.status == 200
        # Behind a TLS-terminating proxy the browser's origin is https, ours http.
        proxied = await client.post("/login", json={"key": reader},
                                    headers={"Origin": f"https://{host}:{port}"})
        assert proxied.status == 200


async def test_logout_clears_the_cookie(store: Store) -> None:
    token = await new_key(store, scopes=("read",))
    async with serve(store) as client:
        await login(client, token)
        assert (await client.get("/api/metrics")).status == 200
        out = await client.post("/logout")
        assert out.status == 200
        cookie = out.headers["Set-Cookie"]
        assert cookie.startswith('gf_session="";') and "Max-Age=0" in cookie
        assert (await client.get("/api/metrics")).status == 401
        assert (await client.get("/", allow_redirects=False)).status == 303


async def test_a_revoked_key_ends_its_session(store: Store) -> None:
    token = await new_key(store, scopes=("read",), name="session")
    async with serve(store, config(key_cache_ttl=0)) as client:
        await login(client, token)
        assert (await client.get("/api/metrics")).status == 200
        await store.revoke_key("session", 2)
        assert (await client.get("/api/metrics")).status == 401


async def test_first_run_code_logs_in_once_and_creates_a_read_key(store: Store) -> None:
    code = await first_run_code(store)
    assert code is not None and len(code) >= 32
    app = make_app(TEST_CONFIG, store)
    app[FIRST_RUN] = FirstRunLogin(code)  # as glowing_fiesta.runner.start_http does
    async with TestServer(app) as server, TestClient(server) as client:
        # the last character changed (to one it is not: a code may end in "x")
        wrong_code = code[:-1] + ("y" if code.endswith("x") else "x")
        wrong = await client.post("/login", json={"code": wrong_code})
        assert wrong.status == 401
        response = await client.post("/login", json={"code": code})
        assert response.status == 200
        token = response.cookies["gf_session"].value
        assert (await client.get("/api/metrics")).status == 200
        again = await client.post("/login", json={"code": code})
        assert again.status == 401  # one use
        assert "earlier run" in (await again.json())["error"]["message"]
    [key] = [k for k in await store.list_keys() if k.name == DASHBOARD_KEY_NAME]
    assert key.scopes == ("read",)
    assert key.key_hash == hashlib.sha256(token.encode()).hexdigest()
    # Now that the dashboard key exists, no new first-run code (until it is revoked).
    assert await first_run_code(store) is None
    await store.revoke_key(DASHBOARD_KEY_NAME, 3)
    assert await first_run_code(store) is not None


async def test_no_first_run_code_without_one_or_off_loopback(sqlite_store: Store) -> None:
    async with serve(sqlite_store) as client:
        response = await client.post("/login", json={"code": "anything"})
        assert response.status == 401
    for host in ("0.0.0.0", "192.0.2.1", "::", "example.com"):
        off = Config(http=HttpConfig(host=host))
        assert await _first_run_code(off, sqlite_store, True) is None, host
    loopback = Config(http=HttpConfig(host="127.0.0.1"))
    assert await _first_run_code(loopback, sqlite_store, True) is not None
    assert await _first_run_code(loopback, sqlite_store, False) is None  # database down


def test_first_run_login_is_single_use() -> None:
    first = FirstRunLogin("secret-code")
    assert not first.take("secret-cod")
    assert not first.take("")
    assert first.take("secret-code")
    assert not first.take("secret-code")


@pytest.mark.slow
async def test_run_prints_a_one_time_link_on_first_start_only(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    args = ("run", "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}", "--state-dir",
            str(tmp_path / "state"), "--udp-port", "0", "--tcp-port", "0", "--http-port", "0")
    first = await DaemonProcess.start(*args, cwd=tmp_path)
    daemons.append(first)
    [link] = [line for line in first.log if "/login#code=" in line]
    match = re.search(r"(http://127\.0\.0\.1:(\d+)/login)#code=([A-Za-z0-9_-]+)$", link)
    assert match, link
    assert int(match.group(2)) == first.ports["HTTP"]
    code = match.group(3)
    # unsafe=True: keep cookies of an IP address (127.0.0.1), as browsers do
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(first.base_url + "/login", json={"code": code}) as response:
            assert response.status == 200
            token = response.cookies["gf_session"].value
        async with session.get(first.base_url + "/api/metrics") as listed:
            assert listed.status == 200
    await first.wait_for_log(r"created read key 'dashboard' \(gf_")
    assert await first.stop() == 0
    # The code (a credential) and the key appear nowhere but on the link line.
    others = [line for line in first.log if line != link]
    assert not any(code in line or token in line for line in others)
    assert token[:8] in "\n".join(others)

    second = await DaemonProcess.start(*args, cwd=tmp_path)
    daemons.append(second)
    assert not any("/login#code=" in line for line in second.log)
    assert await second.stop() == 0


def test_docs_describe_the_routes_cookie_headers_and_uplot_version() -> None:
    from query.auth import SESSION_COOKIE
    from query.dashboard import ROUTES, SECURITY_HEADERS

    docs = (Path(__file__).resolve().parent.parent / "docs" / "dashboard.md").read_text()
    for method, path, *_ in ROUTES:
        assert f"`{method} {path}`" in docs, path
    assert f"`{SESSION_COOKIE}`" in docs
    flat = " ".join(docs.split())
    for name, value in SECURITY_HEADERS.items():
        assert f"{name}: {value}" in flat, name
    assert f"uPlot](https://github.com/leeoniya/uPlot) {UPLOT_VERSION}" in docs
    assert f"npm pack uplot@{UPLOT_VERSION}" in docs


def test_a_missing_browser_skips_or_fails_under_require_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import browser

    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("GF_TEST_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception), browser.chromium(tmp_path / "profile"):
        pass
    monkeypatch.setenv("GF_TEST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="GF_TEST_REQUIRE_SERVICES=1"), \
            browser.chromium(tmp_path / "profile"):
        pass
