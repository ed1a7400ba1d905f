"""A Hypothesis state machine for the deployment controller, with the reconciler, the scheduler
and 2-3 agents on the fake driver and a fake clock: users create services, roll out good and bad
revisions, scale, pause, resume and roll back; tasks crash, agents restart, the whole control
plane restarts (at a quiet moment or in the middle of its work), time passes — and the safety
invariants of rollouts hold after every step. A ``wait_for_convergence`` rule then checks
liveness: given time, every rollout ends where it must."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.helpers import SimCluster
from warren.control import reconciling
from warren.control.plane import ControlPlane
from warren.domain.deployments import (
    DECISIONS_KEPT,
    Deployment,
    DeploymentKind,
    Phase,
    Reason,
)
from warren.domain.errors import ConflictError, NotFoundError, ValidationError
from warren.domain.requests import Intent
from warren.domain.specs import ServiceSpec, UpdateOrder
from warren.domain.tasks import Task, TaskState
from warren.planning.releases import last_good_revision
from warren.store.cluster import DEPLOYMENTS_KEPT

SERVICES = ("api", "web")
GOOD = {"FAKE_READY_AFTER": "1s"}
BAD = {
    "unhealthy": {"FAKE_UNHEALTHY": "1"},
    "start_error": {"FAKE_START_ERROR": "no such image"},
    "run_for": {"FAKE_RUN_FOR": "2s", "FAKE_EXIT_CODE": "1"},
}
CONFIGS = st.fixed_dictionaries(
    {
        "replicas": st.integers(1, 5),
        "parallelism": st.integers(0, 3),
        "order": st.sampled_from(["start-first", "stop-first"]),
        "monitor": st.sampled_from(["0s", "1s", "3s"]),
        "failureAction": st.sampled_from(["rollback", "rollback", "pause", "continue"]),
        "maxFailureRatio": st.sampled_from([0.0, 0.5]),
    }
)
"""A service's replicas and update config. A 3 s monitor outlives a ``run_for`` task."""
RUN_FOR = 2.0
"""How long a ``run_for`` task lives: it is ready at once and exits 1 after 2 s, so only a
monitor longer than that catches it before its slot counts as done."""
STEP_TIMEOUT = 20.0
"""Real seconds one step may take."""
CONVERGE = 31.0
"""Restart back-offs are at most 30 s; every rollout here ends in less than 3 x 31 s."""


def is_good(spec: ServiceSpec) -> bool:
    return not {"FAKE_UNHEALTHY", "FAKE_START_ERROR", "FAKE_RUN_FOR"} & set(spec.env)


def service_of(task_id: str) -> str:
    return task_id.rsplit(".", 2)[0]


def extends(old: list[tuple[float, str]], new: list[tuple[float, str]]) -> bool:
    """``new`` is ``old`` with entries appended, the oldest trimmed once there are more than
    DECISIONS_KEPT: some suffix of ``old`` starts ``new``."""
    if len(new) < len(old):
        return False
    if len(new) < DECISIONS_KEPT:
        return new[: len(old)] == old
    return any(new[: len(old) - k] == old[k:] for k in range(len(old) + 1))


class CountingSuffixes:
    """Stands in for the ``secrets`` module of the reconciler: task id suffixes in creation
    order instead of random ones. The ids order the store's keys, hence the order in which
    agents start tasks and informers see events: with them fixed, a test case replays exactly
    and Hypothesis can shrink it."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def token_hex(self, nbytes: int) -> str:
        return f"{next(self._next):0{2 * nbytes}x}"


class PlaneRestartingCluster(SimCluster):
    async def restart_control_plane(self) -> None:
        """The manager dies and a new one starts on the same store and clock; the agents keep
        running and follow the new plane's task informer."""
        await self.plane.stop()
        self.plane = ControlPlane(self.cluster, self.clock, self.dataplane, self.metrics)
        self.plane.tasks.on_change(self._dispatch)
        await self.plane.start()

    async def quiesce(self, rounds: int = 20) -> None:
        """Quiet on the fake clock, and no short real-time wait pending. A controller that lost
        a compare-and-swap race waits up to 50 real ms for the store to move on
        (``Informer.wait_for``); stopping before that ends would leave the next step racing
        with it, and the run would depend on the machine's speed."""
        loop = asyncio.get_running_loop()
        while True:
            await super().quiesce(rounds)
            due = [
                h.when()
                for h in loop._scheduled  # type: ignore[attr-defined]
                if not h.cancelled() and h.when() - loop.time() < 1.0
            ]
            if not due:
                return
            await asyncio.sleep(max(due) - loop.time())


