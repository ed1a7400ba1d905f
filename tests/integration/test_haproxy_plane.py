"""What only the HAProxy data plane has to do (the rest is the data plane contract,
tests/contract/test_data_plane.py): keep HAProxy running — started again when it dies, adopted
by the next ``warren ingress`` without a reload — report a port it cannot have without failing
the others, and say clearly when HAProxy is not installed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.test_ingress import Upstream, free_port
from warren.domain.errors import UnavailableError
from warren.haproxy import HaproxyIngress
from warren.haproxy import process as haproxy_process
from warren.ports import Endpoint, Pin, Route

pytestmark = pytest.mark.integration

WAIT = 10.0

Factory = Callable[..., Awaitable[HaproxyIngress]]


@pytest.fixture
async def make_plane(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[HaproxyIngress] = []

    async def make(**kwargs: object) -> HaproxyIngress:
        kwargs.setdefault("shared_port", 0)
        plane = HaproxyIngress(tmp_path / "haproxy", stop_after=2.0, **kwargs)  # type: ignore[arg-type]
        await plane.start()
        made.append(plane)
        return plane

    yield make
    for plane in reversed(made):
        await plane.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await Upstream("a").start()
    yield up
    await up.stop()


def master_pid(tmp_path: Path) -> int:
    return int(json.loads((tmp_path / "haproxy" / "haproxy.json").read_text())["pid"])


async def answered(port: int, host: str = "web.test") -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as c:
        return (await c.get(f"http://127.0.0.1:{port}/", headers={"Host": host})).status_code


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        try:
            if await check():
                return
        except httpx.TransportError:
            pass
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_killed_haproxy_is_started_again(
    make_plane: Factory, upstream: Upstream, tmp_path: Path
) -> None:
    plane = await make_plane()
    port = free_port()
    await plane.update({"web": Route("web", (port,), "web.test", (upstream.endpoint(),))})
    assert await answered(port) == 200
    first = master_pid(tmp_path)
    os.kill(first, signal.SIGKILL)
    await until(lambda: _serves_again(tmp_path, first, port), "HAProxy started again")
    assert await answered(plane.shared_port or 0) == 200


async def _serves_again(tmp_path: Path, first: int, port: int) -> bool:
    return master_pid(tmp_path) != first and await answered(port) == 200


async def test_the_next_ingress_adopts_haproxy_and_reloads_nothing(
    make_plane: Factory, upstream: Upstream, tmp_path: Path
) -> None:
    port = free_port()
    routes: dict[str, Route | None] = {
        "web": Route("web", (port,), "web.test", (upstream.endpoint(),))
    }
    old = await make_plane()
    await old.update(routes)
    worker = await old.worker_pid()
    old.detach()  # as a handover does: the old ingress leaves HAProxy running
    await old.close()
    assert await answered(port) == 200
    new = await make_plane(hold=True)
    assert new.shared_port == old.shared_port
    await new.update(routes)
    await new.synced()
    assert await new.worker_pid() == worker  # the same HAProxy worker: no reload
    assert await answered(port) == 200
    assert new.listening == frozenset({port})


async def test_an_ingress_with_other_settings_adopts_haproxy_and_applies_them(
    make_plane: Factory, upstream: Upstream
) -> None:
    first, second = free_port(), free_port()
    routes: dict[str, Route | None] = {"web": Route("web", (), "web.test", (upstream.endpoint(),))}
    old = await make_plane(shared_port=first)
    await old.update(routes)
    old.detach()
    await old.close()
    new = await make_plane(shared_port=second, hold=True)
    await new.update(routes)
    await new.synced()
    assert await answered(second) == 200
    with pytest.raises(httpx.TransportError):
        await answered(first)


async def test_a_port_in_use_is_reported_and_the_others_are_served(
    make_plane: Factory, upstream: Upstream
) -> None:
    plane = await make_plane()
    busy, free = free_port(), free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", busy))
    holder.listen()
    try:
        await plane.update(
            {
                "web": Route("web", (busy,), "web.test", (upstream.endpoint(),)),
                "api": Route("api", (free,), None, (upstream.endpoint(),)),
            }
        )
        assert "Address already in use" in plane.problems[busy]
        assert await answered(free) == 200
        assert await answered(plane.shared_port or 0) == 200
    finally:
        holder.close()
    # Tried again until it is free: then served.
    # (The reload serves it a moment before the problem is cleared: wait for both.)
    await until(lambda: _cleared(plane, busy), f"port {busy} served")


async def _cleared(plane: HaproxyIngress, port: int) -> bool:
    return port not in plane.problems and await _answers(port)


async def _answers(port: int) -> bool:
    return await answered(port) == 200


def test_without_haproxy_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(haproxy_process.shutil, "which", lambda _: None)
    monkeypatch.setattr(haproxy_process.os, "access", lambda *_: False)
    with pytest.raises(UnavailableError, match=r"install it \(apt install haproxy\)"):
        haproxy_process.find_haproxy()


def test_haproxy_needs_the_ingress_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "warren", "server", "--data-plane", "haproxy",
         "--ingress", "embedded"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "haproxy needs --ingress process" in done.stderr
    assert "Traceback" not in done.stderr


def test_haproxy_has_one_ingress_worker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "warren", "worker", "--manager", "http://127.0.0.1:9",
         "--token", "x", "--data-plane", "haproxy", "--ingress-workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--ingress-workers" in done.stderr and "does not apply to --data-plane haproxy" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


async def test_releases_after_the_first_reload_nothing(make_plane: Factory) -> None:
    """A release pins its new revision (the preview), switches, retires the old one; a canary
    sticks clients to either. The first of each adds rules (a reload); the next ones change
    only servers, weights and map entries: the HAProxy worker that serves stays the same, so
    none is left serving the routing of before."""
    ups = [await Upstream(f"v{i}").start() for i in range(1, 7)]
    try:
        plane = await make_plane()

        def endpoint(revision: int) -> Endpoint:
            return ups[revision - 1].endpoint(revision)

        def route(*revisions: int, **kwargs: object) -> dict[str, Route | None]:
            endpoints = tuple(endpoint(r) for r in revisions)
            return {"web": Route("web", host="web.test", endpoints=endpoints, **kwargs)}  # type: ignore[arg-type]

        async def seen(headers: dict[str, str] | None = None) -> str:
            async with httpx.AsyncClient(trust_env=False, timeout=2.0) as c:
                port = plane.shared_port or 0
                r = await c.get(
                    f"http://127.0.0.1:{port}/", headers={"Host": "web.test", **(headers or {})}
                )
                return str(r.json()["name"])

        async def blue_green(old: int, new: int) -> None:
            preview = (Pin(new, header="X-Preview"),)
            await plane.update(route(old, new, weights=((old, 100), (new, 0)), pins=preview))
            assert (await seen(), await seen({"X-Preview": "1"})) == (f"v{old}", f"v{new}")
            await plane.update(route(old, new, weights=((old, 0), (new, 100))))
            assert (await seen(), await seen({"X-Preview": "1"})) == (f"v{new}", f"v{new}")
            await plane.update(route(new))

        async def canary(old: int, new: int) -> None:
            sticky = {"sticky_cookie": "rev"}
            await plane.update(route(old, new, weights=((old, 50), (new, 50)), **sticky))
            for revision in (old, new):
                assert await seen({"Cookie": f"rev={revision}"}) == f"v{revision}"
            await plane.update(route(new))

        await plane.update(route(1))
        await blue_green(1, 2)
        await canary(2, 3)
        worker = await plane.worker_pid()
        await blue_green(3, 4)
        await canary(4, 5)
        await blue_green(5, 6)
        assert await plane.worker_pid() == worker, "reloaded"
    finally:
        for up in ups:
            await up.stop()
