"""The web view's files as the API serves them: without a token (the page holds nothing of the
cluster), with a Content-Security-Policy that allows this server alone, ``/ui`` redirected to
``/ui/``; and shipped in the package, every one of them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx

from warren.api import ApiContext, create_app
from warren.api.webview import UI_DIR
from warren.clocks import FakeClock
from warren.store.cluster import ClusterStore
from warren.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]


def _client() -> httpx.AsyncClient:
    clock = FakeClock()
    app = create_app(ApiContext(cluster=ClusterStore(MemoryStore(clock), clock), token="secret"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_page_and_its_files_are_served_without_a_token() -> None:
    async with _client() as http:
        page = await http.get("/ui/")
        script = await http.get("/ui/app.js")
        style = await http.get("/ui/app.css")
        api = await http.get("/v1/services")
    assert page.status_code == 200 and "<title>Warren" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert api.status_code == 401  # the API itself still needs the token


async def test_ui_redirects_to_the_page() -> None:
    async with _client() as http:
        answer = await http.get("/ui")
    assert answer.status_code in (307, 308)
    assert answer.headers["location"].endswith("/ui/")


async def test_the_page_allows_this_server_alone_and_no_inline_script() -> None:
    async with _client() as http:
        for path in ("/ui/", "/ui/app.js", "/ui/app.css"):
            headers = (await http.get(path)).headers
            policy = headers["content-security-policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["x-content-type-options"] == "nosniff"
        missing = await http.get("/ui/nothing.js")
    assert missing.status_code == 404


def test_the_page_has_no_inline_script_or_handler() -> None:
    # What the policy would block: the page must not need it.
    html = (UI_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert " style=" not in html


def test_every_file_of_the_page_is_in_the_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["warren"]
    files = [p.relative_to(UI_DIR.parent).as_posix() for p in UI_DIR.rglob("*") if p.is_file()]
    assert {"ui/index.html", "ui/app.js", "ui/app.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