@dataclass
class Expectation:
    """What the last user action on a service must lead to, once time has passed."""

    deployment_id: str
    kind: str
    """An update (``good`` or a kind of BAD), or a manual ``rollback``."""
    from_revision: int | None
    to_revision: int
    checked: bool
    """Whether the outcome is certain: see the rules that create and disturb it."""


@dataclass
class FloorWatch:
    """A start-first deployment that began with every slot ready (see ready_floor)."""

    deployment_id: str
    replicas: int
    """The fewest replicas the service had since the deployment started."""
    crashes: int = 0


class DeploymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim: PlaneRestartingCluster | None = None
        self.secrets: Any = None
        self.services: set[str] = set()
        self.versions = itertools.count(2)
        self.seen: dict[str, Deployment] = {}
        self.expect: dict[str, Expectation] = {}
        self.floor: dict[str, FloorWatch] = {}
        self.crashed: dict[str, set[tuple[float, int]]] = {}
        """(time, revision) of the tasks crashed, per service."""

    def run(self, coro):  # type: ignore[no-untyped-def]
        # Every step runs on the fake clock in well under a second of real time: bound it, so
        # that a hang fails the test (and Hypothesis can shrink it) instead of stalling it.
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP_TIMEOUT))

    @property
    def cluster(self) -> PlaneRestartingCluster:
        assert self.sim is not None
        return self.sim

    def teardown(self) -> None:
        try:
            if self.sim is not None:
                self.run(self.sim.stop())
        finally:
            if self.secrets is not None:
                reconciling.secrets = self.secrets  # type: ignore[assignment]
            # The fake engines' timers (FAKE_RUN_FOR) outlive the cluster: end them too.
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            if left:
                self.loop.run_until_complete(asyncio.wait(left, timeout=STEP_TIMEOUT))
            self.loop.close()

    @initialize(nodes=st.integers(2, 3), config=CONFIGS)
    def start(self, nodes: int, config: dict[str, Any]) -> None:
        """A cluster, and the first service (a second one may come later)."""
        self.secrets, reconciling.secrets = reconciling.secrets, CountingSuffixes()  # type: ignore[assignment]
        self.sim = PlaneRestartingCluster(nodes=nodes)
        self.run(self.sim.start())
        self._create(SERVICES[0], config)

    # ── helpers ──────────────────────────────────────────────────────────────────────────────

    async def _latest(self, name: str) -> Deployment | None:
        found = await self.cluster.cluster.latest_deployment(name)
        return found[0] if found else None

    async def _fully_ready(self, name: str) -> int | None:
        """The replica count if every slot has a ready task and no task of a revision that
        will end on its own (``run_for``) is active; else None."""
        service, _ = await self.cluster.cluster.get_service(name)
        tasks = await self.cluster.tasks(name)
        for t in tasks:
            if t.state.active:
                spec = (await self.cluster.cluster.get_revision(name, t.revision)).spec
                if "FAKE_RUN_FOR" in spec.env:
                    return None
        replicas = service.spec.replicas
        ready = {t.slot for t in tasks if t.ready and t.state.active and t.slot <= replicas}
        return replicas if len(ready) == replicas else None

    async def _started(
        self, name: str, ready_replicas: int | None, expectation: Expectation
    ) -> None:
        """Book-keeping after a user action started a deployment."""
        # A task crashed at this very instant was created no later than a rollout starting
        # now, so the rollout counts it as one of its failures: this one (crashed task of
        # its revision), or the automatic rollback a bad update may start at once (crashed
        # task of the revision it goes back to).
        now = self.cluster.clock.now()
        moved_to = {expectation.to_revision}
        if expectation.kind in BAD and expectation.from_revision is not None:
            moved_to.add(expectation.from_revision)
        if any((now, revision) in self.crashed.get(name, ()) for revision in moved_to):
            expectation.checked = False
        self.expect[name] = expectation
        latest = await self._latest(name)
        assert latest is not None and latest.id == expectation.deployment_id
        self.floor.pop(name, None)
        if ready_replicas is not None and latest.config.order == UpdateOrder.START_FIRST:
            self.floor[name] = FloorWatch(latest.id, ready_replicas)
        await self.cluster.quiesce()

    # ── user actions ─────────────────────────────────────────────────────────────────────────

    def _create(self, name: str, config: dict[str, Any]) -> None:
        spec = ServiceSpec.model_validate(
            {
                "name": name,
                "command": ["app"],
                "driver": "fake",
                "replicas": config["replicas"],
                "env": {"VERSION": "v1", **GOOD},
                "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
                "deploy": {"updateConfig": {k: v for k, v in config.items() if k != "replicas"}},
            }
        )
        self.run(self.cluster.cluster.create_service(spec))
        self.services.add(name)
        self.run(self.cluster.quiesce())

    @precondition(lambda self: len(self.services) < len(SERVICES))
    @rule(config=CONFIGS)
    def create(self, config: dict[str, Any]) -> None:
        self._create(SERVICES[len(self.services)], config)

    # One argument, (which service, what kind of revision): Hypothesis tries rules with fewer
    # arguments first, and this is the rule that matters most.
    @rule(update=st.tuples(st.integers(0, 1), st.sampled_from(["good", "good", *BAD])))
    def deploy_new_revision(self, update: tuple[int, str]) -> None:
        """``warren service update``: a new VERSION, good or bad (see BAD)."""
        which, kind = update
        name = self._service(which)
        env = {"VERSION": f"v{next(self.versions)}", **(GOOD if kind == "good" else BAD[kind])}

        async def go() -> None:
            before, _ = await self.cluster.cluster.get_service(name)
            ready = await self._fully_ready(name)
            service, changed = await self.cluster.cluster.update_service(
                name, lambda spec: spec.model_copy(update={"env": env})
            )
            assert changed
            latest = await self._latest(name)
            assert latest is not None and latest.to_revision == service.revision
            cfg = latest.config
            # Certain outcomes: a good revision succeeds; a bad one with failure action rollback
            # is rolled back to a good previous revision — unless its tasks are ready long
            # enough to count as done before they die (run_for with a monitor under 2 s), or
            # there is nothing to move (0 replicas).
            caught = kind != "run_for" or cfg.monitor > RUN_FOR
            checked = before.spec.replicas > 0 and (
                kind == "good"
                or (cfg.failure_action == "rollback" and caught and is_good(before.spec))
            )
            expectation = Expectation(
                latest.id,
                kind,
                before.revision,
                service.revision,
                checked,
            )
            await self._started(name, ready, expectation)

        self.run(go())

    @rule(which=st.integers(0, 1), replicas=st.integers(0, 5))
    def scale(self, which: int, replicas: int) -> None:
        name = self._service(which)

        async def go() -> None:
            await self.cluster.cluster.update_service(
                name, lambda spec: spec.model_copy(update={"replicas": replicas})
            )
            watch = self.floor.get(name)
            if watch is not None:
                watch.replicas = min(watch.replicas, replicas)
            latest = await self._latest(name)
            expectation = self.expect.get(name)
            # At 0 replicas a rollout has nothing to move: it succeeds, bad revision or not.
            if replicas == 0 and expectation and latest and not latest.phase.terminal:
                expectation.checked = False
            await self.cluster.quiesce()

        self.run(go())

    def _service(self, which: int) -> str:
        names = sorted(self.services)
        return names[which % len(names)]

    def _pick(self, which: int, phase: Phase) -> str | None:
        """The ``which``-th service (modulo) whose newest deployment is in ``phase``. Rules draw
        a plain index rather than from a list of what exists, so that the draws do not depend
        on the simulation's state."""
        names = [
            n
            for n in sorted(self.services)
            if (d := self.run(self._latest(n))) and d.phase == phase
        ]
        return names[which % len(names)] if names else None

    @rule(which=st.integers(0, 1))
    def pause(self, which: int) -> None:
        """``POST /v1/services/{name}/deployment/pause``: the request, which the deployment
        controller applies."""
        name = self._pick(which, Phase.PROGRESSING)
        if name is None:
            return
        self.run(self.cluster.cluster.ask(name, Intent.PAUSE))
        # A paused rollout waits for a human: its outcome is no longer certain.
        if name in self.expect:
            self.expect[name].checked = False
        self.run(self.cluster.quiesce())

    @rule(which=st.integers(0, 1))
    def resume(self, which: int) -> None:
        """``POST /v1/services/{name}/deployment/resume``."""
        name = self._pick(which, Phase.PAUSED)
        if name is None:
            return
        self.run(self.cluster.cluster.ask(name, Intent.RESUME))
        self.run(self.cluster.quiesce())

    @rule(which=st.integers(0, 1))
    def rollback(self, which: int) -> None:
        """``warren service rollback NAME``: back to the previous revision (or, while a
        deployment is active, to the revision it started from)."""
        name = self._service(which)

        async def go() -> None:
            before, _ = await self.cluster.cluster.get_service(name)
            ready = await self._fully_ready(name)
            latest = await self._latest(name)
            try:
                service, started, _ = await self.cluster.cluster.rollback_service(name)
            except (ConflictError, ValidationError, NotFoundError):
                return  # nothing to go back to, already there, or that revision was trimmed
            # Asked for during an automatic rollback, it never goes back to the failed revision.
            if (
                latest is not None
                and latest.active
                and latest.decisions
                and latest.decisions[0].reason == Reason.AUTOMATIC_ROLLBACK
            ):
                assert service.revision != latest.from_revision, (latest.id, service.revision)
            checked = before.spec.replicas > 0 and is_good(service.spec)
            expectation = Expectation(
                started.id, "rollback", before.revision, service.revision, checked
            )
            await self._started(name, ready, expectation)

        self.run(go())

    # ── the world ────────────────────────────────────────────────────────────────────────────

    @rule(which=st.integers(0, 19))
    def task_crashes(self, which: int) -> None:
        """The ``which``-th (modulo) task that runs, by service, slot and age, dies."""
        tasks = {t.id: t for t in self.run(self.cluster.tasks())}
        running = sorted(
            (tasks[tid].service, tasks[tid].slot, tasks[tid].created_at, node, tid)
            for node, fake in self.cluster.drivers.items()
            for tid in fake.running()
            if tid in tasks
        )
        if not running:
            return
        *_, node, tid = running[which % len(running)]
        name = service_of(tid)

        async def go() -> None:
            task, _ = await self.cluster.cluster.get_task(tid)
            latest = await self._latest(name)
            expectation = self.expect.get(name)
            # A crashed task of the revision the active rollout moves to (the update expected,
            # or the rollback undoing it) counts as one of its failures (and see _started).
            self.crashed.setdefault(name, set()).add((self.cluster.clock.now(), task.revision))
            if (
                expectation
                and latest
                and not latest.phase.terminal
                and task.revision == latest.to_revision
            ):
                expectation.checked = False
            if name in self.floor:
                self.floor[name].crashes += 1
            self.cluster.drivers[node].crash(tid)
            await self.cluster.quiesce()

        self.run(go())

    @rule(which=st.integers(1, 3))
    def restart_agent(self, which: int) -> None:
        node = f"n{min(which, len(self.cluster.drivers))}"
        self.run(self.cluster.restart_agent(node))
        self.run(self.cluster.quiesce())

    @rule(
        seconds=st.sampled_from([0.0, 0.03, 0.5, 1.0, 2.0]),
        rounds=st.integers(0, 60),
    )
    def restart_control_plane(self, seconds: float, rounds: int) -> None:
        """Time jumps ``seconds`` ahead (every timer due meanwhile fires at once, as after a
        stall), and the manager dies after ``rounds`` turns of the event loop — often in the
        middle of a sync — and a new one takes over."""

        async def go() -> None:
            # Within a jump, a task's exit and the end of a monitor period fall due together,
            # and the controller may see the second first: a run_for task still reported
            # ready when its monitor ends counts as done — what a stalled agent would cause.
            latest = {n: await self._latest(n) for n in self.services}
            for name, exp in self.expect.items():
                d = latest[name]
                if exp.kind == "run_for" and seconds and d and not d.phase.terminal:
                    exp.checked = False
            self.cluster.clock.advance(seconds)
            await self.cluster.clock.settle(rounds)
            await self.cluster.restart_control_plane()
            await self.cluster.quiesce()

        self.run(go())

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.cluster.advance(seconds))

    # ── invariants ───────────────────────────────────────────────────────────────────────────

    def _deployments(self) -> dict[str, list[Deployment]]:
        return {n: self.run(self.cluster.cluster.list_deployments(n)) for n in self.services}

    @invariant()
    def one_active_deployment_and_it_is_the_newest(self) -> None:
        for name, ds in self._deployments().items():
            active = [d.id for d in ds if d.active]
            assert len(active) <= 1, (name, active)
            if active:
                assert active[0] == ds[-1].id, (name, active, ds[-1].id)

    @invariant()
    def deployment_history_is_append_only(self) -> None:
        """failed_tasks and the decision log only grow; a terminal phase is final; a deployment
        is never forgotten while fewer than DEPLOYMENTS_KEPT are kept."""
        current: dict[str, Deployment] = {}
        for ds in self._deployments().values():
            current.update((d.id, d) for d in ds)
            assert len(ds) <= DEPLOYMENTS_KEPT
        for did, old in self.seen.items():
            new = current.get(did)
            if new is None:
                assert len([d for d in current.values() if d.service == old.service]) >= (
                    DEPLOYMENTS_KEPT - 1
                ), f"{did} vanished"
                continue
            assert new.failed_tasks[: len(old.failed_tasks)] == old.failed_tasks, (old, new)
            log_old = [(x.time, x.reason) for x in old.decisions]
            log_new = [(x.time, x.reason) for x in new.decisions]
            assert extends(log_old, log_new), (did, log_old, log_new)
            if old.phase.terminal:
                assert new.phase == old.phase, (did, old.phase, new.phase)
        self.seen = {**self.seen, **current}

    @invariant()
    def terminal_deployments_have_finished(self) -> None:
        for ds in self._deployments().values():
            for d in ds:
                if d.phase.terminal:
                    assert d.finished_at is not None, d
                    assert d.finished_at >= d.started_at, d

    @invariant()
    def rolling_back_is_linked_to_its_rollback(self) -> None:
        """Once the system is quiet, a deployment rolling back names the rollback deployment
        that undoes it, and that one names it back."""
        for name, ds in self._deployments().items():
            by_id = {d.id: d for d in ds}
            for d in ds:
                if d.phase == Phase.ROLLING_BACK:
                    assert d.rolled_back_by is not None, (name, d)
                    rollback = by_id.get(d.rolled_back_by)
                    assert rollback is not None, (name, d.rolled_back_by)
                    assert rollback.kind == DeploymentKind.ROLLBACK, rollback
                    assert rollback.rollback_of == d.id, (d.id, rollback)

    @invariant()
    def older_deployments_have_ended(self) -> None:
        """Only the newest deployment drives the service: once the system is quiet, every
        older one has ended — or is rolling back, through a chain of rollbacks (an update, its
        automatic rollback, a manual rollback of that …) that leads to the newest, which is
        still active."""
        for name, ds in self._deployments().items():
            by_id = {d.id: d for d in ds}
            for d in ds[:-1]:
                chain = [d]
                while chain[-1].phase == Phase.ROLLING_BACK and len(chain) <= len(ds):
                    chain.append(by_id[chain[-1].rolled_back_by or ""])
                end = chain[-1]
                assert end.phase.terminal or (end is ds[-1] and end.active), (
                    name,
                    [(x.id, x.kind, x.phase) for x in chain],
                )

    @invariant()
    def nothing_started_twice(self) -> None:
        counts = Counter(tid for fake in self.cluster.drivers.values() for tid in fake.started)
        assert all(n == 1 for n in counts.values()), counts

    @invariant()
    def nothing_runs_that_the_store_thinks_ended(self) -> None:
        tasks = {t.id: t for t in self.run(self.cluster.tasks())}
        for node, fake in self.cluster.drivers.items():
            for tid in fake.running():
                task = tasks.get(tid)
                assert task is not None, f"orphan {tid} on {node}"
                assert task.node == node, (tid, node, task.node)
                assert task.state.active, f"{tid} runs but is {task.state}"

    @invariant()
    def ready_floor(self) -> None:
        """Start-first never stops a slot's old task before its new one is ready. So a rollout
        that began with all R slots ready (and no task of a revision that ends on its own)
        keeps every slot ready, except:

        - a slot whose new task turned ready (the old one was then stopped) and failed later:
          the rollout counts that failure in ``failed_tasks``, and one failure empties at
          most one slot;
        - a slot whose task the test crashed (old or new: ``crashes``);
        - slots scaled away: R is the fewest replicas since the start, as a slot removed and
          added back starts empty.

        Agent and manager restarts adopt what runs and take nothing away. Checked only while
        progressing (while paused, failures wait to be counted until resume) and only for
        rollouts a rule started (an automatic rollback starts at a moment the test does not
        see, so whether every slot was ready then is unknown)::

            ready slots >= R - len(failed_tasks) - crashes

        E.g. R = 5, parallelism 2, a revision that exits 2 s after turning ready: slots 1 and 2
        lose their old tasks, then their new ones fail — 2 failures, and at least 3 slots stay
        ready (the other three still run the old revision).
        """
        for name, watch in self.floor.items():
            latest = self.run(self._latest(name))
            if latest is None or latest.id != watch.deployment_id:
                continue
            if latest.phase != Phase.PROGRESSING:
                continue
            tasks = self.run(self.cluster.tasks(name))
            ready = {t.slot for t in tasks if t.ready and t.state.active}
            ready &= set(range(1, watch.replicas + 1))
            floor = watch.replicas - len(latest.failed_tasks) - watch.crashes
            event("ready floor checked during a rollout")
            assert len(ready) >= floor, (name, watch, sorted(ready), _tasks(tasks))

    # ── liveness ─────────────────────────────────────────────────────────────────────────────

    @rule(periods=st.integers(3, 4))
    def wait_for_convergence(self, periods: int) -> None:
        for _ in range(periods):
            self.run(self.cluster.advance(CONVERGE))
        self.floor.clear()  # the rollouts watched have ended, or their start is long past
        for name in sorted(self.services):
            service, _ = self.run(self.cluster.cluster.get_service(name))
            ds = self.run(self.cluster.cluster.list_deployments(name))
            tasks = self.run(self.cluster.tasks(name))
            newest = ds[-1] if ds else None
            settled = newest is None or newest.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK)
            if settled and is_good(service.spec):
                replicas = service.spec.replicas
                live = [t for t in tasks if t.state.active]
                ready = [t for t in live if t.revision == service.revision and t.ready]
                assert len(ready) == replicas, (name, service.revision, _tasks(tasks))
                assert len(live) == replicas, (name, service.revision, _tasks(tasks))
                assert all(t.state == TaskState.RUNNING and t.wants_running for t in live)
            for d in ds:
                event(f"deployment: {d.kind} {d.phase}")
            self._check_expectation(name, service.revision, ds, final=True)

    @invariant()
    def rollouts_end_as_expected(self) -> None:
        """What ``wait_for_convergence`` waits for, checked as soon as the rollout has ended."""
        for name in sorted(self.services):
            service, _ = self.run(self.cluster.cluster.get_service(name))
            ds = self.run(self.cluster.cluster.list_deployments(name))
            self._check_expectation(name, service.revision, ds, final=False)

    def _check_expectation(
        self, name: str, revision: int, ds: list[Deployment], final: bool
    ) -> None:
        exp = self.expect.get(name)
        if exp is None or not exp.checked:
            return
        by_id = {d.id: d for d in ds}
        d = by_id[exp.deployment_id]
        summary = [(x.id, x.kind, x.phase, x.from_revision, x.to_revision) for x in ds]
        if exp.kind not in BAD:
            if d.phase == Phase.PROGRESSING and not final:
                return
            # Nothing started after it (a good rollout is never rolled back automatically).
            assert ds[-1].id == d.id, (exp, summary)
            assert d.phase == Phase.SUCCEEDED, (exp, summary, d.decisions[-3:])
            assert revision == exp.to_revision, (exp, revision)
            if d.rollback_of is not None:
                assert by_id[d.rollback_of].phase == Phase.ROLLED_BACK, (exp, summary)
        else:
            if d.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK) and not final:
                return
            assert d.phase == Phase.ROLLED_BACK, (exp, summary, d.decisions[-3:])
            assert d.rolled_back_by is not None
            rollback = by_id[d.rolled_back_by]
            assert rollback.phase == Phase.SUCCEEDED, (exp, summary)
            assert ds[-1].id == rollback.id, (exp, summary)
            # Back to the revision it started from if that one ever succeeded, else to the last
            # that did (issue 12, item 15).
            assert revision == last_good_revision(ds, d), (exp, revision, summary)
        if final:
            event(f"outcome checked: {exp.kind}")


