"""The data plane contract: one suite, both data planes — Warren's built-in ingress, and a real
HAProxy driven through its Runtime API (``warren.haproxy``). Real sockets: in-process upstream
servers (``tests.integration.test_ingress.Upstream``) and httpx as the client.

What a release needs of its data plane: weights that give each revision its share, a change
in effect for the next request; pins (preview, header routes) and sticky cookies; hosts and
path prefixes on the shared port; a drain that sends nothing new and waits for what is in
flight, and a 504 — never a 502 — for a request that outlives it; counters per revision."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_ingress import Factory, free_port, upstream
from warren.haproxy import HaproxyIngress
from warren.ingress import Ingress
from warren.ports import DataPlane, Endpoint, Pin, Route, RouteStats

pytestmark = pytest.mark.integration

WAIT = 5.0
"""Upper bound of every wait in these tests."""

PLANES = ["builtin", "haproxy"]

__all__ = ["upstream"]  # the upstream servers' fixture, the built-in ingress's tests' own


class Plane:
    """One data plane under test, with what the tests ask of either."""

    def __init__(self, kind: str, plane: Ingress | HaproxyIngress) -> None:
        self.kind = kind
        self.plane = plane

    @property
    def dp(self) -> DataPlane:
        return self.plane

    @property
    def shared_port(self) -> int:
        port = self.plane.shared_port
        assert port is not None
        return port

    def client(self, host: str = "web.test", port: int | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port or self.shared_port}",
            headers={"Host": host},
            trust_env=False,
            timeout=WAIT,
        )

    async def counted(self, service: str, revision: int, requests: int) -> RouteStats:
        """The revision's counters once they show ``requests`` (HAProxy's log lines arrive a
        moment after the answers)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            if isinstance(self.plane, HaproxyIngress):
                await self.plane.refresh()
            stats = self.plane.revision_stats().get((service, revision))
            if (stats is not None and stats.requests >= requests) or loop.time() > deadline:
                assert stats is not None, f"no counters for {service} revision {revision}"
                return stats
            await asyncio.sleep(0.02)


@pytest.fixture(params=PLANES)
async def plane(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Plane]:
    kind: str = request.param
    made: Ingress | HaproxyIngress
    if kind == "builtin":
        made = Ingress(shared_port=0, connect_timeout=1.0, response_timeout=WAIT)
    else:
        made = HaproxyIngress(tmp_path / "haproxy", shared_port=0, stop_after=2.0)
    await made.start()
    try:
        yield Plane(kind, made)
    finally:
        await made.close()


def web(*endpoints: Endpoint, **kwargs: Any) -> dict[str, Route | None]:
    kwargs.setdefault("host", "web.test")
    return {"web": Route("web", endpoints=endpoints, **kwargs)}


async def names(c: httpx.AsyncClient, n: int, path: str = "/", **kwargs: Any) -> list[str]:
    found = []
    for _ in range(n):
        r = await c.get(path, **kwargs)
        assert r.status_code == 200, r.text
        found.append(r.json()["name"])
    return found


# ── weights ──────────────────────────────────────────────────────────────────────────────────────


async def test_without_weights_every_endpoint_gets_an_equal_share(
    plane: Plane, upstream: Factory
) -> None:
    ups = [await upstream(n) for n in "abc"]
    await plane.dp.update(web(*(u.endpoint() for u in ups)))
    async with plane.client() as c:
        seen = collections.Counter(await names(c, 30))
    assert seen == {"a": 10, "b": 10, "c": 10}


@pytest.mark.parametrize(
    ("weights", "stable", "canary"), [((90, 10), 2, 1), ((50, 50), 3, 1), ((75, 25), 1, 2)]
)
async def test_each_revision_gets_its_share_whatever_its_endpoints(
    plane: Plane,
    upstream: Factory,
    weights: tuple[int, int],
    stable: int,
    canary: int,
) -> None:
    old = [await upstream(f"old{i}") for i in range(stable)]
    new = [await upstream(f"new{i}") for i in range(canary)]
    endpoints = [u.endpoint(1) for u in old] + [u.endpoint(2) for u in new]
    await plane.dp.update(web(*endpoints, weights=((1, weights[0]), (2, weights[1]))))
    async with plane.client() as c:
        seen = collections.Counter(n[:3] for n in await names(c, 200))
    # Exact to one request: HAProxy's smooth round robin starts its cycle again at a change
    # (the built-in ingress is exact over any 100 requests: tests/integration/test_ingress.py).
    assert abs(seen["new"] - 2 * weights[1]) <= 1, seen
    assert seen["old"] + seen["new"] == 200


