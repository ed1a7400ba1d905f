"""Reconciler properties over random task sets: safe plans, and convergence to `replicas` ready."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from warren.domain.services import Service
from warren.domain.specs import RestartCondition, RestartPolicy, ServiceSpec, UpdateOrder
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.reconciling import HISTORY_PER_SLOT, ReconcilePlan, plan_service

S = TaskState
NOW = 100.0
MAX_SLOT = 4
# Running tasks drawn more often, so slots often hold several live tasks.
STATES = [*S, S.RUNNING, S.RUNNING, S.STARTING]


@st.composite
def tasks_strategy(draw: st.DrawFn) -> list[Task]:
    """A random, internally consistent set of tasks of service ``web``."""
    out = []
    for i in range(draw(st.integers(min_value=0, max_value=14))):
        state = draw(st.sampled_from(STATES))
        created = float(draw(st.integers(min_value=0, max_value=60)))
        was_ready = draw(st.booleans())
        # Transitions clear ``ready`` on stopping and on ending: only a running task is ready.
        ready = state == S.RUNNING and was_ready
        finished = (
            created + draw(st.integers(min_value=0, max_value=39)) if state.terminal else None
        )
        out.append(
            Task(
                id=f"web.t{i}",
                service="web",
                revision=draw(st.integers(min_value=1, max_value=2)),
                slot=draw(st.integers(min_value=1, max_value=MAX_SLOT)),
                node="n1",
                desired_state=draw(st.sampled_from(DesiredState)),
                state=state,
                created_at=created,
                updated_at=finished if finished is not None else created,
                finished_at=finished,
                ready=ready,
                ready_at=created if was_ready and state != S.PENDING else None,
                attempt=draw(st.integers(min_value=0, max_value=8)),
            )
        )
    return out


def restart_policies(conditions: list[RestartCondition]) -> st.SearchStrategy[RestartPolicy]:
    return st.builds(
        RestartPolicy,
        condition=st.sampled_from(conditions),
        delay=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        max_delay=st.sampled_from([1.0, 5.0, 30.0]),
        max_attempts=st.integers(min_value=0, max_value=3),
    )


@st.composite
def services(draw: st.DrawFn, conditions: list[RestartCondition] | None = None) -> Service:
    policy = draw(restart_policies(conditions or list(RestartCondition)))
    if conditions == [RestartCondition.ANY]:
        policy = policy.model_copy(update={"max_attempts": 0})
    spec = ServiceSpec(
        name="web",
        command=("python", "app.py"),
        replicas=draw(st.integers(min_value=0, max_value=5)),
        restart_policy=policy,
    )
    return Service(
        spec=spec,
        revision=draw(st.integers(min_value=1, max_value=2)),
        created_at=0.0,
        updated_at=0.0,
    )


orders = st.sampled_from(UpdateOrder)


def live(t: Task) -> bool:
    return t.wants_running and t.state.active


def check_plan_is_well_formed(
    plan: ReconcilePlan,
    service: Service | None,
    tasks: list[Task],
    down: frozenset[str] = frozenset(),
) -> None:
    by_id = {t.id: t for t in tasks}
    replicas = service.spec.replicas if service else 0
    slots = [c.slot for c in plan.create]
    assert len(slots) == len(set(slots)), "more than one create in a slot"
    assert all(1 <= s <= replicas for s in slots), "create in a slot above replicas"
    assert len(plan.shutdown) == len({tid for tid, _ in plan.shutdown})
    for tid, _why in plan.shutdown:
        assert live(by_id[tid]), "only running-wanted, active tasks are shut down"
    for tid in plan.forget:
        assert by_id[tid].state.terminal, "only ended tasks are forgotten"
    for c in plan.create:
        # (A task lost with its node is replaced at once, alongside it.)
        assert not any(
            live(t) and t.slot == c.slot and t.revision == c.revision and t.node not in down
            for t in tasks
        )


@settings(max_examples=100, deadline=None)
@given(services() | st.none(), tasks_strategy(), orders)
def test_plans_are_well_formed(
    service: Service | None, tasks: list[Task], order: UpdateOrder
) -> None:
    plan = plan_service("web", service, tasks, NOW, order=order)
    check_plan_is_well_formed(plan, service, tasks)
    if service is None:
        assert plan.create == ()
        assert plan.forget_revisions == (not tasks)


@settings(max_examples=100, deadline=None)
@given(services(), tasks_strategy())
def test_start_first_never_shuts_down_the_only_ready_task_of_a_kept_slot(
    service: Service, tasks: list[Task]
) -> None:
    plan = plan_service("web", service, tasks, NOW, order=UpdateOrder.START_FIRST)
    stopped = {tid for tid, _ in plan.shutdown}
    by_slot: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)
    for slot, slot_tasks in by_slot.items():
        if slot > service.spec.replicas:
            continue  # scaling down may remove ready tasks
        ready = [t for t in slot_tasks if live(t) and t.ready]
        current = sorted(
            (t for t in slot_tasks if live(t) and t.revision == service.revision),
            key=lambda t: (t.created_at, t.id),
        )
        if len(current) > 1 and not current[-1].ready:
            # Known bug (see test_reconciling.py): a not-ready newest duplicate wins.
            continue
        if ready:
            assert any(t.id not in stopped for t in ready), f"slot {slot} loses its ready task"


@settings(max_examples=100, deadline=None)
@given(services(), tasks_strategy())
def test_stop_first_shuts_down_only_other_revisions_and_duplicates(
    service: Service, tasks: list[Task]
) -> None:
    plan = plan_service("web", service, tasks, NOW, order=UpdateOrder.STOP_FIRST)
    by_id = {t.id: t for t in tasks}
    for tid, why in plan.shutdown:
        t = by_id[tid]
        if t.slot > service.spec.replicas:
            assert why == "scaled down"
        elif t.revision == service.revision:
            assert why == "duplicate task in slot"
        else:
            assert why == f"replaced by revision {service.revision}"
    # Nothing starts in a slot while a task of another revision is still active there.
    for c in plan.create:
        assert not any(
            t.slot == c.slot and t.state.active and t.revision != c.revision for t in tasks
        )


@settings(max_examples=150, deadline=None)
@given(services(), tasks_strategy(), st.data())
def test_a_down_nodes_tasks_are_shut_down_and_replaced_at_once(
    service: Service, tasks: list[Task], data: st.DataObject
) -> None:
    nodes = st.sampled_from(["n1", "n2"])
    tasks = [t.model_copy(update={"node": data.draw(nodes)}) for t in tasks]
    plan = plan_service("web", service, tasks, NOW, down={"n2"})
    check_plan_is_well_formed(plan, service, tasks, frozenset({"n2"}))
    why = dict(plan.shutdown)
    for t in tasks:
        if live(t) and t.node == "n2":
            assert why.get(t.id) == "node n2 is down"
    created = {c.slot: c for c in plan.create}
    for slot in range(1, service.spec.replicas + 1):
        mine = [t for t in tasks if t.slot == slot and live(t) and t.revision == service.revision]
        if not mine or any(t.node != "n2" for t in mine):
            continue
        newest_lost = max(t.created_at for t in mine)
        failed_since = any(
            t.slot == slot and t.state.terminal and t.wants_running
            and t.revision == service.revision and t.created_at >= newest_lost
            for t in tasks
        )  # fmt: skip
        if not failed_since:
            # Lost with its node, not failed: replaced now, with no back-off.
            assert slot in created and created[slot].attempt == 0, slot


@dataclass
class Simulation:
    """A world where every created task starts and becomes ready, and every task told to shut
    down stops, one tick after the plan that asked for it."""

    tasks: dict[str, Task]
    now: float = NOW
    created: int = 0

    def apply(self, plan: ReconcilePlan) -> None:
        for tid, why in plan.shutdown:
            t = self.tasks[tid]
            self.tasks[tid] = t.changed(self.now, desired_state=DesiredState.SHUTDOWN, message=why)
        for tid in plan.forget:
            del self.tasks[tid]
        for new in plan.create:
            self.created += 1
            tid = f"web.{new.slot}.new{self.created}"
            self.tasks[tid] = Task(
                id=tid,
                service="web",
                revision=new.revision,
                slot=new.slot,
                node="n1",
                created_at=self.now,
                updated_at=self.now,
                attempt=new.attempt,
            )

    def tick(self) -> bool:
        """The agents' turn; whether anything changed."""
        before = dict(self.tasks)
        for tid, t in list(self.tasks.items()):
            if not t.state.active:
                continue
            if not t.wants_running:
                if t.state in (S.STARTING, S.RUNNING):
                    t = t.transition(S.STOPPING, self.now)
                self.tasks[tid] = t.transition(S.STOPPED, self.now)
            elif t.state == S.PENDING:
                t = t.transition(S.STARTING, self.now)
                self.tasks[tid] = t.transition(
                    S.RUNNING, self.now, ready=True, ready_at=self.now, started_at=self.now
                )
            elif t.state == S.STARTING:
                self.tasks[tid] = t.transition(S.RUNNING, self.now, ready=True, ready_at=self.now)
            elif t.state == S.STOPPING:
                # Stopping on its own (a failed health check): it ends as failed.
                self.tasks[tid] = t.transition(S.FAILED, self.now)
            elif t.state == S.RUNNING and not t.ready:
                self.tasks[tid] = t.changed(self.now, ready=True, ready_at=self.now)
        return self.tasks != before

    def run(self, service: Service | None, order: UpdateOrder, limit: int = 60) -> ReconcilePlan:
        """Plan, apply, tick until the plan is empty, nothing waits on a back-off and the agents
        have nothing left to do."""
        for _ in range(limit):
            plan = plan_service("web", service, list(self.tasks.values()), self.now, order=order)
            check_plan_is_well_formed(plan, service, list(self.tasks.values()))
            self.apply(plan)
            if not self.tick() and plan.empty and plan.requeue_at is None:
                return plan
            self.now = max(self.now + 1, plan.requeue_at or 0.0)
        raise AssertionError(f"no convergence after {limit} rounds: {sorted(self.tasks)}")


