"""Drain properties: over random placements, drained nodes and parallelism, moving a service's
tasks never leaves it with fewer ready tasks than it had, never moves more slots at once than
``parallelism`` allows, and ends with no task on a drained node — or, when no node can take
them, with every task still running where it was."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from warren.domain.services import Service
from warren.domain.specs import ServiceSpec, UpdateConfig
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.reconciling import ReconcilePlan, plan_service

NODES = ("a", "b", "c")


def service(replicas: int, parallelism: int) -> Service:
    spec = ServiceSpec(
        name="web",
        command=("python", "app.py"),
        replicas=replicas,
        deploy={"updateConfig": UpdateConfig(parallelism=parallelism)},
    )
    return Service(spec=spec, revision=1, created_at=0.0, updated_at=0.0)


@dataclass
class Cluster:
    """Agents that start every placed task (ready one tick later) and stop every task told to
    shut down; new tasks go to the first node that is not draining, if any."""

    service: Service
    draining: frozenset[str]
    tasks: dict[str, Task] = field(default_factory=dict)
    now: float = 10.0
    created: int = 0

    def ready(self) -> int:
        return sum(1 for t in self.tasks.values() if t.ready and t.wants_running)

    def moving(self) -> int:
        """Slots holding a task on a drained node and a not-ready one elsewhere."""
        slots = set()
        for t in self.tasks.values():
            if t.wants_running and t.state.active and t.node not in self.draining:
                old = [
                    o for o in self.tasks.values()
                    if o.slot == t.slot and o.wants_running and o.state.active
                    and o.node in self.draining
                ]  # fmt: skip
                if old and not t.ready:
                    slots.add(t.slot)
        return len(slots)

    def plan(self) -> ReconcilePlan:
        return plan_service(
            "web", self.service, list(self.tasks.values()), self.now, draining=self.draining
        )

    def apply(self, plan: ReconcilePlan) -> None:
        for tid, why in plan.shutdown:
            t = self.tasks[tid]
            self.tasks[tid] = t.changed(self.now, desired_state=DesiredState.SHUTDOWN, message=why)
        free = [n for n in NODES if n not in self.draining]
        for new in plan.create:
            self.created += 1
            tid = f"web.{new.slot}.n{self.created}"
            self.tasks[tid] = Task(
                id=tid, service="web", revision=new.revision, slot=new.slot,
                node=free[0] if free else None, created_at=self.now, updated_at=self.now,
                message="" if free else "no node is ready (all down or drained)",
            )  # fmt: skip

    def tick(self, slow: frozenset[int] = frozenset()) -> None:
        """``slow``: slots whose new tasks take one more tick to start."""
        self.now += 1
        for tid, t in list(self.tasks.items()):
            if not t.wants_running and t.state.active:
                self.tasks[tid] = t.changed(self.now, state=TaskState.STOPPED, ready=False)
            elif t.state == TaskState.PENDING and t.node is not None and t.slot not in slow:
                self.tasks[tid] = t.changed(
                    self.now, state=TaskState.RUNNING, ready=True, ready_at=self.now
                )


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    replicas = draw(st.integers(min_value=1, max_value=6))
    svc = service(replicas, draw(st.integers(min_value=0, max_value=3)))
    draining = frozenset(draw(st.sets(st.sampled_from(NODES), min_size=1)))
    cluster = Cluster(svc, draining)
    for slot in range(1, replicas + 1):
        tid = f"web.{slot}.x"
        cluster.tasks[tid] = Task(
            id=tid, service="web", revision=1, slot=slot, node=draw(st.sampled_from(NODES)),
            state=TaskState.RUNNING, ready=True, ready_at=0.0, created_at=0.0, updated_at=0.0,
        )  # fmt: skip
    return cluster


@settings(max_examples=200, deadline=None)
@given(clusters(), st.data())
def test_drain_never_drops_below_the_ready_count_and_completes(
    cluster: Cluster, data: st.DataObject
) -> None:
    replicas = cluster.service.spec.replicas
    parallelism = cluster.service.spec.deploy.update_config.parallelism or replicas
    can_move = any(n not in cluster.draining for n in NODES)
    slots = st.sets(st.integers(min_value=1, max_value=replicas))
    for i in range(6 * replicas + 4):
        plan = cluster.plan()
        cluster.apply(plan)
        assert cluster.ready() >= replicas, "a slot lost its ready task"
        if can_move:
            assert cluster.moving() <= parallelism, "more slots moving than parallelism"
        # Some slots' new tasks start late, for a while; then every agent keeps up.
        cluster.tick(frozenset(data.draw(slots)) if i < 2 * replicas else frozenset())
    live = [t for t in cluster.tasks.values() if t.wants_running and t.state.active]
    on_drained = [t for t in live if t.node in cluster.draining]
    if can_move:
        assert not on_drained, "tasks left on a drained node"
        assert sorted(t.slot for t in live) == list(range(1, replicas + 1))
        assert cluster.plan().empty
    else:
        # Nowhere to go: every task still runs where it was; each slot has one replacement
        # at most, waiting for a node.
        assert len(on_drained) == replicas
        assert all(t.ready for t in on_drained)
        assert len(live) <= 2 * replicas
