"""Reconciler plans: slots, scale, duplicates, restart back-off, revisions, deletion, history."""

from __future__ import annotations

import pytest

from warren.domain.services import Service
from warren.domain.specs import RestartCondition, RestartPolicy, ServiceSpec, UpdateOrder
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.reconciling import (
    HISTORY_PER_SLOT,
    NewTask,
    ReconcilePlan,
    plan_service,
    restart_due,
)

S = TaskState
NOW = 1000.0


def service(
    replicas: int = 3,
    revision: int = 1,
    restart: RestartPolicy | None = None,
) -> Service:
    spec = ServiceSpec(
        name="web",
        command=("python", "app.py"),
        replicas=replicas,
        restart_policy=restart or RestartPolicy(),
    )
    return Service(spec=spec, revision=revision, created_at=0.0, updated_at=0.0)


def task(
    slot: int,
    suffix: str = "a",
    *,
    revision: int = 1,
    state: TaskState = S.RUNNING,
    ready: bool | None = None,
    desired: DesiredState = DesiredState.RUNNING,
    created_at: float = 0.0,
    finished_at: float | None = None,
    ready_at: float | None = None,
    attempt: int = 0,
) -> Task:
    if ready is None:
        ready = state == S.RUNNING
    if ready and ready_at is None:
        ready_at = created_at
    return Task(
        id=f"web.{slot}.{suffix}",
        service="web",
        revision=revision,
        slot=slot,
        node="n1",
        desired_state=desired,
        state=state,
        created_at=created_at,
        updated_at=finished_at if finished_at is not None else created_at,
        finished_at=finished_at,
        ready=ready,
        ready_at=ready_at,
        attempt=attempt,
    )


def failed(slot: int, suffix: str, finished_at: float, **kw: object) -> Task:
    return task(slot, suffix, state=S.FAILED, ready=False, finished_at=finished_at, **kw)  # type: ignore[arg-type]


def shut(plan: ReconcilePlan) -> dict[str, str]:
    return dict(plan.shutdown)


# --- slots and scale ---------------------------------------------------------------------------


def test_new_service_creates_slots_one_to_n() -> None:
    plan = plan_service("web", service(replicas=3), [], NOW)
    assert plan.create == (NewTask(1, 1, 0), NewTask(2, 1, 0), NewTask(3, 1, 0))
    assert plan.shutdown == ()
    assert plan.forget == ()
    assert plan.requeue_at is None
    assert not plan.forget_revisions


def test_zero_replicas_creates_nothing() -> None:
    assert plan_service("web", service(replicas=0), [], NOW).empty


def test_steady_state_plan_is_empty() -> None:
    tasks = [task(s) for s in (1, 2, 3)]
    plan = plan_service("web", service(replicas=3), tasks, NOW)
    assert plan.empty
    assert plan.requeue_at is None


def test_pending_and_starting_tasks_count_as_the_slots_task() -> None:
    tasks = [task(1, state=S.PENDING), task(2, state=S.STARTING), task(3)]
    assert plan_service("web", service(replicas=3), tasks, NOW).empty


def test_scale_up_fills_only_missing_slots() -> None:
    plan = plan_service("web", service(replicas=4), [task(1), task(3)], NOW)
    assert plan.create == (NewTask(2, 1, 0), NewTask(4, 1, 0))


def test_scale_down_shuts_down_the_highest_slots() -> None:
    tasks = [task(s) for s in (1, 2, 3, 4)]
    plan = plan_service("web", service(replicas=2), tasks, NOW)
    assert shut(plan) == {"web.3.a": "scaled down", "web.4.a": "scaled down"}
    assert plan.create == ()


def test_scale_down_forgets_the_history_of_removed_slots() -> None:
    tasks = [task(1), task(2), failed(2, "old", 5.0), task(3, state=S.STOPPING, ready=False)]
    tasks[-1] = tasks[-1].changed(1.0, desired_state=DesiredState.SHUTDOWN)
    plan = plan_service("web", service(replicas=1), tasks, NOW)
    assert shut(plan) == {"web.2.a": "scaled down"}  # slot 3's task is already stopping
    assert plan.forget == ("web.2.old",)