async def test_a_weight_change_is_in_effect_for_the_next_request(
    plane: Plane, upstream: Factory
) -> None:
    blue, green = await upstream("blue"), await upstream("green")
    endpoints = (blue.endpoint(1), green.endpoint(2))
    await plane.dp.update(web(*endpoints, weights=((1, 100), (2, 0))))
    async with plane.client() as c:
        assert set(await names(c, 10)) == {"blue"}
        await plane.dp.update(web(*endpoints, weights=((1, 0), (2, 100))))
        assert set(await names(c, 10)) == {"green"}
        await plane.dp.update(web(*endpoints, weights=((1, 100), (2, 0))))
        assert set(await names(c, 10)) == {"blue"}


async def test_a_weighted_revision_without_a_ready_endpoint_leaves_its_share_to_the_others(
    plane: Plane, upstream: Factory
) -> None:
    old = await upstream("old")
    await plane.dp.update(web(old.endpoint(1), weights=((1, 90), (2, 10))))
    async with plane.client() as c:
        assert set(await names(c, 20)) == {"old"}


# ── pins and sticky cookies ──────────────────────────────────────────────────────────────────────


async def test_pins_send_matching_requests_to_their_revision(
    plane: Plane, upstream: Factory
) -> None:
    stable, preview = await upstream("stable"), await upstream("preview")
    pins = (
        Pin(2, header="X-Preview"),
        Pin(2, header="X-User", value="beta-", match="prefix"),
        Pin(2, header="User-Agent", value="Mobile.*Safari", match="regex"),
        Pin(2, cookie="group", value="b"),
        Pin(2, header="X-Region", value="eu", also=(Pin(0, header="X-Tier", value="gold"),)),
    )
    route = web(stable.endpoint(1), preview.endpoint(2), weights=((1, 100), (2, 0)), pins=pins)
    await plane.dp.update(route)
    async with plane.client() as c:
        pinned = [
            {"X-Preview": "1"},
            {"X-User": "beta-42"},
            {"User-Agent": "Mozilla (Mobile; iPhone) Safari/605"},
            {"Cookie": "a=1; group=b"},
            {"X-Region": "eu", "X-Tier": "gold"},
        ]
        for headers in pinned:
            assert await names(c, 2, headers=headers) == ["preview"] * 2, headers
        unpinned = [
            {},
            {"X-Preview": "0"},
            {"X-User": "alpha-beta-"},
            {"User-Agent": "Desktop Safari"},
            {"Cookie": "group=a"},
            {"X-Region": "eu"},
        ]
        for headers in unpinned:
            assert await names(c, 2, headers=headers) == ["stable"] * 2, headers


async def test_a_pinned_request_sets_no_sticky_cookie(plane: Plane, upstream: Factory) -> None:
    stable, preview = await upstream("stable"), await upstream("preview")
    route = web(
        stable.endpoint(1),
        preview.endpoint(2),
        weights=((1, 100), (2, 0)),
        pins=(Pin(2, header="X-Preview"),),
        sticky_cookie="warren-rev",
    )
    await plane.dp.update(route)
    async with plane.client() as c:
        r = await c.get("/", headers={"X-Preview": "1"})
        assert r.json()["name"] == "preview"
        assert "set-cookie" not in r.headers


async def test_a_sticky_client_stays_on_its_revision(plane: Plane, upstream: Factory) -> None:
    stable, canary = await upstream("stable"), await upstream("canary")
    endpoints = (stable.endpoint(1), canary.endpoint(2))
    await plane.dp.update(web(*endpoints, weights=((1, 50), (2, 50)), sticky_cookie="warren-rev"))
    async with plane.client() as first, plane.client() as second:
        r1, r2 = await first.get("/"), await second.get("/")
        assert {r1.json()["name"], r2.json()["name"]} == {"stable", "canary"}
        for c, r in ((first, r1), (second, r2)):
            revision = "1" if r.json()["name"] == "stable" else "2"
            cookie = r.headers["set-cookie"]
            assert cookie.startswith(f"warren-rev={revision}; Path=/"), cookie
            assert c.cookies.get("warren-rev") == revision
            # Every later request goes where the first did, and sets no cookie again.
            for _ in range(5):
                again = await c.get("/")
                assert again.json()["name"] == r.json()["name"]
                assert "set-cookie" not in again.headers
        # A cookie for a revision now at weight 0: the weights choose, and say so.
        await plane.dp.update(
            web(*endpoints, weights=((1, 100), (2, 0)), sticky_cookie="warren-rev")
        )
        for c in (first, second):
            r = await c.get("/")
            assert r.json()["name"] == "stable"


# ── hosts and paths ──────────────────────────────────────────────────────────────────────────────


