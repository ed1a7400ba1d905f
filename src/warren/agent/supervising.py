"""The agent: runs the tasks assigned to its node and reports what it observes.

It is the only writer of a task's observed state (state, endpoint, health, readiness, exit
code). Each active task has a supervisor coroutine that starts it through the driver, probes its
health, notices its exit, and — when its desired state turns to shutdown — drains it from the
ingress, stops it with the service's grace period, and reports it stopped.

After a restart the agent re-adopts what the driver still runs (``Driver.recover``) instead of
starting it again, reports as failed what died meanwhile, stops strays nobody wants, and starts
again a task whose start the restart cut short (never recorded by the driver: it never ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

from ..domain.errors import DriverError, InvalidTransitionError, NotFoundError, WarrenError
from ..domain.events import Level
from ..domain.logs import LogLine
from ..domain.nodes import Node
from ..domain.specs import ServiceSpec
from ..domain.tasks import Task, TaskState
from ..ports import (
    Clock,
    DataPlane,
    Dispatcher,
    Driver,
    ExitStatus,
    Prober,
    RecoveredTask,
    TaskHandle,
)

__all__ = ["Agent"]

log = logging.getLogger("warren.agent")

# Before a task's first successful probe, probe fast (25ms, 50ms, then every 100ms, or the
# interval if shorter) so that a rollout sees it ready within ~100ms of it listening, not a
# whole interval later. Failures still count once per interval.
FIRST_PROBE_DELAY = 0.025
FAST_PROBE_MAX = 0.1


class Agent:
    def __init__(
        self,
        node: Node,
        dispatcher: Dispatcher,
        drivers: Mapping[str, tuple[Driver, Prober]],
        clock: Clock,
        dataplane: DataPlane | None = None,
        heartbeat_ttl: float = 10.0,
    ) -> None:
        self.node = node
        self.dispatcher = dispatcher
        self.drivers = drivers
        self.clock = clock
        self.dataplane = dataplane
        self.heartbeat_ttl = heartbeat_ttl
        self.supervisors: dict[str, Supervisor] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._started = False

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def running(self) -> bool:
        """Started, and not stopped (or fenced) since."""
        return self._started

    async def start(self, assigned: Callable[[], Iterable[Task]]) -> None:
        """Register the node, then take charge of ``assigned()`` (this node's tasks in the
        store, read after every await here so that no change is missed): adopt what still
        runs, start what is pending, report what died, stop strays."""
        self.node = self.node.model_copy(update={"updated_at": self.clock.now()})
        await self.dispatcher.register(self.node, self.heartbeat_ttl)
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        recovered: dict[str, tuple[Driver, RecoveredTask]] = {}
        for driver, _ in self.drivers.values():
            for rec in await driver.recover():
                recovered[rec.task_id] = (driver, rec)
        wanted = {t.id for t in assigned() if t.node == self.name and t.state.active}
        for tid, (driver, rec) in recovered.items():
            if tid not in wanted:
                if rec.alive:
                    log.warning("stopping stray task %s (no longer in the store)", tid)
                    with contextlib.suppress(WarrenError):
                        await driver.stop(tid, 5.0)
                await driver.forget(tid)
        # No await from here on: every later change reaches task_changed.
        for task in assigned():
            if task.node == self.name and task.state.active and task.id not in self.supervisors:
                found = recovered.get(task.id)
                self._supervise(task, found[1] if found else None)
        self._started = True

    async def _keep_alive(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_ttl / 3)
            try:
                if not await self.dispatcher.heartbeat():
                    log.warning("node %s: heartbeat lease had expired; registered again", self.name)
            except WarrenError as exc:
                log.warning("node %s: heartbeat failed: %s", self.name, exc)

    def task_changed(self, old: Task | None, new: Task | None) -> None:
        """Called for every change of a task of this node (from the store's watch)."""
        if not self._started:
            return
        task = new or old
        assert task is not None
        sup = self.supervisors.get(task.id)
        if sup is not None:
            sup.update(new)
        elif new is not None and new.state == TaskState.PENDING and new.node == self.name:
            self._supervise(new, None)

    def _supervise(self, task: Task, recovered: RecoveredTask | None) -> None:
        sup = Supervisor(self, task, recovered)
        self.supervisors[task.id] = sup
        sup.start()

    async def spec_for(self, task: Task) -> ServiceSpec:
        spec = (await self.dispatcher.revision(task.service, task.revision)).runnable_spec()
        if task.job is None:
            return spec
        # A job runs its own command to its end: no probe, no wait to be ready.
        update = {"health_check": None, "min_ready": 0.0}
        return spec.model_copy(update={**update, "command": task.command or spec.command})

    def runtime(self, spec: ServiceSpec) -> tuple[Driver, Prober]:
        found = self.drivers.get(spec.effective_driver)
        if found is None:
            raise DriverError(f"node {self.name} has no {spec.effective_driver} driver")
        return found

    async def logs(
        self, task: Task, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        spec = await self.spec_for(task)
        return await self.runtime(spec)[0].logs(task.id, tail, since)

    async def follow(
        self, task: Task, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        """``Driver.follow`` of the task's driver."""
        spec = await self.spec_for(task)
        async for batch in self.runtime(spec)[0].follow(task.id, tail, since):
            yield batch

    async def fence(self, default_grace: float = 10.0) -> None:
        """Cut off from the managers for longer than the node's lease: the control plane has
        declared the node down and starts its tasks elsewhere. Stop supervising and stop every
        task the drivers run, now — so that none runs twice for longer than its stop grace. The
        drivers keep their records: when the agent starts again it reports the tasks stopped."""
        graces = {t: s.stop_grace for t, s in self.supervisors.items() if s.stop_grace is not None}
        await self.stop()

        async def halt(driver: Driver, task_id: str) -> None:
            with contextlib.suppress(WarrenError):
                await driver.stop(task_id, graces.get(task_id, default_grace))

        halts = []
        for driver, _ in self.drivers.values():
            with contextlib.suppress(WarrenError):
                halts += [halt(driver, r.task_id) for r in await driver.recover() if r.alive]
        await asyncio.gather(*halts)

    async def halt(self, why: str, at_once: bool = False) -> int:
        """Stop every task of the node, and report each stopped, without waiting for the
        control plane to shut them down: the node is leaving (``agent.leaving``). Each is
        drained and given its stop grace, or, ``at_once``, killed. Returns how many there
        were. A report waits for a manager: bound this with a timeout, and ``fence`` after."""
        supervisors = list(self.supervisors.values())
        for sup in supervisors:
            sup.halt(why, at_once)
        if at_once:  # those already stopping, drained and given their grace: killed too
            await asyncio.gather(*(sup.kill() for sup in supervisors))
        await asyncio.gather(*(sup.finished() for sup in supervisors))
        return len(supervisors)

    def stop_takes(self) -> float:
        """The longest a task of the node takes to stop: drain, then grace (10 s when unknown)."""
        return max(
            (
                (s.spec.drain_timeout + s.spec.stop_grace) if s.spec else 10.0
                for s in self.supervisors.values()
            ),
            default=0.0,
        )

    async def stop(self) -> None:
        """Stop supervising; the tasks themselves keep running (a restarted agent adopts them)."""
        self._started = False
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        for sup in list(self.supervisors.values()):
            await sup.cancel()


class Supervisor:
    """Looks after one task from start to end. Its memory (the driver handle, the probe
    counters) is the agent's view of a running process, not rollout progress: after a restart
    it is rebuilt from the driver and the store."""

    def __init__(self, agent: Agent, task: Task, recovered: RecoveredTask | None) -> None:
        self.agent = agent
        self.task = task
        self.recovered = recovered
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._deleted = False
        self._health_failure = ""
        """Set by the health watcher when the task failed its probes: stop it as failed."""
        self.stop_grace: float | None = None
        """Known once the task's spec is read."""
        self.spec: ServiceSpec | None = None
        """Known once read: what its stop takes (drain timeout, stop grace)."""
        self._halt: tuple[str, bool] | None = None
        """Stop the task though its desired state says run: (why, at once). Its node leaves."""

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name=self.task.id)

    def update(self, task: Task | None) -> None:
        if task is None:
            self._deleted = True
        else:
            self.task = task
        self._changed.set()

    def halt(self, why: str, at_once: bool = False) -> None:
        """Stop the task now, whatever the control plane wants: its node is leaving the
        cluster and the task could not move in time. ``at_once``: no drain, no grace."""
        if self._halt is None or at_once:
            self._halt = (why, at_once)
        self._changed.set()

    async def kill(self) -> None:
        """Kill the task's process now, if it has one (its supervisor reports the stop)."""
        driver: Driver | None = getattr(self, "driver", None)
        if driver is not None:
            with contextlib.suppress(WarrenError):
                await driver.stop(self.task.id, 0.0)

    async def finished(self) -> None:
        """Wait until the supervisor has ended (the task stopped and reported)."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._runner)

    async def cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    @property
    def _wants_stop(self) -> bool:
        return (
            self._deleted
            or self._halt is not None
            or not self.task.wants_running
            or self.task.state == TaskState.STOPPING
        )

    async def _report(self, change: Callable[[Task], Task | None]) -> Task | None:
        """Write observed state with compare-and-swap; the task may be gone or ended."""

        def guarded(task: Task) -> Task | None:
            try:
                return change(task)
            except InvalidTransitionError as exc:
                log.debug("%s", exc)
                return None

        try:
            updated = await self.agent.dispatcher.update_task(self.task.id, guarded)
        except NotFoundError:
            self._deleted = True
            return None
        if updated is not None:
            self.task = updated
        return updated

    async def _become(self, state: TaskState, **fields: object) -> Task | None:
        """Report a state transition, now."""
        now = self.agent.clock.now()
        return await self._report(lambda t: t.transition(state, now, **fields))

    async def _note(self, **fields: object) -> Task | None:
        """Report observed fields that are not a state change (health, readiness), now."""
        now = self.agent.clock.now()
        return await self._report(lambda t: t.changed(now, **fields))

    async def _run(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("supervisor of %s failed", self.task.id)
            await self._become(TaskState.FAILED, message=f"agent error: {exc}")
        finally:
            self.agent.supervisors.pop(self.task.id, None)

    async def _supervise(self) -> None:
        agent, clock, tid = self.agent, self.agent.clock, self.task.id
        try:
            spec = await agent.spec_for(self.task)
            driver, prober = agent.runtime(spec)
        except NotFoundError:
            await self._become(TaskState.FAILED, message="revision is gone")
            return
        except DriverError as exc:
            await self._become(TaskState.FAILED, message=exc.message)
            return
        self.driver, self.prober = driver, prober
        self.stop_grace, self.spec = spec.stop_grace, spec
        # Starting, and the driver has no record of it: the agent died in the middle of the start,
        # before the driver recorded a process (whatever it had forked, its recover stopped).
        # Nothing of the task ever ran, so nothing failed: it is started again. Reported failed,
        # it would count against its release and roll a good one back.
        cut_short = self.task.state == TaskState.STARTING and self.recovered is None
        handle: TaskHandle | None = None
        if self.recovered is not None and self.recovered.alive:
            handle = self.recovered.handle
            log.info("re-adopted %s (%s)", tid, handle.runtime_id)
        elif self.task.state == TaskState.STOPPING or (
            not self.task.wants_running and self.task.state != TaskState.PENDING
        ):
            # It was being stopped when the agent went down (or its node was cut off and it
            # was stopped then, replaced elsewhere), and it is gone: stopped.
            if self.task.state != TaskState.STOPPING:
                await self._become(TaskState.STOPPING)
            await self._become(TaskState.STOPPED, message="stopped while the agent was away")
            await self.driver.forget(tid)
            return
        elif self.task.state != TaskState.PENDING and not cut_short:
            await self._become(TaskState.FAILED, message="process ended while the agent was down")
            await self.driver.forget(tid)
            return
        else:
            if self._wants_stop:
                await self._become(TaskState.STOPPED, message="never started")
                return
            if cut_short:
                log.info("starting %s again: its start was cut short by a restart", tid)
            await self._become(TaskState.STARTING)
            try:
                handle = await self.driver.start(self.task, spec)
            except DriverError as exc:
                message = f"start failed: {exc.message}"
                await self._become(TaskState.FAILED, message=message)
                await self._event_failed(message)
                return

        instantly_ready = spec.health_check is None and spec.min_ready == 0
        started = handle

        def running(t: Task) -> Task | None:
            now = clock.now()
            fields: dict[str, object] = {
                "endpoint": started.endpoint,
                "runtime_id": started.runtime_id,
            }
            if started.image_digest is not None:
                fields["image_digest"] = started.image_digest
            if t.state in (TaskState.PENDING, TaskState.STARTING):
                ready = {"ready": True, "ready_at": now} if instantly_ready else {}
                if t.state == TaskState.PENDING:
                    t = t.transition(TaskState.STARTING, now)
                return t.transition(
                    TaskState.RUNNING,
                    now,
                    started_at=started.started_at,
                    message="",
                    **fields,
                    **ready,
                )
            if t.endpoint == started.endpoint and t.runtime_id == started.runtime_id:
                return None  # re-adopted as it was: nothing to report
            return t.changed(now, **fields)

        await self._report(running)
        exit_wait = asyncio.ensure_future(self.driver.wait(tid))
        health: asyncio.Task[None] | None = None
        if not instantly_ready and self.task.state == TaskState.RUNNING:
            health = asyncio.ensure_future(self._watch_health(spec, handle))
        try:
            while True:
                self._changed.clear()
                if self._wants_stop or exit_wait.done() or self._health_failure:
                    break
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({exit_wait, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        except BaseException:
            exit_wait.cancel()
            raise
        finally:
            if health is not None:
                await _cancel(health, tid)
        if self._health_failure:
            exit_wait.cancel()
            await self._stop(spec, handle, TaskState.FAILED, self._health_failure)
            await self._event_failed(self._health_failure)
        elif exit_wait.done() and not self._wants_stop:
            await self._ended(exit_wait.result())
        elif self._halt is not None and self.task.wants_running:
            exit_wait.cancel()
            why, at_once = self._halt
            await (
                self._stop_at_once(why)
                if at_once
                else self._stop(spec, handle, TaskState.STOPPED, why)
            )
        else:
            exit_wait.cancel()
            await self._stop(spec, handle, TaskState.STOPPED, self.task.message or "stopped")
        await self.driver.forget(tid)

    async def _event_failed(self, message: str) -> None:
        await self.agent.dispatcher.record(
            "task.failed", f"{self.task.id}: {message}", Level.ERROR, self.task
        )

    async def _ended(self, status: ExitStatus) -> None:
        """The task ended on its own: complete (exit 0) or failed."""
        state = TaskState.COMPLETE if status.exit_code == 0 else TaskState.FAILED
        await self._become(state, exit_code=status.exit_code, message=status.reason)
        if state == TaskState.FAILED:
            await self._event_failed(status.reason)

    async def _stop(
        self, spec: ServiceSpec, handle: TaskHandle, final: TaskState, why: str
    ) -> None:
        """Out of rotation, in-flight requests finished (drain), then SIGTERM, grace, SIGKILL."""
        agent = self.agent
        await self._become(TaskState.STOPPING)
        if agent.dataplane is not None and handle.endpoint:
            # The data plane answers 504 to the requests that outlive the drain timeout before
            # it returns: the stop below then cuts none of them (no 502).
            left = await agent.dataplane.drain(handle.endpoint, spec.drain_timeout)
            if left:
                log.warning(
                    "%s: %d request(s) outlived the drain timeout (%gs): answered 504",
                    self.task.id,
                    left,
                    spec.drain_timeout,
                )
        status = await self.driver.stop(self.task.id, spec.stop_grace)
        await self._become(final, exit_code=status.exit_code, message=why)

    async def _stop_at_once(self, why: str) -> None:
        """Kill first, report after: the node leaves now, and a report may wait for a manager
        (no drain: the control plane routes to the replacement once it hears of the stop)."""
        status = await self.driver.stop(self.task.id, 0.0)
        await self._become(TaskState.STOPPING)
        await self._become(TaskState.STOPPED, exit_code=status.exit_code, message=why)

    async def _watch_health(self, spec: ServiceSpec, handle: TaskHandle) -> None:
        clock = self.agent.clock
        check = spec.health_check
        if check is None:  # no probe: ready after running for min_ready
            await clock.sleep(spec.min_ready)
            await self._note(ready=True, ready_at=clock.now())
            return
        failures = 0
        last_counted = handle.started_at
        delay = FIRST_PROBE_DELAY
        healthy = self.task.healthy
        while True:
            result = await self.prober.probe(check, self.task, spec)
            now = clock.now()
            if result.ok:
                failures = 0
                last_counted = now
                if healthy is not True:
                    healthy = True
                    ready_at = self.task.ready_at or now
                    await self._note(healthy=True, ready=True, ready_at=ready_at, message="")
            elif now >= handle.started_at + check.start_period and (
                healthy is True or now - last_counted >= check.interval
            ):
                # Before the first success, probes come fast; count one failure per interval.
                failures += 1
                last_counted = now
                if failures >= check.retries:
                    # The supervisor stops it (drained first) and reports it failed, so that
                    # the reconciler replaces it, as Swarm does with unhealthy tasks.
                    message = f"health check failed: {result.detail}"
                    log.info("%s: %s", self.task.id, message)
                    await self._note(healthy=False, ready=False, message=message)
                    self._health_failure = message
                    self._changed.set()
                    return
            if healthy is True:
                await clock.sleep(check.interval)
            else:
                await clock.sleep(min(delay, check.interval))
                delay = min(delay * 2, FAST_PROBE_MAX)


async def _cancel(task: asyncio.Task[None], name: str) -> None:
    """Cancel a helper task and wait until it has ended — asking again if a cancellation got
    lost — without letting its failure keep the supervisor from stopping the task."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.error("%s: health watcher failed", name, exc_info=task.exception())