def test_duplicates_in_a_slot_keep_the_newest() -> None:
    tasks = [task(1, "old", created_at=1.0), task(1, "new", created_at=2.0), task(2)]
    plan = plan_service("web", service(replicas=2), tasks, NOW)
    assert shut(plan) == {"web.1.old": "duplicate task in slot"}
    assert plan.create == ()


def test_duplicates_never_shut_down_the_slots_only_ready_task() -> None:
    tasks = [
        task(1, "old", created_at=1.0),  # running and ready
        task(1, "new", state=S.STARTING, created_at=2.0),  # not ready yet
    ]
    plan = plan_service("web", service(replicas=1), tasks, NOW)
    assert "web.1.old" not in shut(plan)


def test_tasks_already_shutting_down_are_left_alone_and_replaced() -> None:
    stopping = task(1, state=S.STOPPING, ready=False).changed(
        1.0, desired_state=DesiredState.SHUTDOWN
    )
    plan = plan_service("web", service(replicas=1), [stopping], NOW)
    assert plan.shutdown == ()
    assert plan.create == (NewTask(1, 1, 0),)


# --- restart policy ----------------------------------------------------------------------------

POLICY = RestartPolicy(delay=1.0, max_delay=30.0)


@pytest.mark.parametrize(
    ("policy", "state", "attempt", "ready_at", "expected"),
    [
        # Back-off 1s, 2s, 4s, 8s, 16s, then capped at maxDelay 30s.
        (POLICY, S.FAILED, 0, None, (1, 101.0)),
        (POLICY, S.FAILED, 1, None, (2, 102.0)),
        (POLICY, S.FAILED, 2, None, (3, 104.0)),
        (POLICY, S.FAILED, 3, None, (4, 108.0)),
        (POLICY, S.FAILED, 4, None, (5, 116.0)),
        (POLICY, S.FAILED, 5, None, (6, 130.0)),
        (POLICY, S.FAILED, 9, None, (10, 130.0)),
        # Ready at some point: the count starts again at 1s.
        (POLICY, S.FAILED, 7, 50.0, (1, 101.0)),
        # A task stopped by something other than Warren counts as a failure.
        (POLICY, S.STOPPED, 0, None, (1, 101.0)),
        # Completed on its own: replaced at once, count reset.
        (POLICY, S.COMPLETE, 4, None, (0, 100.0)),
        (RestartPolicy(condition=RestartCondition.ON_FAILURE), S.FAILED, 0, None, (1, 101.0)),
        (RestartPolicy(condition=RestartCondition.ON_FAILURE), S.COMPLETE, 0, None, None),
        (RestartPolicy(condition=RestartCondition.NONE), S.FAILED, 0, None, None),
        (RestartPolicy(condition=RestartCondition.NONE), S.COMPLETE, 0, None, None),
        # maxAttempts 3: attempts 1, 2, 3 are allowed, a 4th is not.
        (RestartPolicy(max_attempts=3), S.FAILED, 2, None, (3, 104.0)),
        (RestartPolicy(max_attempts=3), S.FAILED, 3, None, None),
        (RestartPolicy(max_attempts=3), S.FAILED, 9, 50.0, (1, 101.0)),
        (RestartPolicy(max_attempts=3), S.COMPLETE, 3, None, (0, 100.0)),
        (RestartPolicy(delay=0.5, max_delay=3.0), S.FAILED, 3, None, (4, 103.0)),
    ],
)
def test_restart_due(
    policy: RestartPolicy,
    state: TaskState,
    attempt: int,
    ready_at: float | None,
    expected: tuple[int, float] | None,
) -> None:
    last = task(1, state=state, ready=False, finished_at=100.0, attempt=attempt, ready_at=ready_at)
    assert restart_due(last, policy) == expected


