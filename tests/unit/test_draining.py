"""Drain: the reconciler's plan moves a draining node's tasks like a start-first rolling update
(replacement first, old task shut down once it is ready), by ``parallelism``; a task no node
can take keeps running; activating the node moves nothing back. And ``drain_status``."""

from __future__ import annotations

import pytest

from warren.domain.nodes import DrainStatus
from warren.domain.services import Service
from warren.domain.specs import ServiceSpec, UpdateConfig
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.draining import drain_status
from warren.planning.reconciling import NewTask, ReconcilePlan, plan_service

S = TaskState
NOW = 1000.0
DRAINING = frozenset({"a"})


def service(replicas: int = 3, parallelism: int = 1) -> Service:
    spec = ServiceSpec(
        name="web",
        command=("python", "app.py"),
        replicas=replicas,
        deploy={"updateConfig": UpdateConfig(parallelism=parallelism)},
    )
    return Service(spec=spec, revision=1, created_at=0.0, updated_at=0.0)


def task(
    slot: int,
    node: str | None = "a",
    suffix: str = "old",
    *,
    state: TaskState = S.RUNNING,
    ready: bool | None = None,
    created_at: float = 1.0,
    service: str = "web",
    message: str = "",
    desired: DesiredState = DesiredState.RUNNING,
) -> Task:
    ready = state == S.RUNNING if ready is None else ready
    return Task(
        id=f"{service}.{slot}.{suffix}",
        service=service,
        revision=1,
        slot=slot,
        node=node,
        state=state,
        desired_state=desired,
        created_at=created_at,
        updated_at=created_at,
        ready=ready,
        ready_at=created_at if ready else None,
        message=message,
        finished_at=created_at + 1 if state.terminal else None,
    )


def new(slot: int, node: str | None = "b", **kw: object) -> Task:
    """The replacement of slot ``slot``'s task, created later."""
    return task(slot, node, "new", created_at=kw.pop("created_at", 5.0), **kw)  # type: ignore[arg-type]


def plan(tasks: list[Task], svc: Service | None = None) -> ReconcilePlan:
    return plan_service("web", svc or service(), tasks, NOW, draining=DRAINING)


# --- moving ------------------------------------------------------------------------------------


def test_a_drained_nodes_task_gets_a_replacement_and_keeps_serving() -> None:
    p = plan([task(1)], service(replicas=1))
    assert p.create == (NewTask(1, 1, 0, replaces="web.1.old"),)
    assert p.shutdown == ()


def test_the_old_task_stays_while_its_replacement_is_not_ready() -> None:
    for state in (S.PENDING, S.STARTING, S.RUNNING):
        p = plan([task(1), new(1, state=state, ready=False)], service(replicas=1))
        assert p.empty, state


def test_the_old_task_stops_once_its_replacement_is_ready() -> None:
    p = plan([task(1), new(1)], service(replicas=1))
    assert dict(p.shutdown) == {"web.1.old": "node a drained: moved to b"}
    assert p.create == ()


def test_a_task_no_node_can_take_keeps_running() -> None:
    # Its replacement waits unplaced (the reconciler wrote why); nothing else happens.
    waiting = new(1, None, state=S.PENDING, message="no ready node runs the process driver")
    p = plan([task(1), waiting], service(replicas=1))
    assert p.empty


def test_tasks_on_active_nodes_are_left_alone() -> None:
    assert plan([task(1, "b"), task(2, "c")], service(replicas=2)).empty


def test_a_not_ready_task_on_the_node_moves_too() -> None:
    p = plan([task(1, state=S.STARTING)], service(replicas=1))
    assert p.create == (NewTask(1, 1, 0, replaces="web.1.old"),)


@pytest.mark.parametrize(
    ("parallelism", "moving"),
    [(1, [1]), (2, [1, 2]), (0, [1, 2, 3]), (5, [1, 2, 3])],
)
def test_slots_move_by_parallelism(parallelism: int, moving: list[int]) -> None:
    p = plan([task(s) for s in (1, 2, 3)], service(parallelism=parallelism))
    assert [c.slot for c in p.create] == moving
    assert p.shutdown == ()


def test_a_move_in_flight_uses_the_parallelism() -> None:
    tasks = [task(1), new(1, state=S.STARTING, ready=False), task(2), task(3)]
    assert plan(tasks, service(parallelism=1)).create == ()
    assert [c.slot for c in plan(tasks, service(parallelism=2)).create] == [2]