def _tasks(tasks: list[Task]) -> list[tuple[Any, ...]]:
    return [(t.id, t.revision, str(t.state), t.ready, str(t.desired_state)) for t in tasks]


DeploymentMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
TestDeploymentMachine = DeploymentMachine.TestCase


# ── regressions: bugs the machine found, each reduced to a fixed scenario ───────────────────


def _web(**update_config: Any) -> ServiceSpec:
    """One replica, ready 1 s after it starts; stop-first, so that a rollback has a slot to
    refill and stays in progress for that second."""
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["app"],
            "driver": "fake",
            "replicas": 1,
            "env": {"VERSION": "v1", **GOOD},
            "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
            "deploy": {"updateConfig": {"order": "stop-first", "monitor": "0s", **update_config}},
        }
    )


def _env(**env: str) -> Any:
    return lambda spec: spec.model_copy(update={"env": env})


async def _rolling_back_after_a_failed_update() -> SimCluster:
    """v1 runs; v2 cannot start; the update is rolling_back and its rollback in progress."""
    sim = await SimCluster(nodes=2).start()
    await sim.cluster.create_service(_web())
    await sim.advance(2)
    await sim.cluster.update_service("web", _env(VERSION="v2", **BAD["start_error"]))
    await sim.quiesce()
    update, rollback = await sim.cluster.list_deployments("web")
    assert (update.phase, update.rolled_back_by) == (Phase.ROLLING_BACK, rollback.id)
    assert (rollback.phase, rollback.to_revision) == (Phase.PROGRESSING, 1)
    return sim