def test_restart_due_falls_back_to_updated_at() -> None:
    last = task(1, state=S.FAILED, ready=False).changed(100.0)
    assert last.finished_at is None
    assert restart_due(last, POLICY) == (1, 101.0)


def test_restart_due_survives_a_long_crash_loop() -> None:
    last = failed(1, "a", 100.0, attempt=1024)
    assert restart_due(last, POLICY) == (1025, 130.0)


def test_failed_task_is_replaced_once_its_back_off_is_due() -> None:
    tasks = [failed(1, "a", 100.0, attempt=2)]  # next: attempt 3, after 4s
    early = plan_service("web", service(replicas=1), tasks, 103.5)
    assert early.create == ()
    assert early.requeue_at == 104.0
    due = plan_service("web", service(replicas=1), tasks, 104.0)
    assert due.create == (NewTask(1, 1, 3),)
    assert due.requeue_at is None


def test_requeue_at_is_the_earliest_back_off() -> None:
    tasks = [failed(1, "a", 100.0, attempt=3), failed(2, "a", 100.0, attempt=1)]
    plan = plan_service("web", service(replicas=2), tasks, 100.0)
    assert plan.create == ()
    assert plan.requeue_at == 102.0


@pytest.mark.parametrize(
    ("condition", "state", "expected"),
    [
        (RestartCondition.ANY, S.FAILED, (NewTask(1, 1, 1),)),
        (RestartCondition.ANY, S.COMPLETE, (NewTask(1, 1, 0),)),
        (RestartCondition.ON_FAILURE, S.FAILED, (NewTask(1, 1, 1),)),
        (RestartCondition.ON_FAILURE, S.COMPLETE, ()),
        (RestartCondition.NONE, S.FAILED, ()),
        (RestartCondition.NONE, S.COMPLETE, ()),
    ],
)
def test_ended_task_replaced_according_to_the_restart_policy(
    condition: RestartCondition, state: TaskState, expected: tuple[NewTask, ...]
) -> None:
    svc = service(replicas=1, restart=RestartPolicy(condition=condition))
    ended = task(1, state=state, ready=False, finished_at=10.0)
    plan = plan_service("web", svc, [ended], NOW)
    assert plan.create == expected
    assert plan.requeue_at is None
    if not expected:
        assert plan.notes == ("slot 1: not restarted (restart policy)",)


def test_max_attempts_leaves_the_slot_empty() -> None:
    svc = service(replicas=2, restart=RestartPolicy(max_attempts=2))
    tasks = [failed(1, "a", 10.0, attempt=2), failed(2, "a", 10.0, attempt=1)]
    plan = plan_service("web", svc, tasks, NOW)
    assert plan.create == (NewTask(2, 1, 2),)
    assert plan.notes == ("slot 1: not restarted (restart policy)",)


def test_crash_loop_backs_off_1_2_4_8_16_then_max_delay() -> None:
    svc = service(replicas=1)
    history: list[Task] = []
    now, delays = 0.0, []
    for n in range(8):
        plan = plan_service("web", svc, history, now)
        if not plan.create:
            assert plan.requeue_at is not None
            delays.append(plan.requeue_at - now)
            now = plan.requeue_at
            plan = plan_service("web", svc, history, now)
        (new,) = plan.create
        # The replacement fails straight away, without ever being ready.
        history = [t for t in history if t.id not in plan.forget] + [
            failed(1, str(n), now, created_at=now, attempt=new.attempt)
        ]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(history) <= HISTORY_PER_SLOT + 1


def test_a_task_that_was_ready_resets_the_back_off() -> None:
    was_ready = failed(1, "a", 100.0, attempt=6, ready_at=60.0)
    plan = plan_service("web", service(replicas=1), [was_ready], 100.5)
    assert plan.requeue_at == 101.0
    assert plan_service("web", service(replicas=1), [was_ready], 101.0).create == (
        NewTask(1, 1, 1),
    )


