"""The driver contract: one suite, every driver — fake, process, and docker against both real
engines (dockerd, and Podman's compatible service)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.engines import Engine
from tests.images import DEMO
from warren.agent.drivers import FakeDriver, ProcessDriver
from warren.agent.drivers.docker import DockerDriver
from warren.clocks import SystemClock
from warren.domain.errors import DriverError
from warren.domain.logs import LogLine, stamp_of
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task
from warren.ports import Driver, ExitStatus, TaskHandle

WAIT = 5.0
"""Upper bound of every wait in these tests (they take well under a second when all is well)."""

GRACE = 0.5
"""The stop grace period used throughout: short, so that SIGKILL-after-grace stays quick."""

PY = sys.executable


# ── helpers ──────────────────────────────────────────────────────────────────────────────────────


def make_task(task_id: str, service: str = "web", revision: int = 1) -> Task:
    return Task(id=task_id, service=service, revision=revision, slot=1, created_at=0, updated_at=0)


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks since boot) of ``pid`` from /proc, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def pid_alive(pid: int) -> bool:
    """A zombie counts as gone: here nobody may reap orphans (PID 1 is not an init)."""
    state = proc_state(pid)
    return state is not None and state[0] not in ("Z", "X")


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout``. For what has no event to await
    (a line reaching a log file written by another process, a pid disappearing)."""

    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        pytest.fail(f"not within {timeout}s: {what}")


async def pid_gone(pid: int) -> bool:
    return not pid_alive(pid)


def talking(lines: int) -> str:
    """Python that prints ``line 0`` … ``line N-1``, one every 50 ms."""
    return f"import time\nfor n in range({lines}): time.sleep(0.05); print('line', n, flush=True)"


def parse_endpoint(endpoint: str | None) -> tuple[str, int]:
    assert endpoint is not None
    host, sep, port = endpoint.rpartition(":")
    assert sep and host, f"endpoint {endpoint!r} is not host:port"
    assert port.isdigit() and 1 <= int(port) <= 65535, f"bad port in {endpoint!r}"
    return host, int(port)


# ── the adapters: what differs between drivers, so that one test body fits all ──────────────────


@dataclass
class Adapter(ABC):
    """One driver under test, and how to make it do each thing the contract talks about."""

    name: str
    driver: Driver
    ready_line: str
    """A line the task logs once it runs (and, for ``ignores_sigterm``, once it ignores it)."""
    tasks: list[str] = field(default_factory=list)
    stop_overhead: float = 0.0
    """What stopping costs beyond the task's own exit (an engine tears down a container's
    network and mounts: ~0.1-0.7 s here)."""
    whole_seconds: bool = False
    """Its log lines' times are whole seconds (Podman's compatible API before 5.8)."""

    @abstractmethod
    def forever(self) -> ServiceSpec: ...

    @abstractmethod
    def exits(self, code: int) -> ServiceSpec:
        """A task that ends on its own with ``code`` after ~0.3 s."""
        ...

    @abstractmethod
    def fails_to_start(self) -> ServiceSpec: ...

    @abstractmethod
    def talks(self, lines: int) -> ServiceSpec:
        """A task that prints ``line 0`` … ``line N-1``, one every 50 ms, then exits 0."""
        ...

    @abstractmethod
    def ignores_sigterm(self) -> ServiceSpec: ...

    @abstractmethod
    async def restart(self) -> Driver:
        """The agent restarts: a driver that must ``recover`` what the old one started."""
        ...

    @abstractmethod
    async def kill_behind_its_back(self, task_id: str, handle: TaskHandle) -> None:
        """The task dies while the agent is down (the driver is not told)."""
        ...

    @abstractmethod
    async def cleanup(self) -> None: ...

    async def start(self, task_id: str, spec: ServiceSpec) -> TaskHandle:
        self.tasks.append(task_id)
        return await asyncio.wait_for(self.driver.start(make_task(task_id), spec), WAIT)

    async def until_ready(self, task_id: str) -> None:
        async def logged() -> bool:
            return any(self.ready_line in x.text for x in await self.driver.logs(task_id))

        await eventually(logged, f"{task_id} logs {self.ready_line!r}")


