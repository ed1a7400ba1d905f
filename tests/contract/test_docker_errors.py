"""What users of the docker driver will meet, against the real engines: each is one clear
DriverError or exit status, never a traceback — a missing engine socket, an image that is not
there, a host port already taken, an OOM kill, and the engine restarting underneath a running
container."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.engines import Engine, _Podman, _require
from tests.images import DEMO, ensure_images
from warren.agent.drivers.docker import DockerDriver
from warren.clocks import SystemClock
from warren.domain.errors import DriverError
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task

WAIT = 20.0


def task(task_id: str = "web.1.a") -> Task:
    return Task(id=task_id, service="web", revision=1, slot=1, created_at=0, updated_at=0)


def spec(*command: str, **fields: object) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "image": f"{DEMO}:v1", "command": list(command) or None,
            "ports": [{"published": 18080, "target": 8080}], "stopGrace": 1, **fields,
        }
    )  # fmt: skip


@pytest.fixture
async def driver(engine: Engine, tmp_path: Path) -> AsyncIterator[DockerDriver]:
    made = DockerDriver(
        engine.socket, f"errors-{uuid.uuid4().hex[:8]}", tmp_path / "logs", SystemClock(),
        network=engine.network or None,
    )  # fmt: skip
    try:
        yield made
    finally:
        for c in await made.docker.containers.list(
            all=True, filters={"label": [f"warren.node={made.node}"]}
        ):
            with contextlib.suppress(Exception):
                await c.delete(force=True)
        await made.close()


async def test_a_missing_engine_socket_is_one_clear_line(tmp_path: Path) -> None:
    driver = DockerDriver(str(tmp_path / "nope.sock"), "n", tmp_path, SystemClock())
    try:
        with pytest.raises(DriverError) as caught:
            await driver.start(task(), spec())
        assert f"no engine socket at {tmp_path / 'nope.sock'}" in caught.value.message
        assert "\n" not in caught.value.message
    finally:
        await driver.close()


async def test_an_image_that_is_not_there(driver: DockerDriver) -> None:
    with pytest.raises(DriverError, match=r"^image not found: localhost/absent:v1 \(pull policy"):
        await driver.start(task(), spec(image="localhost/absent:v1", pullPolicy="never"))
    async with asyncio.timeout(WAIT):  # no registry answers here: the pull fails, quickly
        with pytest.raises(DriverError, match=r"^image not found: localhost/absent:v2"):
            await driver.start(task(), spec(image="localhost/absent:v2"))
    assert await driver.recover() == []


async def test_a_host_port_already_taken(driver: DockerDriver) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        driver._ports.allocate = lambda: port  # type: ignore[method-assign]
        with pytest.raises(DriverError) as caught:
            await driver.start(task(), spec())
    message = caught.value.message
    assert message.startswith("cannot start the container of web.1.a:"), message
    assert "address already in use" in message.lower() or str(port) in message, message
    assert await driver.recover() == []


async def test_an_oom_kill_is_reported_as_such(driver: DockerDriver) -> None:
    hog = "x = bytearray(512 * 1024 * 1024); print(len(x))"
    await driver.start(
        task(), spec("/usr/local/bin/python3", "-c", hog, resources={"memory": "48Mi"})
    )
    async with asyncio.timeout(WAIT):
        status = await driver.wait("web.1.a")
    assert status.oom_killed, status
    assert status.reason == "killed: out of memory (limit 48 MiB)"


@pytest.fixture
def own_podman() -> Iterator[tuple[_Podman, Engine]]:
    """A Podman of this test's own, to restart without disturbing the others."""
    _require(_Podman.binaries)
    process = _Podman()
    try:
        engine = process.start()
        ensure_images(engine.socket)
        yield process, engine
    finally:
        leaks = process.stop()
        assert not leaks, leaks


async def test_a_running_container_outlives_an_engine_restart(
    own_podman: tuple[_Podman, Engine], tmp_path: Path
) -> None:
    process, engine = own_podman
    driver = DockerDriver(engine.socket, "restart", tmp_path, SystemClock(), network=engine.network)
    try:
        handle = await driver.start(task(), spec())
        waiter = asyncio.ensure_future(driver.wait("web.1.a"))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(process._stop_process)
        await asyncio.sleep(1.5)
        assert not waiter.done()  # the engine is away: the task is not declared dead
        await asyncio.to_thread(process.start_process)
        await asyncio.to_thread(process._wait_ready)
        recovered = await driver.recover()
        assert [(r.task_id, r.alive, r.handle) for r in recovered] == [("web.1.a", True, handle)]
        await asyncio.sleep(1.5)
        assert not waiter.done()  # still running, still watched
        async with asyncio.timeout(WAIT):
            stopped = await driver.stop("web.1.a", 1.0)
            assert await waiter == stopped
    finally:
        await driver.close()