def test_tasks_shut_down_by_warren_do_not_count_for_back_off() -> None:
    older = failed(1, "a", 90.0, attempt=5)
    removed = failed(1, "b", 100.0, attempt=6, desired=DesiredState.SHUTDOWN, created_at=95.0)
    plan = plan_service("web", service(replicas=1), [older, removed], 200.0)
    assert plan.create == (NewTask(1, 1, 6),)  # the back-off follows the older failure


# --- revisions ---------------------------------------------------------------------------------


def test_start_first_keeps_the_old_task_until_the_new_one_is_ready() -> None:
    svc = service(replicas=1, revision=2)
    old = task(1, "old", revision=1)
    step1 = plan_service("web", svc, [old], NOW)
    assert step1.create == (NewTask(1, 2, 0),)
    assert step1.shutdown == ()

    for state in (S.PENDING, S.STARTING, S.RUNNING):
        new = task(1, "new", revision=2, state=state, ready=False, created_at=1.0)
        waiting = plan_service("web", svc, [old, new], NOW)
        assert waiting.empty, state

    new = task(1, "new", revision=2, created_at=1.0)  # running and ready
    done = plan_service("web", svc, [old, new], NOW)
    assert shut(done) == {"web.1.old": "replaced by revision 2"}
    assert done.create == ()


def test_stop_first_stops_the_old_task_before_creating_the_new_one() -> None:
    svc = service(replicas=1, revision=2)
    old = task(1, "old", revision=1)
    step1 = plan_service("web", svc, [old], NOW, order=UpdateOrder.STOP_FIRST)
    assert shut(step1) == {"web.1.old": "replaced by revision 2"}
    assert step1.create == ()

    stopping = old.changed(NOW, desired_state=DesiredState.SHUTDOWN).transition(S.STOPPING, NOW)
    step2 = plan_service("web", svc, [stopping], NOW, order=UpdateOrder.STOP_FIRST)
    assert step2.create == ()
    assert step2.shutdown == ()

    stopped = stopping.transition(S.STOPPED, NOW + 1)
    step3 = plan_service("web", svc, [stopped], NOW + 1, order=UpdateOrder.STOP_FIRST)
    assert step3.create == (NewTask(1, 2, 0),)


def test_slot_revisions_pin_slots_during_a_rollout() -> None:
    svc = service(replicas=2, revision=2)
    tasks = [task(1, revision=1), task(2, revision=1)]
    plan = plan_service("web", svc, tasks, NOW, slot_revisions={2: 1})
    assert plan.create == (NewTask(1, 2, 0),)
    assert plan.shutdown == ()


def test_a_rollback_target_replaces_newer_tasks() -> None:
    svc = service(replicas=1, revision=1)
    tasks = [task(1, "v2", revision=2, created_at=5.0), task(1, "v1", revision=1, created_at=6.0)]
    plan = plan_service("web", svc, tasks, NOW)
    assert shut(plan) == {"web.1.v2": "replaced by revision 1"}


# --- deletion and history ----------------------------------------------------------------------


def test_deleted_service_shuts_everything_down_then_forgets_revisions() -> None:
    tasks = [task(1), task(2, state=S.PENDING), failed(3, "x", 5.0)]
    step1 = plan_service("web", None, tasks, NOW)
    assert shut(step1) == {"web.1.a": "service removed", "web.2.a": "service removed"}
    assert step1.forget == ("web.3.x",)
    assert step1.create == ()
    assert not step1.forget_revisions

    ended = [failed(1, "a", 6.0), task(2, state=S.STOPPED, ready=False, finished_at=6.0)]
    step2 = plan_service("web", None, ended, NOW)
    assert step2.shutdown == ()
    assert set(step2.forget) == {"web.1.a", "web.2.a"}
    assert not step2.forget_revisions

    step3 = plan_service("web", None, [], NOW)
    assert step3.forget_revisions
    assert not step3.empty