@settings(max_examples=100, deadline=None)
@given(services(conditions=[RestartCondition.ANY]), tasks_strategy(), orders)
def test_converges_to_replicas_ready_tasks_of_the_current_revision(
    service: Service, tasks: list[Task], order: UpdateOrder
) -> None:
    sim = Simulation({t.id: t for t in tasks})
    sim.run(service, order)
    active = [t for t in sim.tasks.values() if t.state.active]
    assert all(t.wants_running for t in active)
    assert all(t.revision == service.revision for t in active)
    assert all(t.ready for t in active)
    assert sorted(t.slot for t in active) == list(range(1, service.spec.replicas + 1))
    history: dict[int, int] = defaultdict(int)
    for t in sim.tasks.values():
        assert t.slot <= service.spec.replicas, "a removed slot keeps tasks"
        if t.state.terminal:
            history[t.slot] += 1
    assert all(n <= HISTORY_PER_SLOT for n in history.values())


@settings(max_examples=60, deadline=None)
@given(tasks_strategy(), orders)
def test_a_deleted_service_converges_to_nothing(tasks: list[Task], order: UpdateOrder) -> None:
    sim = Simulation({t.id: t for t in tasks})
    plan = plan_service("web", None, list(sim.tasks.values()), sim.now, order=order)
    for _ in range(5):
        if plan.forget_revisions:
            break
        sim.apply(plan)
        sim.tick()
        plan = plan_service("web", None, list(sim.tasks.values()), sim.now, order=order)
    assert plan.forget_revisions
    assert sim.tasks == {}