class FakeAdapter(Adapter):
    """The fake models an engine that outlives the agent: a restart keeps the same instance."""

    def __init__(self) -> None:
        self.fake = FakeDriver(SystemClock())
        super().__init__("fake", self.fake, ready_line="started")

    def spec(self, **env: str) -> ServiceSpec:
        return ServiceSpec(name="web", command=["fake"], driver="fake", env=env)

    def forever(self) -> ServiceSpec:
        return self.spec()

    def exits(self, code: int) -> ServiceSpec:
        return self.spec(FAKE_RUN_FOR="300ms", FAKE_EXIT_CODE=str(code))

    def fails_to_start(self) -> ServiceSpec:
        return self.spec(FAKE_START_ERROR="image pull failed: no such image")

    def talks(self, lines: int) -> ServiceSpec:
        return self.spec(FAKE_TALK=str(lines))

    def ignores_sigterm(self) -> ServiceSpec:
        return self.spec()  # the fake has no signals: "stops within grace" is all it can show

    async def restart(self) -> Driver:
        return self.driver

    async def kill_behind_its_back(self, task_id: str, handle: TaskHandle) -> None:
        self.fake.crash(task_id)

    async def cleanup(self) -> None:
        for task_id in self.fake.running():
            await self.fake.stop(task_id, 0)
        for task_id in list(self.tasks):
            await self.fake.forget(task_id)