def test_history_is_trimmed_per_slot() -> None:
    ended = [failed(1, f"h{i}", 10.0 + i, created_at=float(i)) for i in range(6)]
    live = task(1, "live", created_at=20.0)
    plan = plan_service("web", service(replicas=1), [*ended, live], NOW)
    kept = HISTORY_PER_SLOT
    assert set(plan.forget) == {f"web.1.h{i}" for i in range(6 - kept)}
    assert plan.create == ()
    assert plan.shutdown == ()


def test_history_of_other_slots_is_independent() -> None:
    tasks = [failed(s, f"h{i}", 10.0 + i, created_at=float(i)) for s in (1, 2) for i in range(3)]
    live = [task(1, "x", created_at=9.0), task(2, "x", created_at=9.0)]
    plan = plan_service("web", service(replicas=2), [*tasks, *live], NOW)
    assert plan.forget == ()


def test_two_revisions_side_by_side_in_a_slot() -> None:
    """A canary or blue/green slot runs one task of each revision; the old one goes only once
    every wanted revision is ready, and a slot back to one revision sheds the other."""
    svc = Service(
        spec=ServiceSpec(name="web", command=("x",), replicas=2), revision=2,
        created_at=0, updated_at=0,
    )  # fmt: skip
    old = [
        Task(id=f"web.{s}.a", service="web", revision=1, slot=s, node="n", state=TaskState.RUNNING,
             ready=True, created_at=0, updated_at=0)
        for s in (1, 2)
    ]  # fmt: skip
    plan = plan_service("web", svc, old, 10.0, {1: (1, 2), 2: 1})
    assert plan.create == (NewTask(1, 2, 0),)
    assert plan.shutdown == ()
    green = Task(id="web.1.b", service="web", revision=2, slot=1, node="n",
                 state=TaskState.RUNNING, ready=True, created_at=5, updated_at=5)  # fmt: skip
    plan = plan_service("web", svc, [*old, green], 10.0, {1: (1, 2), 2: 1})
    assert plan.create == () and plan.shutdown == ()
    plan = plan_service("web", svc, [*old, green], 10.0, {1: 2, 2: 1})
    assert plan.shutdown == (("web.1.a", "replaced by revision 2"),)
    plan = plan_service("web", svc, [*old, green], 10.0, {1: 1, 2: 1})
    assert plan.shutdown == (("web.1.b", "replaced by revision 1"),)


# --- nodes down --------------------------------------------------------------------------------


def test_tasks_on_a_down_node_are_shut_down_and_replaced_at_once() -> None:
    lost = task(1, "lost", created_at=5.0)
    other = task(2, "b").model_copy(update={"node": "n2"})
    plan = plan_service("web", service(replicas=2), [lost, other], NOW, down={"n1"})
    assert shut(plan) == {"web.1.lost": "node n1 is down"}
    assert plan.create == (NewTask(1, 1, 0),)  # no back-off: the task did not fail


def test_a_lost_task_is_replaced_without_back_off_even_after_earlier_failures() -> None:
    earlier = failed(1, "old", finished_at=1.0, attempt=3)
    lost = task(1, "lost", created_at=2.0, attempt=4)
    plan = plan_service("web", service(replicas=1), [earlier, lost], NOW, down={"n1"})
    assert plan.create == (NewTask(1, 1, 0),)


def test_a_lost_replacement_that_failed_still_backs_off() -> None:
    lost = task(1, "lost", created_at=2.0).changed(3.0, desired_state=DesiredState.SHUTDOWN)
    crashed = failed(1, "new", finished_at=NOW - 0.5, created_at=4.0)
    plan = plan_service("web", service(replicas=1), [lost, crashed], NOW, down={"n1"})
    assert plan.create == ()
    assert plan.requeue_at == NOW + 0.5


def test_stop_first_does_not_wait_for_a_task_on_a_down_node() -> None:
    old = task(1, "old", revision=1).changed(NOW, desired_state=DesiredState.SHUTDOWN)
    plan = plan_service(
        "web", service(replicas=1, revision=2), [old], NOW,
        order=UpdateOrder.STOP_FIRST, down={"n1"},
    )  # fmt: skip
    assert plan.create == (NewTask(1, 2, 0),)