def test_one_rolling_step_after_another() -> None:
    # Slot 1 moved (its old task is stopping), slot 2's replacement turned ready.
    stopping = task(1, state=S.STOPPING, ready=False, desired=DesiredState.SHUTDOWN)
    tasks = [stopping, new(1), task(2), new(2), task(3)]
    p = plan(tasks)
    assert dict(p.shutdown) == {"web.2.old": "node a drained: moved to b"}
    assert p.create == (NewTask(3, 1, 0, replaces="web.3.old"),)


def test_a_failed_replacement_is_retried_after_the_back_off() -> None:
    failed = new(1, state=S.FAILED, ready=False, created_at=NOW - 0.5)  # ended at NOW + 0.5
    p = plan([task(1), failed], service(replicas=1))
    assert p.create == ()
    assert p.requeue_at == NOW + 1.5  # the default restart delay: 1s after it ended
    p = plan_service("web", service(replicas=1), [task(1), failed], NOW + 2, draining=DRAINING)
    assert p.create == (NewTask(1, 1, 1, replaces="web.1.old"),)


def test_an_old_failure_in_the_slot_does_not_delay_the_move() -> None:
    earlier = task(1, "a", "gone", state=S.FAILED, ready=False, created_at=0.0)
    p = plan([earlier, task(1)], service(replicas=1))
    assert p.create == (NewTask(1, 1, 0, replaces="web.1.old"),)


def test_duplicates_on_the_drained_node_keep_one_to_move() -> None:
    dup = task(1, suffix="dup", created_at=2.0, state=S.STARTING, ready=False)
    p = plan([task(1), dup], service(replicas=1))
    assert dict(p.shutdown) == {"web.1.dup": "duplicate task in slot"}
    assert p.create == (NewTask(1, 1, 0, replaces="web.1.old"),)


def test_activating_the_node_drops_replacements_and_moves_nothing_back() -> None:
    waiting = new(1, None, state=S.PENDING, ready=False, message="no ready node …")
    starting = new(2, state=S.STARTING, ready=False)
    tasks = [task(1), waiting, task(2), starting, task(3)]
    p = plan_service("web", service(), tasks, NOW, draining=frozenset())
    assert dict(p.shutdown) == {
        "web.1.new": "duplicate task in slot",
        "web.2.new": "duplicate task in slot",
    }
    assert p.create == ()


def test_scaled_down_and_removed_services_are_not_moved() -> None:
    p = plan([task(1), task(2)], service(replicas=1))
    assert dict(p.shutdown) == {"web.2.old": "scaled down"}
    assert [c.slot for c in p.create] == [1]
    p = plan_service("web", None, [task(1)], NOW, draining=DRAINING)
    assert dict(p.shutdown) == {"web.1.old": "service removed"}
    assert p.create == ()


def test_a_rollout_replaces_rather_than_moves() -> None:
    # Slot 1 runs revision 1 on the drained node and must run revision 2: the rollout's new
    # task replaces it; no move of the old revision is started.
    p = plan_service("web", service(replicas=1), [task(1)], NOW, {1: 2}, draining=DRAINING)
    assert p.create == (NewTask(1, 2, 0),)


# --- drain status ------------------------------------------------------------------------------


def test_drain_status_worked_example() -> None:
    why = "no ready node runs the process driver"
    tasks = [
        task(1),
        new(1, None, state=S.PENDING, ready=False, message=why),
        task(2),
        task(1, service="api"),
        task(1, "b", "new", service="api", state=S.STARTING, ready=False),
    ]
    status = drain_status("a", tasks)
    assert status == DrainStatus(remaining=3, moving=1, stuck=2, reason=why)
    assert status.summary() == f"draining: 2 tasks cannot move: {why}"


def test_drain_status_counts_tasks_left_and_stopping() -> None:
    stopping = task(1, state=S.STOPPING, ready=False, desired=DesiredState.SHUTDOWN)
    status = drain_status("a", [stopping, new(1), task(2), task(3), new(3, state=S.STARTING)])
    assert status == DrainStatus(remaining=2, moving=1, stopping=1)
    assert status.summary() == "draining: 2 tasks left, 1 moving"
    assert not status.done


def test_drain_status_of_a_drained_node() -> None:
    ended = task(1, state=S.STOPPED, ready=False, desired=DesiredState.SHUTDOWN)
    status = drain_status("a", [ended, new(1)])
    assert status.done
    assert status.summary() == "drained: no tasks left"
    one = drain_status("a", [task(1, state=S.STOPPING, ready=False, desired=DesiredState.SHUTDOWN)])
    assert one.summary() == "draining: 1 task stopping"


def test_a_replacement_just_created_counts_as_moving() -> None:
    # Not placed yet, but no reason either: the reconciler places it in the same write.
    status = drain_status("a", [task(1), new(1, None, state=S.PENDING, ready=False)])
    assert (status.moving, status.stuck) == (1, 0)