class ProcessAdapter(Adapter):
    """A restart is a new ProcessDriver over the same state and log directories."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_dir, self.log_dir = tmp_path / "state", tmp_path / "logs"
        super().__init__("process", self._new_driver(), ready_line="listening on")
        self.pids: dict[int, int] = {}
        """pid → start ticks of every task started, to kill leftovers (and never a recycled pid)."""

    def _new_driver(self) -> ProcessDriver:
        return ProcessDriver(self.state_dir, self.log_dir, SystemClock())

    @property
    def process(self) -> ProcessDriver:
        assert isinstance(self.driver, ProcessDriver)
        return self.driver

    def spec(self, *command: str, **env: str) -> ServiceSpec:
        return ServiceSpec(name="web", command=list(command), driver="process", env=env)

    def forever(self) -> ServiceSpec:
        return self.spec(PY, "-m", "warren.demo.app")

    def exits(self, code: int) -> ServiceSpec:
        return self.spec(PY, "-c", f"import sys, time; time.sleep(0.3); sys.exit({code})")

    def fails_to_start(self) -> ServiceSpec:
        return self.spec("warren-no-such-command", "--flag")

    def talks(self, lines: int) -> ServiceSpec:
        return self.spec(PY, "-c", talking(lines))

    def ignores_sigterm(self) -> ServiceSpec:
        return self.spec(
            PY,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('listening on nothing, ignoring SIGTERM', flush=True); time.sleep(300)",
        )

    async def start(self, task_id: str, spec: ServiceSpec) -> TaskHandle:
        handle = await super().start(task_id, spec)
        pid = int(handle.runtime_id)
        state = proc_state(pid)
        if state is not None:
            self.pids[pid] = state[1]
        return handle

    async def restart(self) -> Driver:
        self.process.close()
        self.driver = self._new_driver()
        return self.driver

    async def kill_behind_its_back(self, task_id: str, handle: TaskHandle) -> None:
        pid = int(handle.runtime_id)
        os.killpg(pid, signal.SIGKILL)
        await eventually(lambda: pid_gone(pid), f"pid {pid} dies")

    async def cleanup(self) -> None:
        for task_id in list(self.tasks):
            with contextlib.suppress(DriverError, TimeoutError):
                await asyncio.wait_for(self.process.stop(task_id, 0.1), WAIT)
        self.process.close()
        # Whatever a failing test left behind (e.g. tasks of a replaced driver): the group goes,
        # but only if the pid still names the process we started.
        for pid, ticks in self.pids.items():
            state = proc_state(pid)
            if state is not None and state[1] == ticks:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


class DockerAdapter(Adapter):
    """A container engine (dockerd or Podman's compatible service) that outlives the agent: a
    restart is a new DockerDriver with the same node name, which finds its containers by label.
    Each test has a node name of its own, so the engine's other containers are not its."""

    def __init__(self, engine: Engine, tmp_path: Path) -> None:
        self.engine = engine
        self.node = f"contract-{uuid.uuid4().hex[:8]}"
        self.log_dir = tmp_path / "logs"
        super().__init__("docker", self._new_driver(), ready_line="listening on")
        self.stop_overhead = 1.5
        self.whole_seconds = engine.name == "podman"

    def _new_driver(self) -> DockerDriver:
        return DockerDriver(
            self.engine.socket, self.node, self.log_dir, SystemClock(),
            network=self.engine.network or None,
        )  # fmt: skip

    @property
    def docker(self) -> DockerDriver:
        assert isinstance(self.driver, DockerDriver)
        return self.driver

    def spec(self, *command: str, image: str = f"{DEMO}:v1", **env: str) -> ServiceSpec:
        return ServiceSpec(
            name="web", image=image, command=list(command) or None, driver="docker",
            env=env, ports=[{"published": 18080, "target": 8080}], stop_grace=GRACE,
        )  # fmt: skip

    def forever(self) -> ServiceSpec:
        return self.spec()

    def exits(self, code: int) -> ServiceSpec:
        return self.spec(
            "/usr/local/bin/python3", "-c", f"import sys, time; time.sleep(0.3); sys.exit({code})"
        )  # fmt: skip

    def fails_to_start(self) -> ServiceSpec:
        return self.spec(image="localhost/warren-no-such-image:v9")

    def talks(self, lines: int) -> ServiceSpec:
        return self.spec("/usr/local/bin/python3", "-c", talking(lines))

    def ignores_sigterm(self) -> ServiceSpec:
        return self.spec(
            "/usr/local/bin/python3", "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('listening on nothing, ignoring SIGTERM', flush=True); time.sleep(300)",
        )  # fmt: skip

    async def restart(self) -> Driver:
        await self.docker.close()
        self.driver = self._new_driver()
        return self.driver

    async def kill_behind_its_back(self, task_id: str, handle: TaskHandle) -> None:
        container = self.docker.docker.containers.container(handle.runtime_id)
        await container.kill(signal="SIGKILL")

        async def dead() -> bool:
            return not (await container.show())["State"]["Running"]

        await eventually(dead, f"the container of {task_id} dies")

    async def cleanup(self) -> None:
        docker = self.docker.docker
        with contextlib.suppress(Exception):
            for c in await docker.containers.list(
                all=True, filters={"label": [f"warren.node={self.node}"]}
            ):
                await c.delete(force=True)
        await self.docker.close()


ADAPTERS = ["fake", "process", "dockerd", "podman"]


@pytest.fixture(params=ADAPTERS)
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Adapter]:
    made: Adapter
    if request.param == "fake":
        made = FakeAdapter()
    elif request.param == "process":
        made = ProcessAdapter(tmp_path)
    else:
        engine = request.getfixturevalue(f"{request.param}_engine")
        made = DockerAdapter(engine, tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


# ── the contract ─────────────────────────────────────────────────────────────────────────────────


async def test_driver_implements_the_port(adapter: Adapter) -> None:
    assert isinstance(adapter.driver, Driver)
    assert adapter.driver.name == adapter.name


async def test_start_returns_a_handle(adapter: Adapter) -> None:
    before = time.time()
    handle = await adapter.start("web.1.a", adapter.forever())
    assert handle.runtime_id
    parse_endpoint(handle.endpoint)
    assert before - 1 <= handle.started_at <= time.time() + 1


async def test_two_tasks_get_distinct_handles_and_endpoints(adapter: Adapter) -> None:
    a = await adapter.start("web.1.a", adapter.forever())
    b = await adapter.start("web.2.b", adapter.forever())
    assert a.runtime_id != b.runtime_id
    assert parse_endpoint(a.endpoint) != parse_endpoint(b.endpoint)


@pytest.mark.parametrize("code", [0, 3])
async def test_wait_returns_the_exit_code_of_a_task_that_ends_on_its_own(
    adapter: Adapter, code: int
) -> None:
    await adapter.start("web.1.a", adapter.exits(code))
    status = await asyncio.wait_for(adapter.driver.wait("web.1.a"), WAIT)
    assert status.exit_code == code
    assert status.reason
    # Once ended, wait answers at once, and so does stop, with the same status.
    assert await asyncio.wait_for(adapter.driver.wait("web.1.a"), WAIT) == status
    assert await asyncio.wait_for(adapter.driver.stop("web.1.a", GRACE), WAIT) == status


async def test_wait_for_an_unknown_task_raises(adapter: Adapter) -> None:
    with pytest.raises(DriverError, match=r"web\.9\.zz"):
        await asyncio.wait_for(adapter.driver.wait("web.9.zz"), WAIT)


async def test_stop_of_an_unknown_task_does_not_raise(adapter: Adapter) -> None:
    status = await asyncio.wait_for(adapter.driver.stop("web.9.zz", GRACE), WAIT)
    assert status.exit_code is None


async def test_stop_returns_within_grace_and_is_idempotent(adapter: Adapter) -> None:
    await adapter.start("web.1.a", adapter.forever())
    await adapter.until_ready("web.1.a")
    waiter = asyncio.ensure_future(adapter.driver.wait("web.1.a"))
    t0 = time.monotonic()
    first = await asyncio.wait_for(adapter.driver.stop("web.1.a", GRACE), WAIT)
    assert time.monotonic() - t0 < GRACE + adapter.stop_overhead
    assert isinstance(first, ExitStatus)
    # A pending wait sees the same end; a second stop neither raises nor changes the answer.
    assert await asyncio.wait_for(waiter, WAIT) == first
    assert await asyncio.wait_for(adapter.driver.stop("web.1.a", GRACE), WAIT) == first


async def test_a_task_that_ignores_sigterm_is_killed_after_the_grace(adapter: Adapter) -> None:
    await adapter.start("web.1.a", adapter.ignores_sigterm())
    await adapter.until_ready("web.1.a")
    t0 = time.monotonic()
    status = await asyncio.wait_for(
        adapter.driver.stop("web.1.a", GRACE), GRACE + 1.0 + adapter.stop_overhead
    )
    assert time.monotonic() - t0 < GRACE + 1.0 + adapter.stop_overhead
    assert isinstance(status, ExitStatus)
    assert await asyncio.wait_for(adapter.driver.wait("web.1.a"), WAIT) == status


async def test_start_failure_raises_a_clear_driver_error(adapter: Adapter) -> None:
    spec = adapter.fails_to_start()
    with pytest.raises(DriverError) as caught:
        await adapter.start("web.1.a", spec)
    message = str(caught.value)
    assert message.strip()
    if adapter.name == "process":
        assert "not found" in message
        assert "warren-no-such-command" in message
    elif adapter.name == "docker":
        assert message.startswith("image not found: localhost/warren-no-such-image:v9")
    else:
        assert message == spec.env["FAKE_START_ERROR"]
    # Nothing was started: nothing to recover, nothing to wait for.
    assert "web.1.a" not in {r.task_id for r in await adapter.driver.recover()}
    with pytest.raises(DriverError):
        await asyncio.wait_for(adapter.driver.wait("web.1.a"), WAIT)


async def test_recover_on_a_fresh_driver_finds_nothing(adapter: Adapter) -> None:
    assert await adapter.driver.recover() == []


async def test_recover_after_a_restart_adopts_the_running_task(adapter: Adapter) -> None:
    handle = await adapter.start("web.1.a", adapter.forever())
    await adapter.until_ready("web.1.a")

    driver = await adapter.restart()
    recovered = {r.task_id: r for r in await driver.recover()}

    assert set(recovered) == {"web.1.a"}
    assert recovered["web.1.a"].alive is True
    assert recovered["web.1.a"].handle == handle
    # Recovering again changes nothing (an agent may sync twice).
    again = {r.task_id: r for r in await driver.recover()}
    assert again == recovered
    # The adopted task can be waited for and stopped like one this driver started.
    waiter = asyncio.ensure_future(driver.wait("web.1.a"))
    await asyncio.sleep(0)
    assert not waiter.done()
    t0 = time.monotonic()
    status = await asyncio.wait_for(driver.stop("web.1.a", GRACE), WAIT)
    assert time.monotonic() - t0 < GRACE + adapter.stop_overhead
    assert await asyncio.wait_for(waiter, WAIT) == status
    assert await asyncio.wait_for(driver.stop("web.1.a", GRACE), WAIT) == status
    assert [r.alive for r in await driver.recover()] == [False]


async def test_recover_reports_a_task_that_died_while_down_as_not_alive(
    adapter: Adapter,
) -> None:
    dead = await adapter.start("web.1.a", adapter.forever())
    live = await adapter.start("web.2.b", adapter.forever())
    await adapter.until_ready("web.1.a")
    await adapter.until_ready("web.2.b")

    await adapter.kill_behind_its_back("web.1.a", dead)
    driver = await adapter.restart()
    recovered = {r.task_id: r for r in await driver.recover()}

    assert set(recovered) == {"web.1.a", "web.2.b"}
    assert recovered["web.1.a"].alive is False
    assert recovered["web.1.a"].handle.runtime_id == dead.runtime_id
    assert recovered["web.2.b"].alive is True
    assert recovered["web.2.b"].handle == live


async def test_forget_drops_the_record(adapter: Adapter) -> None:
    await adapter.start("web.1.a", adapter.exits(0))
    await adapter.start("web.2.b", adapter.forever())
    await asyncio.wait_for(adapter.driver.wait("web.1.a"), WAIT)

    await adapter.driver.forget("web.1.a")

    assert {r.task_id for r in await adapter.driver.recover()} == {"web.2.b"}
    driver = await adapter.restart()
    assert {r.task_id for r in await driver.recover()} == {"web.2.b"}
    # Forgetting twice, or a task never seen, is harmless.
    await driver.forget("web.1.a")
    await driver.forget("web.9.zz")


async def test_forget_after_a_restart_drops_a_task_that_died_while_down(
    adapter: Adapter,
) -> None:
    handle = await adapter.start("web.1.a", adapter.forever())
    await adapter.until_ready("web.1.a")
    await adapter.kill_behind_its_back("web.1.a", handle)
    driver = await adapter.restart()
    assert [(r.task_id, r.alive) for r in await driver.recover()] == [("web.1.a", False)]

    await driver.forget("web.1.a")

    assert await driver.recover() == []


async def test_logs_return_the_output_of_the_task(adapter: Adapter) -> None:
    await adapter.start("web.1.a", adapter.forever())
    await adapter.until_ready("web.1.a")
    lines = await adapter.driver.logs("web.1.a")
    assert any(adapter.ready_line in x.text for x in lines)
    assert all("\n" not in x.text for x in lines)
    assert await adapter.driver.logs("web.1.a", tail=1) == lines[-1:]
    assert await adapter.driver.logs("web.9.zz") == []


async def test_log_lines_carry_the_time_they_were_read(adapter: Adapter) -> None:
    before = stamp_of(time.time() - 1)  # an engine's clock may be a little apart
    await adapter.start("web.1.a", adapter.talks(5))
    await eventually(lambda: said(adapter, "web.1.a", "line 4"), "the task's last line")

    lines = await adapter.driver.logs("web.1.a")

    times = [x.time for x in lines]
    assert all(times) and times == sorted(times), lines
    assert before <= times[0] and times[-1] <= stamp_of(time.time() + 1), lines
    if not adapter.whole_seconds:
        assert len(set(times[-5:])) == 5  # 50 ms apart: read one by one
    since = [x for x in lines if x.time >= times[-2]]
    assert await adapter.driver.logs("web.1.a", since=times[-2]) == since
    assert await adapter.driver.logs("web.1.a", tail=1, since=times[-2]) == lines[-1:]
    assert await adapter.driver.logs("web.1.a", since=stamp_of(time.time() + 60)) == []


async def test_follow_gives_the_last_lines_then_each_new_one_and_ends_with_the_task(
    adapter: Adapter,
) -> None:
    await adapter.start("web.1.a", adapter.talks(30))
    await eventually(lambda: said(adapter, "web.1.a", "line 3"), "the task's first lines")
    follow = adapter.driver.follow("web.1.a", tail=2)

    history = await asyncio.wait_for(anext(follow), WAIT)
    rest: list[LogLine] = []

    async def read_to_the_end() -> None:
        async for batch in follow:
            rest.extend(batch)

    await asyncio.wait_for(read_to_the_end(), WAIT)  # it ends by itself, with the task
    assert len(history) == 2
    numbers = [int(x.text.split()[1]) for x in history + rest if x.text.startswith("line ")]
    assert numbers == list(range(numbers[0], 30)), numbers  # none missed, none twice


async def said(adapter: Adapter, task_id: str, text: str) -> bool:
    return any(x.text == text for x in await adapter.driver.logs(task_id))


async def test_logs_stay_after_forget(adapter: Adapter) -> None:
    await adapter.start("web.1.a", adapter.forever())
    await adapter.until_ready("web.1.a")
    await asyncio.wait_for(adapter.driver.stop("web.1.a", GRACE), WAIT)

    await adapter.driver.forget("web.1.a")

    assert any(adapter.ready_line in x.text for x in await adapter.driver.logs("web.1.a"))


# ── process driver only ──────────────────────────────────────────────────────────────────────────


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[ProcessAdapter]:
    made = ProcessAdapter(tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


async def run_to_end(process: ProcessAdapter, task: Task, code: str) -> list[str]:
    """Runs ``python -c code`` as ``task``; its log lines once it has ended."""
    process.tasks.append(task.id)
    await asyncio.wait_for(process.driver.start(task, process.spec(PY, "-c", code)), WAIT)
    status = await asyncio.wait_for(process.driver.wait(task.id), WAIT)
    lines = [x.text for x in await process.driver.logs(task.id)]
    assert status.exit_code == 0, lines
    return lines


async def test_process_task_gets_port_and_warren_variables(process: ProcessAdapter) -> None:
    task = make_task("api.1.x7", service="api", revision=4)
    code = (
        "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
        "('PORT', 'WARREN_TASK_ID', 'WARREN_SERVICE', 'WARREN_REVISION', 'GREETING')}))"
    )
    process.tasks.append(task.id)
    spec = ServiceSpec(
        name="api", command=[PY, "-c", code], driver="process", env={"GREETING": "hi"}
    )
    handle = await asyncio.wait_for(process.driver.start(task, spec), WAIT)
    await asyncio.wait_for(process.driver.wait(task.id), WAIT)

    seen = json.loads((await process.driver.logs(task.id))[-1].text)

    assert seen == {
        "PORT": str(parse_endpoint(handle.endpoint)[1]),
        "WARREN_TASK_ID": "api.1.x7",
        "WARREN_SERVICE": "api",
        "WARREN_REVISION": "4",
        "GREETING": "hi",
    }


async def test_process_task_does_not_get_the_server_token(
    process: ProcessAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARREN_TOKEN", "s3cret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    code = (
        "import os; print('token=' + os.environ.get('WARREN_TOKEN', '<unset>')); "
        "print('aws=' + os.environ.get('AWS_SECRET_ACCESS_KEY', '<unset>'))"
    )
    lines = await run_to_end(process, make_task("web.1.a"), code)
    assert "token=<unset>" in lines
    assert "aws=<unset>" in lines
    assert not any("s3cret" in line or "also-secret" in line for line in lines)


async def test_process_task_listens_on_its_endpoint(process: ProcessAdapter) -> None:
    handle = await process.start("web.1.a", process.forever())
    await process.until_ready("web.1.a")
    host, port = parse_endpoint(handle.endpoint)
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
    writer.close()
    await writer.wait_closed()


async def test_process_stop_kills_the_whole_group(process: ProcessAdapter) -> None:
    # The child ignores SIGTERM and outlives its parent: only the group SIGKILL removes it.
    script = "trap '' TERM; sleep 300 & echo child=$!; trap - TERM; echo listening on; wait"
    handle = await process.start("web.1.a", process.spec("sh", "-c", script))
    await process.until_ready("web.1.a")
    lines = [x.text for x in await process.driver.logs("web.1.a")]
    child = int(next(line for line in lines if line.startswith("child="))[len("child=") :])
    assert pid_alive(child)
    assert os.getpgid(child) == int(handle.runtime_id)

    await asyncio.wait_for(process.driver.stop("web.1.a", GRACE), WAIT)

    assert not pid_alive(int(handle.runtime_id))
    await eventually(lambda: pid_gone(child), f"child pid {child} is killed with its group")


async def test_process_ignoring_sigterm_is_sigkilled(process: ProcessAdapter) -> None:
    handle = await process.start("web.1.a", process.ignores_sigterm())
    await process.until_ready("web.1.a")
    t0 = time.monotonic()
    status = await asyncio.wait_for(process.driver.stop("web.1.a", GRACE), WAIT)
    elapsed = time.monotonic() - t0
    assert GRACE <= elapsed < GRACE + 1.0
    assert status.exit_code == 128 + signal.SIGKILL
    assert "SIGKILL" in status.reason
    assert not pid_alive(int(handle.runtime_id))


async def test_process_graceful_stop_reports_the_exit(process: ProcessAdapter) -> None:
    handle = await process.start("web.1.a", process.forever())
    await process.until_ready("web.1.a")
    status = await asyncio.wait_for(process.driver.stop("web.1.a", GRACE), WAIT)
    # The demo app handles SIGTERM and exits 0, saying so in its log.
    assert status.exit_code == 0
    assert not pid_alive(int(handle.runtime_id))
    assert "demo app: stopping" in [x.text for x in await process.driver.logs("web.1.a")]


@pytest.mark.parametrize("what", ["directory", "not-executable"])
async def test_process_start_of_something_not_runnable_raises(
    process: ProcessAdapter, tmp_path: Path, what: str
) -> None:
    target = tmp_path / what
    if what == "directory":
        target.mkdir()
    else:
        target.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(DriverError, match="permission denied") as caught:
        await process.start("web.1.a", process.spec(str(target)))
    assert str(target) in str(caught.value)
    assert await process.driver.recover() == []


async def test_process_record_of_a_recycled_pid_is_not_adopted(process: ProcessAdapter) -> None:
    # A record whose pid now names another live process (this test process) started at another
    # time than recorded: the pid was recycled, and that process is not our task.
    me = os.getpid()
    state = proc_state(me)
    assert state is not None
    record = {
        "task_id": "web.1.a",
        "pid": me,
        "start_ticks": state[1] + 12345,
        "port": 40123,
        "endpoint": "127.0.0.1:40123",
        "started_at": 1_700_000_000.0,
    }
    (process.state_dir / "web.1.a.json").write_text(json.dumps(record))

    recovered = await process.driver.recover()

    assert [(r.task_id, r.alive, r.handle.runtime_id) for r in recovered] == [
        ("web.1.a", False, str(me))
    ]
    # Not adopted: stopping it must not touch this process.
    status = await asyncio.wait_for(process.driver.stop("web.1.a", GRACE), WAIT)
    assert status.exit_code is None
    assert pid_alive(me)
    with pytest.raises(DriverError):
        await asyncio.wait_for(process.driver.wait("web.1.a"), WAIT)


async def test_process_record_without_start_time_is_not_adopted(process: ProcessAdapter) -> None:
    me = os.getpid()
    record = {
        "task_id": "web.1.a",
        "pid": me,
        "start_ticks": None,
        "port": 40123,
        "endpoint": "127.0.0.1:40123",
        "started_at": 1_700_000_000.0,
    }
    (process.state_dir / "web.1.a.json").write_text(json.dumps(record))
    assert [r.alive for r in await process.driver.recover()] == [False]


async def test_process_unreadable_record_is_ignored(process: ProcessAdapter) -> None:
    (process.state_dir / "web.1.a.json").write_text("{not json")
    (process.state_dir / "web.2.b.json").write_text(json.dumps({"task_id": "web.2.b"}))
    await process.start("web.3.c", process.forever())
    assert [r.task_id for r in await process.driver.recover()] == ["web.3.c"]


async def test_process_forget_removes_the_record_file_but_not_the_log(
    process: ProcessAdapter,
) -> None:
    await process.start("web.1.a", process.exits(0))
    assert (process.state_dir / "web.1.a.json").exists()
    await asyncio.wait_for(process.driver.wait("web.1.a"), WAIT)

    await process.driver.forget("web.1.a")

    assert not (process.state_dir / "web.1.a.json").exists()
    assert (process.log_dir / "web.1.a.log").exists()


async def test_process_wait_on_an_adopted_task_reports_an_unknown_exit_code(
    process: ProcessAdapter,
) -> None:
    handle = await process.start("web.1.a", process.forever())
    await process.until_ready("web.1.a")
    driver = await process.restart()
    assert [r.alive for r in await driver.recover()] == [True]
    waiter = asyncio.ensure_future(driver.wait("web.1.a"))

    os.killpg(int(handle.runtime_id), signal.SIGTERM)  # it ends on its own, as far as we know

    status = await asyncio.wait_for(waiter, WAIT)
    assert status.exit_code is None
    assert status.reason


async def test_process_started_but_never_recorded_is_stopped_and_not_recovered(
    process: ProcessAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent dies between the fork and the record (kill -9): nothing may adopt a process it
    # cannot identify by pid and start time, so the restarted driver finds it by its
    # WARREN_TASK_ID, stops it, and reports nothing — the agent starts the task again.
    class AgentKilled(BaseException):
        pass

    def killed(*args: object) -> None:
        raise AgentKilled

    monkeypatch.setattr(process.process, "_write_record", killed)
    with pytest.raises(AgentKilled):
        await process.start("web.1.a", process.forever())
    (pid,) = _pids_with(b"WARREN_TASK_ID=web.1.a")
    state = proc_state(pid)
    assert state is not None
    process.pids[pid] = state[1]

    driver = await process.restart()

    assert await driver.recover() == []
    await eventually(lambda: pid_gone(pid), f"pid {pid}, started but never recorded, is stopped")
    assert list(process.state_dir.iterdir()) == []


def _pids_with(variable: bytes) -> list[int]:
    """Live children of this test process with ``variable`` (``NAME=value``) in their
    environment: a task of another test run on the machine (another checkout's, one left by a
    failed run) may have the same id."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if variable in env and parent == os.getpid() and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


# ── the docker driver only ───────────────────────────────────────────────────────────────────────


@pytest.fixture(params=["dockerd", "podman"])
async def container(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DockerAdapter]:
    made = DockerAdapter(request.getfixturevalue(f"{request.param}_engine"), tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


async def test_docker_handle_names_the_image_by_a_reference_that_cannot_move(
    container: DockerAdapter,
) -> None:
    """The handle's digest is the image that runs — a repo digest, or the image ID of an image
    that came from no registry, as the test images did — and a task started from that digest
    runs the same image and reports the same digest (a pinned revision's later tasks)."""
    first = await container.start("web.1.a", container.forever())
    digest = first.image_digest
    assert digest is not None and (digest.startswith("sha256:") or "@sha256:" in digest), digest
    again = await container.start("web.2.a", container.spec(image=digest))
    assert again.image_digest == digest
    shown = [
        await container.docker.docker.containers.container(h.runtime_id).show()
        for h in (first, again)
    ]
    assert shown[0]["Image"] == shown[1]["Image"]


async def test_process_logs_of_a_forgotten_task_wait_for_its_writer(
    process: ProcessAdapter,
) -> None:
    """A task that ended at once is forgotten at once (a job): its last lines still come, the
    writer draining the pipe a moment after the exit. Before: the read did not wait for the
    writer once the task was forgotten, and ``warren run`` could print nothing."""
    task = make_task("web.1.a")
    process.tasks.append(task.id)
    # The output outlives the process the driver waits for: a child writes it a moment later.
    spec = process.spec("/bin/sh", "-c", "(sleep 0.3; echo late words) & exit 0")
    await asyncio.wait_for(process.driver.start(task, spec), WAIT)
    await asyncio.wait_for(process.driver.wait(task.id), WAIT)
    await process.driver.forget(task.id)
    assert [x.text for x in await process.driver.logs(task.id)] == ["late words"]
