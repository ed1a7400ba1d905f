"""The fake driver: a real driver whose behaviour is set through the task's env, so that every
controller test runs the real code paths. Time comes from the Clock port.

Knobs (env of the service):

- ``FAKE_START_ERROR=msg``: start fails with that message;
- ``FAKE_START_DELAY=2s``: start takes that long;
- ``FAKE_RUN_FOR=10s`` and ``FAKE_EXIT_CODE=N`` (default 0): the task ends on its own;
- ``FAKE_TALK=N``: the task prints ``line 0`` … ``line N-1``, one every 50 ms, then ends (exit
  code 0);
- ``FAKE_READY_AFTER=3s``: health probes fail until the task has run that long;
- ``FAKE_UNHEALTHY=1``: health probes always fail;
- ``FAKE_FLAP=2s``: once ready, health probes pass for 2 s, fail for 2 s, pass … (a flapping
  health check).

A command ``env KEY=VALUE … [CMD]`` sets knobs of its own, as ``env(1)`` would (a job's:
``env FAKE_RUN_FOR=2s FAKE_EXIT_CODE=3 migrate``).

It is also the Prober of its tasks (probes answer from the knobs above).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ...domain.durations import parse_duration
from ...domain.errors import DriverError
from ...domain.logs import LogLine, stamp_of
from ...domain.specs import HealthCheck, ServiceSpec
from ...domain.tasks import Task
from ...ports import Clock, ExitStatus, ProbeResult, RecoveredTask, TaskHandle

__all__ = ["FakeDriver"]


@dataclass
class _FakeTask:
    handle: TaskHandle
    env: dict[str, str]
    exited: asyncio.Future[ExitStatus]
    timer: asyncio.Task[None] | None = None


class FakeDriver:
    name = "fake"

    def __init__(self, clock: Clock, address: str = "127.0.0.1") -> None:
        self._clock = clock
        self._address = address
        self._tasks: dict[str, _FakeTask] = {}
        self._ports = itertools.count(40000)
        self._logs: dict[str, list[LogLine]] = {}
        self._changed = asyncio.Event()
        """Set (and replaced) whenever a task writes a line or ends: what follows wait on."""
        self.started: list[str] = []
        """Every task id ever started, in order (tests assert nothing starts twice)."""

    def _task(self, task_id: str) -> _FakeTask:
        found = self._tasks.get(task_id)
        if found is None:
            raise DriverError(f"task {task_id} is not known to the fake driver")
        return found

    async def start(self, task: Task, spec: ServiceSpec) -> TaskHandle:
        env = {**spec.env, **_env_of(spec.command)}
        if "FAKE_START_DELAY" in env:
            await self._clock.sleep(parse_duration(env["FAKE_START_DELAY"]))
        if "FAKE_START_ERROR" in env:
            raise DriverError(env["FAKE_START_ERROR"])
        handle = TaskHandle(
            runtime_id=f"fake-{task.id}",
            endpoint=f"{self._address}:{next(self._ports)}",
            started_at=self._clock.now(),
        )
        fake = _FakeTask(handle, dict(env), asyncio.get_running_loop().create_future())
        self._tasks[task.id] = fake
        self.started.append(task.id)
        self.write(task.id, f"started {task.id}")
        if "FAKE_RUN_FOR" in env:
            code = int(env.get("FAKE_EXIT_CODE", "0"))
            fake.timer = asyncio.get_running_loop().create_task(
                self._exit_after(fake, parse_duration(env["FAKE_RUN_FOR"]), code)
            )
        elif "FAKE_TALK" in env:
            fake.timer = asyncio.get_running_loop().create_task(
                self._talk(task.id, fake, int(env["FAKE_TALK"]))
            )
        return handle

    async def _talk(self, task_id: str, fake: _FakeTask, lines: int) -> None:
        for n in range(lines):
            await self._clock.sleep(0.05)
            self.write(task_id, f"line {n}")
        await self._exit_after(fake, 0, 0)

    async def _exit_after(self, fake: _FakeTask, seconds: float, code: int) -> None:
        await self._clock.sleep(seconds)
        if not fake.exited.done():
            fake.exited.set_result(ExitStatus(code, f"exited with code {code}"))
            self._notify()

    async def wait(self, task_id: str) -> ExitStatus:
        return await asyncio.shield(self._task(task_id).exited)

    async def stop(self, task_id: str, grace: float) -> ExitStatus:
        fake = self._tasks.get(task_id)
        if fake is None:
            return ExitStatus(None, "not running")
        if not fake.exited.done():
            fake.exited.set_result(ExitStatus(0, "stopped"))
            self._notify()
        if fake.timer is not None:
            fake.timer.cancel()
        return fake.exited.result()

    def crash(self, task_id: str, code: int = 137) -> None:
        """Tests: the task dies now."""
        fake = self._task(task_id)
        if not fake.exited.done():
            fake.exited.set_result(ExitStatus(code, f"killed (exit code {code})"))
            self._notify()

    def write(self, task_id: str, text: str) -> None:
        """Tests: the task prints a line (read now, by the clock)."""
        self._logs.setdefault(task_id, []).append(LogLine(stamp_of(self._clock.now()), text))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def recover(self) -> list[RecoveredTask]:
        return [
            RecoveredTask(tid, fake.handle, alive=not fake.exited.done())
            for tid, fake in self._tasks.items()
        ]

    async def forget(self, task_id: str) -> None:
        fake = self._tasks.pop(task_id, None)
        if fake is not None and fake.timer is not None:
            fake.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fake.timer
        self._notify()

    async def logs(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        lines = [x for x in self._logs.get(task_id, []) if since is None or x.time >= since]
        return lines[-tail:] if tail else lines

    async def follow(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        yield await self.logs(task_id, tail, since)
        seen = len(self._logs.get(task_id, []))
        while True:
            changed = self._changed
            new = self._logs.get(task_id, [])[seen:]
            if new:
                seen += len(new)
                yield new
                continue
            fake = self._tasks.get(task_id)
            if fake is None or fake.exited.done():
                return
            await changed.wait()

    def running(self) -> list[str]:
        return [tid for tid, fake in self._tasks.items() if not fake.exited.done()]

    async def probe(self, check: HealthCheck, task: Task, spec: ServiceSpec) -> ProbeResult:
        fake = self._tasks.get(task.id)
        if fake is None or fake.exited.done():
            return ProbeResult(False, "not running")
        if fake.env.get("FAKE_UNHEALTHY", "") not in ("", "0"):
            return ProbeResult(False, "unhealthy (FAKE_UNHEALTHY)")
        ready_after = parse_duration(fake.env.get("FAKE_READY_AFTER", "0"))
        since = self._clock.now() - (fake.handle.started_at + ready_after)
        if since < 0:
            return ProbeResult(False, "not ready yet (FAKE_READY_AFTER)")
        flap = parse_duration(fake.env.get("FAKE_FLAP", "0"))
        if flap > 0 and int(since / flap) % 2 == 1:
            return ProbeResult(False, "flapping (FAKE_FLAP)")
        return ProbeResult(True, "ok")


def _env_of(command: tuple[str, ...] | None) -> dict[str, str]:
    """The ``KEY=VALUE`` words after a leading ``env`` of ``command``."""
    if not command or command[0] != "env":
        return {}
    words = itertools.takewhile(lambda w: "=" in w, command[1:])
    return dict(w.split("=", 1) for w in words)
