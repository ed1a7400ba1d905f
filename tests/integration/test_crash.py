"""kill -9 of the server at random points of rolling updates, automatic rollbacks and manual
rollbacks: after each restart the rollout finishes (or rolls back) from the stored state, the
running processes are re-adopted, and no process is left behind or started twice. And, in this
process, the agent killed at the one point of a start no random kill finds reliably: between the
fork and the process driver's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerProcess, free_port, pid_alive, wait_for
from warren.agent import Agent, NetworkProber, ProcessDriver, StoreDispatcher
from warren.client import Client
from warren.clocks import SystemClock
from warren.control.plane import ControlPlane
from warren.domain.deployments import Deployment, Phase
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task, TaskState
from warren.ports import Driver, Prober
from warren.server import node_record
from warren.store import MemoryStore
from warren.store.cluster import ClusterStore

pytestmark = pytest.mark.integration

NAME = "crashy"
REPLICAS = 4


def service_processes(name: str = NAME) -> set[int]:
    """Every live process of the service ``name``, found by its environment."""
    marker = f"WARREN_SERVICE={name}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env and pid_alive(int(entry.name)):
                pids.add(int(entry.name))
    return pids


def converged(client: Client) -> bool:
    deployments = client.list_deployments(NAME)
    if deployments and not deployments[-1].phase.terminal:
        return False
    service = client.get_service(NAME)
    active = [t for t in client.list_tasks(NAME) if t.state.active]
    return (
        len(active) == REPLICAS
        and all(t.ready and t.revision == service.revision for t in active)
        and {int(t.runtime_id or 0) for t in active} == service_processes()
    )


def test_sigkill_at_random_points_of_rollouts(server: ServerProcess) -> None:
    rng = random.Random(20261126)
    client = server.client()
    client.create_service(
        ServiceSpec.model_validate(
            {
                "name": NAME,
                "command": ["python", "-m", "warren.demo.app"],
                "replicas": REPLICAS,
                "env": {"VERSION": "v0"},
                "ports": [{"published": free_port()}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms"},
                "stopGrace": "2s",
                "drainTimeout": "500ms",
                "deploy": {"updateConfig": {"parallelism": 1, "monitor": "0s"}},
            }
        )
    )
    wait_for(lambda: converged(client), 30, "the first tasks")
    rounds = ["good", "bad", "rollback", "good", "bad", "good"]
    for n, kind in enumerate(rounds, 1):
        before = client.get_service(NAME)
        if kind == "rollback":
            client.rollback_service(NAME)
        else:
            env = {"VERSION": f"v{n}"} | ({"UNHEALTHY": "1"} if kind == "bad" else {})
            client.patch_service(NAME, {"env": env})
        time.sleep(rng.uniform(0.0, 2.0))  # kill it somewhere in the rollout
        server.stop(signal.SIGKILL)
        server.start()
        client = server.client()
        wait_for(functools.partial(converged, client), 60, f"round {n} ({kind}) to converge")
        latest = client.list_deployments(NAME)[-1]
        service = client.get_service(NAME)
        if kind == "bad":
            assert service.revision == before.revision, "a bad update must roll back"
            assert "UNHEALTHY" not in service.spec.env
            assert client.list_deployments(NAME)[-2].phase == Phase.ROLLED_BACK
        else:
            assert latest.phase == Phase.SUCCEEDED, latest.message
            assert service.revision != before.revision
    client.delete_service(NAME)
    # Gone, and forgotten: a process in the middle of its exit has no environment to find it by
    # but is still alive, and its record goes only when the agent has seen it end.
    wait_for(
        lambda: not service_processes() and not server.task_pids(), 30, "every process to stop"
    )


class AgentKilled(BaseException):
    """What ``kill -9`` does to the agent at one point of a start: nothing after it runs (not an
    ``Exception``, which the supervisor would report as an agent error)."""


@dataclass
class InProcess:
    """A control plane and one agent with the process driver in this process, on a memory
    store: the agent can be "killed" in the middle of a start and started again on the same
    data dir."""

    data: Path
    clock: SystemClock = field(default_factory=SystemClock)
    name: str = field(default_factory=lambda: f"{NAME}-{secrets.token_hex(3)}")
    """The service's: unique, so that its processes are told from any other test's."""

    async def start(self) -> InProcess:
        self.store = MemoryStore(self.clock)
        self.cluster = ClusterStore(self.store, self.clock)
        self.plane = ControlPlane(self.cluster, self.clock, None)
        self.plane.tasks.on_change(lambda _key, old, new: self.agent.task_changed(old, new))
        await self.plane.start()
        await self.start_agent()
        return self

    async def start_agent(self) -> None:
        self.driver = ProcessDriver(self.data / "tasks", self.data / "logs", self.clock)
        drivers: dict[str, tuple[Driver, Prober]] = {"process": (self.driver, NetworkProber())}
        node = node_record("n1", ("process",), self.clock)
        self.agent = Agent(node, StoreDispatcher(self.cluster), drivers, self.clock, None)
        await self.agent.start(lambda: self.plane.tasks.values())

    def crash_next_start(self, recorded: bool) -> asyncio.Future[tuple[str, int]]:
        """The agent dies in the next start, once its process is forked: before the driver
        records it, or (``recorded``) just after. The future: the task cut short and the pid of
        its process, once its supervisor is gone."""
        driver, crashed = self.driver, asyncio.get_running_loop().create_future()
        write_record = driver._write_record

        def killed(task_id: str, pid: int, *args: Any) -> None:
            driver._write_record = write_record  # type: ignore[method-assign]
            if recorded:
                write_record(task_id, pid, *args)
            supervisor = asyncio.current_task()
            assert supervisor is not None

            def gone(runner: asyncio.Task[Any]) -> None:
                runner.exception()  # retrieved: asyncio must not log it at garbage collection
                crashed.set_result((task_id, pid))

            supervisor.add_done_callback(gone)
            raise AgentKilled(task_id)

        driver._write_record = killed  # type: ignore[method-assign]
        return crashed

    async def restart_agent(self) -> None:
        """The agent and its driver gone (the processes they started keep running), and a new
        one started on the same data dir."""
        await self.agent.stop()
        self.driver.close()
        await self.start_agent()

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        async def loop() -> None:
            while not await check():
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(loop(), 30)
        except TimeoutError:
            pytest.fail(f"not within 30 s: {what}")

    async def task(self, task_id: str) -> Task:
        (found,) = [t for t in await self.cluster.list_tasks(self.name) if t.id == task_id]
        return found

    async def stop(self) -> None:
        await self.agent.stop()
        self.driver.close()
        await self.plane.stop()
        for pid in service_processes(self.name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def demo_service(name: str, replicas: int, **spec: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": name,
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": replicas,
            "env": {"VERSION": "v1"},
            "stopGrace": "2s",
            **spec,
        }
    )


async def test_a_start_cut_short_by_a_crash_is_no_failure_of_the_release(tmp_path: Path) -> None:
    """The agent killed between starting a new task's process and recording it: at its restart
    the driver stops that process (nobody may adopt what was never recorded), and the task —
    still ``starting`` in the store — must be started again, not reported failed: the release
    is good, and a failure would roll it back."""
    sim = await InProcess(tmp_path).start()
    try:
        check = {"http": {"path": "/healthz"}, "interval": "200ms"}
        rolling = {"updateConfig": {"parallelism": 1, "monitor": "0s"}}
        service = demo_service(sim.name, 2, healthCheck=check, deploy=rolling)
        await sim.cluster.create_service(service)

        async def ready(revision: int) -> bool:
            active = [t for t in await sim.cluster.list_tasks(sim.name) if t.state.active]
            return len(active) == 2 and all(t.ready and t.revision == revision for t in active)

        await sim.until(functools.partial(ready, 1), "the first tasks to be ready")
        crashed = sim.crash_next_start(recorded=False)
        await sim.cluster.update_service(
            sim.name, lambda spec: spec.model_copy(update={"env": {"VERSION": "v2"}})
        )
        (update,) = [d for d in await sim.cluster.list_deployments(sim.name) if d.to_revision == 2]
        cut_short, pid = await asyncio.wait_for(crashed, 30)
        stray = _started(pid)
        assert _runs(pid, stray), "the process of the task cut short runs"
        assert (await sim.task(cut_short)).state == TaskState.STARTING

        await sim.restart_agent()

        async def the_update() -> Deployment:
            deployments = await sim.cluster.list_deployments(sim.name)
            return next(d for d in deployments if d.id == update.id)

        async def ended() -> bool:
            return (await the_update()).phase.terminal

        await sim.until(ended, "the update to end")
        assert (await the_update()).phase == Phase.SUCCEEDED, (await the_update()).message
        tasks = await sim.cluster.list_tasks(sim.name)
        assert [t for t in tasks if t.state == TaskState.FAILED] == []
        await sim.until(functools.partial(ready, 2), "the new tasks to be ready")
        # The stray is gone; what runs is exactly what the store says runs.
        assert not _runs(pid, stray)
        active = [t for t in await sim.cluster.list_tasks(sim.name) if t.state.active]
        assert {int(t.runtime_id or 0) for t in active} == service_processes(sim.name)
    finally:
        await sim.stop()


async def test_a_recorded_start_whose_process_died_meanwhile_is_a_failure(tmp_path: Path) -> None:
    """The same crash just after the record, and the process dies before the agent is back: it
    ran and ended on its own, which is a failure, still reported as one."""
    sim = await InProcess(tmp_path).start()
    try:
        crashed = sim.crash_next_start(recorded=True)
        await sim.cluster.create_service(demo_service(sim.name, 1))
        started, pid = await asyncio.wait_for(crashed, 30)
        os.killpg(pid, signal.SIGKILL)
        await sim.until(lambda: _true(not pid_alive(pid)), f"pid {pid} to die")

        await sim.restart_agent()

        async def failed() -> bool:
            return (await sim.task(started)).state == TaskState.FAILED

        await sim.until(failed, f"{started} to be reported failed")
        assert (await sim.task(started)).message == "process ended while the agent was down"
    finally:
        await sim.stop()


async def _true(value: bool) -> bool:
    return value


def _started(pid: int) -> int:
    """When ``pid`` started (ticks since boot, /proc/PID/stat field 22): with the pid, it names
    one process, even once the pid is recycled."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def _runs(pid: int, started: int) -> bool:
    """The process ``pid`` that started at ``started`` still runs (a zombie does not)."""
    with contextlib.suppress(OSError):
        return pid_alive(pid) and _started(pid) == started
    return False