async def test_hosts_and_path_prefixes_on_the_shared_port(plane: Plane, upstream: Factory) -> None:
    web_up, api_up, any_up = await upstream("web"), await upstream("api"), await upstream("any")
    await plane.dp.update(
        {
            "web": Route("web", host="Shop.Test", endpoints=(web_up.endpoint(),)),
            "api": Route("api", host="shop.test", paths=("/api",), endpoints=(api_up.endpoint(),)),
            "any": Route("any", host="*.example.com", endpoints=(any_up.endpoint(),)),
        }
    )
    expected = {
        ("shop.test", "/"): "web",
        ("SHOP.test:80", "/x"): "web",
        ("shop.test", "/api"): "api",
        ("shop.test", "/api/v1?q=1"): "api",
        ("shop.test", "/apis"): "web",
        ("a.b.example.com", "/"): "any",
    }
    for (host, path), name in expected.items():
        async with plane.client(host) as c:
            assert (await names(c, 1, path)) == [name], (host, path)
    async with plane.client("nowhere.test") as c:
        assert (await c.get("/")).status_code == 404
    await plane.dp.update({"api": None})
    async with plane.client("shop.test") as c:
        assert (await names(c, 1, "/api")) == ["web"]


async def test_a_published_port_serves_its_service(plane: Plane, upstream: Factory) -> None:
    a = await upstream("a")
    port = free_port()
    await plane.dp.update(web(a.endpoint(), ports=(port,)))
    async with plane.client(port=port) as c:
        assert await names(c, 2) == ["a", "a"]
    await plane.dp.update({"web": None})
    with pytest.raises(httpx.TransportError):
        async with plane.client(port=port) as c:
            await c.get("/")


# ── drain ────────────────────────────────────────────────────────────────────────────────────────


async def test_a_drained_endpoint_gets_nothing_new_and_its_requests_finish(
    plane: Plane, upstream: Factory
) -> None:
    a, b = await upstream("a"), await upstream("b")
    await plane.dp.update(web(a.endpoint(), b.endpoint()))
    async with plane.client() as slow_client, plane.client() as c:
        slow = asyncio.create_task(slow_client.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        drain = asyncio.create_task(plane.dp.drain(a.address, WAIT))
        await asyncio.sleep(0.2)
        assert set(await names(c, 6)) == {"b"}
        assert not drain.done()
        a.release.set()
        assert (await asyncio.wait_for(slow, WAIT)).status_code == 200
        assert await asyncio.wait_for(drain, WAIT) == 0
    assert [s.target for s in a.requests] == ["/slow"]


async def test_a_request_that_outlives_the_drain_gets_504_when_its_task_stops(
    plane: Plane, upstream: Factory
) -> None:
    a = await upstream("a")
    await plane.dp.update(web(a.endpoint()))
    async with plane.client() as c:
        slow = asyncio.create_task(c.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        assert await plane.dp.drain(a.address, 0.3) == 1
        a.die()  # what the agent does next: the task stops
        assert (await asyncio.wait_for(slow, WAIT)).status_code == 504
        async with plane.client() as other:
            assert (await other.get("/")).status_code == 503


# ── counters ─────────────────────────────────────────────────────────────────────────────────────


async def test_counters_per_revision_and_service(plane: Plane, upstream: Factory) -> None:
    old, new = await upstream("old"), await upstream("new")
    await plane.dp.update(web(old.endpoint(1), new.endpoint(2), weights=((1, 50), (2, 50))))
    async with plane.client() as c:
        statuses = collections.Counter()
        for _ in range(20):
            statuses[(await c.get("/fail")).status_code] += 1
        for _ in range(20):
            statuses[(await c.get("/")).status_code] += 1
    assert statuses == {500: 20, 200: 20}
    one, two = await plane.counted("web", 1, 20), await plane.counted("web", 2, 20)
    assert (one.requests, one.errors_5xx, two.requests, two.errors_5xx) == (20, 10, 20, 10)
    total = plane.dp.stats()["web"]
    assert (total.requests, total.errors_5xx) == (40, 20)
    assert sum(total.latency_counts) == 40


async def test_requests_in_flight_are_counted(plane: Plane, upstream: Factory) -> None:
    a = await upstream("a")
    await plane.dp.update(web(a.endpoint(1)))
    async with plane.client() as c:
        slow = asyncio.create_task(c.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        if isinstance(plane.plane, HaproxyIngress):
            await plane.plane.refresh()
        assert plane.dp.revision_stats()[("web", 1)].in_flight == 1
        a.release.set()
        assert (await asyncio.wait_for(slow, WAIT)).status_code == 200
    assert (await plane.counted("web", 1, 1)).in_flight == 0