async def test_an_update_whose_rollback_is_superseded_still_ends() -> None:
    """Before 77d30ed it stayed rolling_back forever, with no finished_at: the controller
    finished an update rolling back only when its rollback was the newest deployment and had
    ended."""
    sim = await _rolling_back_after_a_failed_update()
    try:
        await sim.cluster.update_service("web", _env(VERSION="v3", **GOOD))
        await sim.advance(3 * CONVERGE)
        update, rollback, newer = await sim.cluster.list_deployments("web")
        assert (rollback.phase, newer.phase) == (Phase.SUPERSEDED, Phase.SUCCEEDED)
        assert update.phase.terminal, update.phase
        assert update.finished_at is not None
    finally:
        await sim.stop()


async def test_a_manual_rollback_during_an_automatic_one_never_goes_to_the_failed_revision() -> (
    None
):
    """docs/deployments.md: after an automatic rollback, ``service rollback`` goes to the last
    good revision, never the failed one. Before 77d30ed it undid the rollout in flight — the
    automatic rollback — and so went back to the failed revision."""
    sim = await _rolling_back_after_a_failed_update()
    try:
        try:
            service, _, _ = await sim.cluster.rollback_service("web")
        except (ConflictError, ValidationError):
            return  # refusing is fine: the service is already going back to revision 1
        assert service.revision != 2  # whose tasks cannot start
    finally:
        await sim.stop()
