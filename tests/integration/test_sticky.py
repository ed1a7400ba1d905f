"""Sticky sessions through the real proxy: in-process upstream servers (from test_ingress) for a
stable and a canary revision, httpx clients that keep (or drop) their cookies, and a raw socket
to check that the added ``Set-Cookie`` leaves every response framing and keep-alive intact."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration import test_ingress as base
from tests.integration.test_ingress import WAIT, Factory, Upstream, client
from warren.ingress import Ingress
from warren.ports import Pin, Route

pytestmark = pytest.mark.integration

# The fixtures of test_ingress, the autouse check that nothing was logged at ERROR included.
ingress = base.ingress
make_ingress = base.make_ingress
upstream = base.upstream
no_errors_logged = base.no_errors_logged

NAME = "warren-revision"
REVISION = {"stable": 1, "canary": 2}


def set_cookie(revision: int) -> str:
    return f"{NAME}={revision}; Path=/; HttpOnly; SameSite=Lax"


def route(
    stable: Upstream,
    canary: Upstream,
    weights: tuple[tuple[int, int], ...] = ((1, 50), (2, 50)),
    sticky: str | None = NAME,
    pins: tuple[Pin, ...] = (),
) -> dict[str, Route]:
    endpoints = (stable.endpoint(1), canary.endpoint(2))
    return {
        "web": Route(
            "web",
            host="web.test",
            endpoints=endpoints,
            weights=weights,
            pins=pins,
            sticky_cookie=sticky,
        )
    }


async def ups(upstream: Factory) -> tuple[Upstream, Upstream]:
    return await upstream("stable"), await upstream("canary")


async def get(c: httpx.AsyncClient, cookie: int | None = None, **headers: str) -> tuple[int, str]:
    """One request from a client that sends ``cookie`` (None: no sticky cookie) and keeps none:
    (the revision that answered, the Set-Cookie it got, or "")."""
    c.cookies.clear()
    if cookie is not None:
        headers["Cookie"] = f"{NAME}={cookie}"
    r = await c.get("/", headers=headers)
    assert r.status_code == 200
    return REVISION[r.json()["name"]], r.headers.get("set-cookie", "")


async def test_a_client_that_keeps_its_cookie_stays_on_its_revision(
    ingress: Ingress, upstream: Factory
) -> None:
    await ingress.update(route(*await ups(upstream)))
    first: list[int] = []
    for _ in range(6):
        # httpx keeps the cookie in its jar, as a browser does.
        async with client(ingress) as c:
            r = await c.get("/")
            revision = REVISION[r.json()["name"]]
            assert r.headers["set-cookie"] == set_cookie(revision)
            first.append(revision)
            for _ in range(50):
                r = await c.get("/")
                assert REVISION[r.json()["name"]] == revision
                assert "set-cookie" not in r.headers
    assert Counter(first) == {1: 3, 2: 3}  # new clients still alternate at 50/50


async def test_clients_without_cookies_split_exactly(ingress: Ingress, upstream: Factory) -> None:
    await ingress.update(route(*await ups(upstream), weights=((1, 90), (2, 10))))
    async with client(ingress) as c:
        fresh = []
        for i in range(200):
            if i % 2:
                # A sticky canary client between two new ones takes no new client's turn.
                assert await get(c, 2) == (2, "")
            else:
                revision, cookie = await get(c)
                assert cookie == set_cookie(revision)
                fresh.append(revision)
    assert Counter(fresh) == {1: 90, 2: 10}


async def test_weight_zero_moves_the_client_and_promotion_drops_the_cookie(
    ingress: Ingress, upstream: Factory
) -> None:
    stable, canary = await ups(upstream)
    await ingress.update(route(stable, canary))
    async with client(ingress) as c:
        assert await get(c, 2) == (2, "")
        assert await get(c, 1) == (1, "")
        # The canary fails: weight 0, and its sticky clients are moved with a new cookie.
        await ingress.update(route(stable, canary, weights=((1, 100), (2, 0))))
        assert await get(c, 2) == (1, set_cookie(1))
        assert await get(c, 1) == (1, "")
        # A cookie naming a revision the route does not weight is ignored the same way.
        assert await get(c, 7) == (1, set_cookie(1))
        # Promoted: no weights and no sticky cookie; a leftover cookie means nothing.
        promoted = {"web": Route("web", host="web.test", endpoints=(canary.endpoint(2),))}
        await ingress.update(promoted)
        assert [await get(c, 1) for _ in range(3)] == [(2, "")] * 3


async def test_pins_beat_the_cookie(ingress: Ingress, upstream: Factory) -> None:
    pins = (Pin(2, header="X-Warren-Preview"), Pin(1, cookie="group", value="a"))
    await ingress.update(route(*await ups(upstream), weights=((1, 100), (2, 0)), pins=pins))
    async with client(ingress) as c:
        for _ in range(5):
            assert await get(c, 1, **{"X-Warren-Preview": "1"}) == (2, "")
        c.cookies.clear()
        r = await c.get("/", headers={"Cookie": f"{NAME}=2; group=a"})
        assert (r.json()["name"], r.headers.get("set-cookie")) == ("stable", None)
        assert await get(c) == (1, set_cookie(1))  # no pin: the weights, and a cookie


# ── framings, on one raw keep-alive connection ───────────────────────────────────────────────────


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, list[tuple[str, str]], bytes]:
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        ]
        found = dict(headers)
        if head_only or status in (204, 304):
            return status, headers, b""
        if "content-length" in found:
            return status, headers, await reader.readexactly(int(found["content-length"]))
        if found.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(await reader.readuntil(b"\r\n"), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readexactly(2)  # the empty trailer section
            return status, headers, body
        return status, headers, await reader.read()


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(WAIT):
                await writer.wait_closed()


@pytest.mark.parametrize(
    ("method", "path", "version", "status", "body"),
    [
        ("GET", "/chunked", "1.1", 200, b"hello world"),
        ("GET", "/nocontent", "1.1", 204, b""),
        ("HEAD", "/", "1.1", 200, b""),
        ("GET", "/early", "1.1", 200, b"ok"),
        ("GET", "/close", "1.1", 200, b"bye"),
        ("GET", "/until-close", "1.1", 200, b"until the end"),
        ("GET", "/", "1.0", 200, None),
    ],
)
async def test_set_cookie_keeps_framing_and_keep_alive(
    ingress: Ingress,
    upstream: Factory,
    method: str,
    path: str,
    version: str,
    status: int,
    body: bytes | None,
) -> None:
    await ingress.update(route(*await ups(upstream), weights=((1, 100), (2, 0))))
    assert ingress.shared_port is not None
    async with raw(ingress.shared_port) as (reader, writer):
        # The framing under test, then a Content-Length response on the same client connection
        # (kept even when the upstream closed its own), each with its one Set-Cookie.
        keep = "Connection: keep-alive\r\n" if version == "1.0" else ""
        writer.write(f"{method} {path} HTTP/{version}\r\nHost: web.test\r\n{keep}\r\n".encode())
        got, headers, content = await read_response(reader, head_only=method == "HEAD")
        assert got == status
        assert [v for n, v in headers if n == "set-cookie"] == [set_cookie(1)]
        if body is not None:
            assert content == body
        if path == "/until-close":
            # The body ended with the connection: the client was told, and read all of it.
            assert ("connection", "close") in headers
            return
        writer.write(f"GET /after HTTP/{version}\r\nHost: web.test\r\n{keep}\r\n".encode())
        got, headers, content = await read_response(reader)
        assert got == 200 and b'"/after"' in content
        assert [v for n, v in headers if n == "set-cookie"] == [set_cookie(1)]


async def test_a_sticky_request_on_a_route_without_sticky_sets_nothing(
    ingress: Ingress, upstream: Factory
) -> None:
    await ingress.update(route(*await ups(upstream), sticky=None))
    async with client(ingress) as c:
        answers = [await get(c, 2) for _ in range(10)]
    assert Counter(answers) == {(1, ""): 5, (2, ""): 5}  # the weights alone
