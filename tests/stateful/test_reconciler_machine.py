"""A Hypothesis state machine for the reconciler, the scheduler and the agent on the fake driver
and a fake clock: users create, update, scale and remove services, tasks crash, agents restart,
time passes — and the safety invariants hold after every step."""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.helpers import SimCluster
from warren.domain.errors import ConflictError, NotFoundError
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import TaskState

SERVICES = ("api", "web")


class ReconcilerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim = SimCluster(nodes=2)
        self.run(self.sim.start())
        self.specs: dict[str, ServiceSpec] = {}

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.sim.stop())
        self.loop.close()

    @initialize()
    def nothing_yet(self) -> None:
        assert not self.run(self.sim.tasks())

    # ── user actions ─────────────────────────────────────────────────────────────────────────

    @rule(name=st.sampled_from(SERVICES), replicas=st.integers(0, 4), version=st.integers(1, 3))
    def apply(self, name: str, replicas: int, version: int) -> None:
        spec = ServiceSpec(
            name=name,
            command=("app",),
            driver="fake",
            replicas=replicas,
            env={"VERSION": f"v{version}"},
        )

        async def go() -> None:
            try:
                await self.sim.cluster.update_service(name, lambda _: spec)
            except NotFoundError:
                try:
                    await self.sim.cluster.create_service(spec)
                except ConflictError:
                    return  # the removed service's tasks are still stopping
            self.specs[name] = spec
            await self.sim.quiesce()

        self.run(go())

    @precondition(lambda self: bool(self.specs))
    @rule(data=st.data(), replicas=st.integers(0, 5))
    def scale(self, data: st.DataObject, replicas: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.specs)))
        spec = self.specs[name].model_copy(update={"replicas": replicas})
        self.run(self.sim.cluster.update_service(name, lambda _: spec))
        self.specs[name] = spec
        self.run(self.sim.quiesce())

    @precondition(lambda self: bool(self.specs))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.specs)))
        self.run(self.sim.cluster.delete_service(name))
        del self.specs[name]
        self.run(self.sim.quiesce())

    # ── the world ────────────────────────────────────────────────────────────────────────────

    @rule(data=st.data())
    def crash_a_task(self, data: st.DataObject) -> None:
        running = [
            (n, tid) for n, fake in sorted(self.sim.drivers.items()) for tid in fake.running()
        ]
        if not running:
            return
        node, tid = data.draw(st.sampled_from(running))
        self.sim.drivers[node].crash(tid)
        self.run(self.sim.quiesce())

    @rule(node=st.sampled_from(["n1", "n2"]))
    def restart_agent(self, node: str) -> None:
        self.run(self.sim.restart_agent(node))
        self.run(self.sim.quiesce())

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.sim.advance(seconds))

    # ── invariants ───────────────────────────────────────────────────────────────────────────

    @invariant()
    def at_most_one_live_task_per_slot_and_revision(self) -> None:
        tasks = self.run(self.sim.tasks())
        live = Counter(
            (t.service, t.slot, t.revision) for t in tasks if t.wants_running and t.state.active
        )
        assert all(n == 1 for n in live.values()), live

    @invariant()
    def nothing_runs_that_the_store_does_not_know(self) -> None:
        tasks = {t.id: t for t in self.run(self.sim.tasks())}
        for node, fake in self.sim.drivers.items():
            for tid in fake.running():
                task = tasks.get(tid)
                assert task is not None, f"orphan {tid} on {node}"
                assert task.node == node
                assert task.state.active, f"{tid} runs but is {task.state}"

    @invariant()
    def nothing_started_twice(self) -> None:
        for fake in self.sim.drivers.values():
            counts = Counter(fake.started)
            assert all(n == 1 for n in counts.values()), counts

    @invariant()
    def no_task_above_replicas_keeps_running(self) -> None:
        for t in self.run(self.sim.tasks()):
            spec = self.specs.get(t.service)
            if t.wants_running and t.state.active and spec is not None:
                assert t.slot <= spec.replicas, t

    @rule()
    def converges(self) -> None:
        """Given time (back-offs are at most 30s), every service has exactly ``replicas``
        ready tasks of its current revision and nothing else active."""
        self.run(self.sim.advance(31))
        self.run(self.sim.advance(31))
        tasks = self.run(self.sim.tasks())
        for name, spec in self.specs.items():
            service, _ = self.run(self.sim.cluster.get_service(name))
            mine = [t for t in tasks if t.service == name and t.state.active]
            ready = [t for t in mine if t.revision == service.revision and t.ready]
            assert len(ready) == spec.replicas, (name, spec.replicas, mine)
            assert len(mine) == spec.replicas, mine
            assert all(t.state == TaskState.RUNNING for t in mine)
        removed = {t.service for t in tasks} - set(self.specs)
        for name in removed:
            assert not [t for t in tasks if t.service == name and t.state.active]


ReconcilerMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=20, deadline=None
)
TestReconcilerMachine = ReconcilerMachine.TestCase
