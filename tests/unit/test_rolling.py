"""Rolling planner tables: batches, monitor, delay, failures, deadlines, success, scaling."""

from __future__ import annotations

from typing import Any

import pytest

from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason, RolloutConfig
from warren.domain.services import Service
from warren.domain.specs import FailureAction, ServiceSpec, UpdateOrder
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.reconciling import plan_service
from warren.planning.rollouts import RolloutView, Step
from warren.planning.strategies import slot_revisions
from warren.planning.strategies.rolling import next_step

S = TaskState
A = FailureAction
T0 = 1000.0
"""When the deployment started; revision 1's tasks were created at 0 and ready at 1."""


def deployment(
    replicas: int = 4,
    *,
    kind: DeploymentKind = DeploymentKind.UPDATE,
    from_revision: int | None = 1,
    to_revision: int = 2,
    config: dict[str, Any] | None = None,
    **fields: Any,
) -> Deployment:
    fields.setdefault("progress_at", T0)
    return Deployment(
        id="web-2",
        service="web",
        kind=kind,
        from_revision=from_revision,
        to_revision=to_revision,
        replicas=replicas,
        config=RolloutConfig(**(config or {})),
        started_at=T0,
        updated_at=T0,
        **fields,
    )


def task(
    slot: int,
    revision: int,
    state: TaskState = S.RUNNING,
    *,
    suffix: str = "",
    ready: bool | None = None,
    ready_at: float | None = None,
    created_at: float | None = None,
    desired: DesiredState = DesiredState.RUNNING,
    message: str = "",
) -> Task:
    if created_at is None:
        created_at = 0.0 if revision == 1 else T0
    if ready is None:
        ready = state == S.RUNNING
    if ready and ready_at is None:
        ready_at = created_at + 1
    return Task(
        id=f"web.{slot}.r{revision}{suffix}",
        service="web",
        revision=revision,
        slot=slot,
        node="n1",
        desired_state=desired,
        state=state,
        created_at=created_at,
        updated_at=created_at,
        ready=ready,
        ready_at=ready_at,
        message=message,
    )


def old(slot: int, state: TaskState = S.RUNNING) -> Task:
    """The slot's revision-1 task (running, or ended because it was replaced)."""
    desired = DesiredState.RUNNING if state == S.RUNNING else DesiredState.SHUTDOWN
    return task(slot, 1, state, desired=desired)


def moved(slot: int, ready_at: float = T0 + 1) -> list[Task]:
    """A slot done with revision 2: the old task stopped, the new one ready since ``ready_at``."""
    return [old(slot, S.STOPPED), task(slot, 2, ready_at=ready_at)]


def world(replicas: int, done: tuple[int, ...] = (), ready_at: float = T0 + 1) -> list[Task]:
    """Slots in ``done`` moved to revision 2; the others still run revision 1."""
    tasks: list[Task] = []
    for slot in range(1, replicas + 1):
        tasks.extend(moved(slot, ready_at) if slot in done else [old(slot)])
    return tasks


def step(d: Deployment, tasks: list[Task], now: float, replicas: int | None = None) -> Step:
    return next_step(RolloutView(d, d.replicas if replicas is None else replicas, tasks, now))


def reasons(d: Deployment) -> list[str]:
    return [x.reason for x in d.decisions]


def failed_new(slot: int, message: str = "exit code 1", suffix: str = "") -> Task:
    return task(slot, 2, S.FAILED, suffix=suffix, ready=False, created_at=T0, message=message)


# --- parallelism -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "parallelism", "first"),
    [
        (4, 1, (1,)),
        (4, 2, (1, 2)),
        (4, 3, (1, 2, 3)),
        (4, 0, (1, 2, 3, 4)),  # 0 = every slot at once
        (3, 5, (1, 2, 3)),  # more than replicas: every slot
        (1, 0, (1,)),
    ],
)
def test_first_batch_moves_the_lowest_parallelism_slots(
    replicas: int, parallelism: int, first: tuple[int, ...]
) -> None:
    d = deployment(replicas, config={"parallelism": parallelism})
    s = step(d, world(replicas), T0)
    assert s.deployment.step == 1
    assert s.deployment.target_slots == first
    assert s.deployment.phase == Phase.PROGRESSING
    assert s.deployment.batch_started_at == T0
    assert s.deployment.progress_at == T0
    assert reasons(s.deployment) == [Reason.BATCH_STARTED]
    assert s.rollback_to is None
    # Look again when the new tasks' healthy deadline falls due (60 s by default).
    assert s.requeue_at == T0 + 60


@pytest.mark.parametrize(
    ("parallelism", "batches"),
    [
        (1, [(1,), (2,), (3,), (4,), (5,)]),
        (2, [(1, 2), (3, 4), (5,)]),
        (3, [(1, 2, 3), (4, 5)]),
        (0, [(1, 2, 3, 4, 5)]),
    ],
)
def test_batches_follow_one_another_until_every_slot_is_done(
    parallelism: int, batches: list[tuple[int, ...]]
) -> None:
    d = deployment(5, config={"parallelism": parallelism})
    done: tuple[int, ...] = ()
    now = T0
    for number, batch in enumerate(batches, start=1):
        d = step(d, world(5, done), now).deployment
        assert d.step == number
        assert d.target_slots == (*done, *batch)
        done = d.target_slots
        now += 2
    d = step(d, world(5, done), now).deployment
    assert d.phase == Phase.SUCCEEDED
    assert d.step == len(batches)
    assert d.ready_slots == 5


# --- a batch waits for every moved slot --------------------------------------------------------

# Slot 1 is done; slot 2, moved in the same batch, is not yet: in every case, no new batch.
NOT_DONE = {
    "new task not created yet": [old(2)],
    "new task pending": [old(2), task(2, 2, S.PENDING)],
    "new task starting": [old(2), task(2, 2, S.STARTING)],
    "new task running, not ready": [old(2), task(2, 2, S.RUNNING, ready=False)],
    "new task ready, old still running": [old(2), task(2, 2)],
    "new task ready, old stopping": [old(2, S.STOPPING), task(2, 2)],
    "old stopped, new not created (stop-first)": [old(2, S.STOPPED)],
    "old stopping, new not created (stop-first)": [old(2, S.STOPPING)],
    "new task being shut down": [
        old(2, S.STOPPED),
        task(2, 2, S.STOPPING, ready=False, desired=DesiredState.SHUTDOWN),
    ],
}


@pytest.mark.parametrize("slot2", NOT_DONE.values(), ids=NOT_DONE.keys())
def test_next_batch_waits_for_every_moved_slot(slot2: list[Task]) -> None:
    d = deployment(4, config={"parallelism": 2}, step=1, target_slots=(1, 2))
    tasks = [*moved(1), *slot2, old(3), old(4)]
    s = step(d, tasks, T0 + 5)
    assert s.deployment.step == 1
    assert s.deployment.target_slots == (1, 2)
    assert Reason.BATCH_STARTED not in reasons(s.deployment)
    assert Reason.BATCH_READY not in reasons(s.deployment)
    # Slot 1's progress is recorded all the same.
    assert s.deployment.ready_slots == 1
    assert s.deployment.progress_at == T0 + 5


def test_next_batch_starts_once_the_last_slot_is_done() -> None:
    d = deployment(4, config={"parallelism": 2}, step=1, target_slots=(1, 2))
    s = step(d, [*moved(1), *moved(2), old(3), old(4)], T0 + 5)
    assert s.deployment.step == 2
    assert s.deployment.target_slots == (1, 2, 3, 4)
    assert reasons(s.deployment) == [Reason.BATCH_READY, Reason.BATCH_STARTED]
    assert s.deployment.batch_started_at == T0 + 5
    assert s.deployment.batch_ready_at is None


def test_waiting_without_progress_leaves_the_record_unchanged() -> None:
    d = deployment(2, step=1, target_slots=(1,), ready_slots=0)
    tasks = [old(1), task(1, 2, S.STARTING), old(2)]
    s = step(d, tasks, T0 + 5)
    assert s.deployment == d
    # The new task's healthy deadline (60 s) comes before the progress deadline (600 s).
    assert s.requeue_at == T0 + 60


# --- monitor -----------------------------------------------------------------------------------


def test_monitor_keeps_the_batch_open_until_the_tasks_stayed_ready_that_long() -> None:
    d = deployment(2, config={"monitor": 5.0}, step=1, target_slots=(1,))
    tasks = [*moved(1, ready_at=T0 + 1), old(2)]
    early = step(d, tasks, T0 + 3)
    assert early.deployment.step == 1
    assert early.deployment.ready_slots == 0
    assert early.requeue_at == T0 + 6  # ready at +1, monitored for 5 s
    just_before = step(early.deployment, tasks, T0 + 5.999)
    assert just_before.deployment.step == 1
    at_end = step(just_before.deployment, tasks, T0 + 6)
    assert at_end.deployment.step == 2
    assert at_end.deployment.target_slots == (1, 2)
    assert at_end.deployment.ready_slots == 1


def test_monitor_requeues_at_the_earliest_pending_end() -> None:
    d = deployment(3, config={"monitor": 5.0, "parallelism": 2}, step=1, target_slots=(1, 2))
    tasks = [*moved(1, ready_at=T0 + 1), *moved(2, ready_at=T0 + 2), old(3)]
    s = step(d, tasks, T0 + 3)
    assert s.requeue_at == T0 + 6
    s = step(s.deployment, tasks, T0 + 6)
    assert s.deployment.step == 1
    assert s.deployment.ready_slots == 1
    assert s.requeue_at == T0 + 7
    s = step(s.deployment, tasks, T0 + 7)
    assert s.deployment.step == 2


def test_monitor_counts_from_ready_not_from_creation() -> None:
    d = deployment(2, config={"monitor": 5.0}, step=1, target_slots=(1,))
    # Created at T0, ready only at T0 + 4: monitored until T0 + 9.
    tasks = [*moved(1, ready_at=T0 + 4), old(2)]
    assert step(d, tasks, T0 + 8).deployment.step == 1
    assert step(d, tasks, T0 + 8).requeue_at == T0 + 9
    assert step(d, tasks, T0 + 9).deployment.step == 2


def test_a_task_that_turned_unready_restarts_nothing_but_is_not_done() -> None:
    d = deployment(2, config={"monitor": 5.0}, step=1, target_slots=(1,))
    flapping = task(1, 2, S.RUNNING, ready=False, ready_at=T0 + 1)
    s = step(d, [old(1, S.STOPPED), flapping, old(2)], T0 + 10)
    assert s.deployment.step == 1
    assert s.deployment.failed_tasks == ()  # it was ready once: not a healthy-deadline failure


# --- delay -------------------------------------------------------------------------------------


def test_delay_separates_batches_and_adds_up() -> None:
    d = deployment(3, config={"delay": 10.0})
    # The first batch starts at once: no delay before it.
    d = step(d, world(3), T0).deployment
    assert (d.step, d.delay_total) == (1, 0.0)

    s = step(d, world(3, (1,)), T0 + 2)
    assert s.deployment.step == 1
    assert s.deployment.batch_ready_at == T0 + 2
    assert reasons(s.deployment)[-1] == Reason.BATCH_READY
    assert s.requeue_at == T0 + 12

    s = step(s.deployment, world(3, (1,)), T0 + 11.5)
    assert s.deployment.step == 1
    assert s.deployment.batch_ready_at == T0 + 2  # not moved by a later look
    assert s.requeue_at == T0 + 12

    s = step(s.deployment, world(3, (1,)), T0 + 12)
    assert s.deployment.step == 2
    assert s.deployment.target_slots == (1, 2)
    assert s.deployment.delay_total == 10.0
    assert s.deployment.batch_ready_at is None

    s = step(s.deployment, world(3, (1, 2)), T0 + 15)
    assert s.deployment.batch_ready_at == T0 + 15
    assert s.requeue_at == T0 + 25
    s = step(s.deployment, world(3, (1, 2)), T0 + 25)
    assert s.deployment.step == 3
    assert s.deployment.delay_total == 20.0

    # After the last batch there is nothing to wait for.
    s = step(s.deployment, world(3, (1, 2, 3)), T0 + 27)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert s.deployment.finished_at == T0 + 27
    assert s.deployment.delay_total == 20.0


def test_delay_waits_from_when_the_batch_was_seen_ready() -> None:
    # Ready at T0 + 1 but first seen at T0 + 4: the delay runs from T0 + 4.
    d = deployment(2, config={"delay": 3.0}, step=1, target_slots=(1,))
    s = step(d, world(2, (1,), ready_at=T0 + 1), T0 + 4)
    assert s.requeue_at == T0 + 7
    assert s.deployment.step == 1


# --- failures ----------------------------------------------------------------------------------


def test_failed_new_task_with_rollback_rolls_back_to_the_previous_revision() -> None:
    d = deployment(3, step=1, target_slots=(1,))
    s = step(d, [old(1), failed_new(1), old(2), old(3)], T0 + 5)
    assert s.deployment.phase == Phase.ROLLING_BACK
    assert s.rollback_to == 1 == d.from_revision
    assert s.deployment.failed_tasks == ("web.1.r2",)
    assert reasons(s.deployment) == [Reason.TASK_FAILED, Reason.TASK_FAILED]
    assert s.deployment.decisions[-1].action == "roll back"
    assert "exit code 1" in s.deployment.message
    assert s.deployment.finished_at is None  # the rollback deployment finishes it


def test_failed_new_task_with_pause_pauses() -> None:
    d = deployment(3, config={"failure_action": A.PAUSE}, step=1, target_slots=(1,))
    s = step(d, [old(1), failed_new(1), old(2), old(3)], T0 + 5)
    assert s.deployment.phase == Phase.PAUSED
    assert s.rollback_to is None
    assert "web.1.r2" in s.deployment.paused_reason
    assert "exit code 1" in s.deployment.paused_reason
    assert s.deployment.failed_tasks == ("web.1.r2",)
    assert s.deployment.decisions[-1].action == "pause"


def test_failed_new_task_with_continue_is_logged_and_the_rollout_goes_on() -> None:
    """Issue 12, item 9: with ``continue`` the failed slot was retried until the progress
    deadline, and its re-failures counted past the slots ("5 of 4 failed"). As in Swarm: the
    failure is recorded, the next batch starts, every slot ends on the new revision; a slot
    counts once."""
    d = deployment(2, config={"failure_action": A.CONTINUE}, step=1, target_slots=(1,))
    s = step(d, [old(1), failed_new(1), old(2)], T0 + 5)
    assert s.deployment.phase == Phase.PROGRESSING
    assert s.rollback_to is None
    assert reasons(s.deployment) == [
        Reason.TASK_FAILED, Reason.FAILURE_IGNORED, Reason.BATCH_READY, Reason.BATCH_STARTED,
    ]  # fmt: skip
    assert s.deployment.failed_tasks == ("web.1.r2",)
    assert (s.deployment.step, s.deployment.target_slots) == (2, (1, 2))

    # Slot 2 moves; slot 1's restart fails again: the restart policy's, not counted again.
    again = task(1, 2, S.FAILED, suffix="b", ready=False, created_at=T0 + 6, message="exit 1")
    tasks = [old(1, S.STOPPED), failed_new(1), again, *moved(2, ready_at=T0 + 7)]
    s = step(s.deployment, tasks, T0 + 8)
    assert s.deployment.failed_tasks == ("web.1.r2",)
    assert s.deployment.failed_slots == (1,)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert "2/2 tasks on revision 2, 1 failed slot(s)" in s.deployment.message


def test_rollback_action_without_a_previous_revision_pauses() -> None:
    d = deployment(1, from_revision=None, step=1, target_slots=(1,))
    s = step(d, [failed_new(1)], T0 + 5)
    assert s.deployment.phase == Phase.PAUSED
    assert s.rollback_to is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("health check failed: GET /healthz returned 500", Reason.HEALTH_CHECK_FAILED),
        ("health check failed 3 times", Reason.HEALTH_CHECK_FAILED),
        ("exit code 1", Reason.TASK_FAILED),
        ("", Reason.TASK_FAILED),
        ("start failed: health check failed", Reason.TASK_FAILED),
    ],
)
def test_failure_reason_tells_health_checks_apart(message: str, reason: Reason) -> None:
    d = deployment(2, step=1, target_slots=(1,))
    s = step(d, [old(1), failed_new(1, message), old(2)], T0 + 5)
    assert s.deployment.phase == Phase.ROLLING_BACK
    assert s.deployment.decisions[-1].reason == reason
    assert s.deployment.decisions[-2].reason == reason
    assert (message or "failed") in s.deployment.decisions[-2].message


# --- healthy deadline --------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PENDING, S.STARTING, S.RUNNING])
def test_a_task_not_ready_within_the_healthy_deadline_is_a_failure(state: TaskState) -> None:
    d = deployment(2, config={"healthy_deadline": 30.0}, step=1, target_slots=(1,))
    tasks = [old(1), task(1, 2, state, ready=False, created_at=T0 + 2), old(2)]

    before = step(d, tasks, T0 + 10)
    assert before.deployment.phase == Phase.PROGRESSING
    assert before.deployment.failed_tasks == ()
    assert before.requeue_at == T0 + 32  # created at +2, 30 s to turn ready

    assert step(d, tasks, T0 + 31.999).deployment.failed_tasks == ()

    at = step(d, tasks, T0 + 32)
    assert at.deployment.phase == Phase.ROLLING_BACK
    assert at.rollback_to == 1
    assert at.deployment.failed_tasks == ("web.1.r2",)
    assert at.deployment.decisions[-1].reason == Reason.HEALTHY_DEADLINE_EXCEEDED
    assert "not ready 30s" in at.deployment.message


def test_healthy_deadline_requeue_is_the_earliest_of_the_batch() -> None:
    d = deployment(3, config={"healthy_deadline": 30.0, "parallelism": 2}, step=1)
    d = d.model_copy(update={"target_slots": (1, 2)})
    tasks = [
        old(1),
        task(1, 2, S.STARTING, created_at=T0 + 4),
        old(2),
        task(2, 2, S.STARTING, created_at=T0 + 1),
        old(3),
    ]
    assert step(d, tasks, T0 + 10).requeue_at == T0 + 31


# --- max failure ratio -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "phase"),
    [
        (1, Phase.PROGRESSING),
        (2, Phase.PROGRESSING),
        (3, Phase.PROGRESSING),  # 3/6 = 0.5: not above the ratio
        (4, Phase.ROLLING_BACK),
        (6, Phase.ROLLING_BACK),
    ],
)
def test_max_failure_ratio_half_of_six_tolerates_three(failures: int, phase: Phase) -> None:
    d = deployment(6, config={"parallelism": 0, "max_failure_ratio": 0.5}, step=1)
    d = d.model_copy(update={"target_slots": (1, 2, 3, 4, 5, 6)})
    tasks = [old(s) for s in range(1, 7)]
    tasks += [failed_new(s) for s in range(1, failures + 1)]
    s = step(d, tasks, T0 + 5)
    assert s.deployment.phase == phase
    assert len(s.deployment.failed_tasks) == failures
    if phase == Phase.ROLLING_BACK:
        assert s.rollback_to == 1
        assert s.deployment.decisions[-1].reason == Reason.MAX_FAILURE_RATIO_EXCEEDED
        assert f"{failures} of 6 slots failed" in s.deployment.message
    else:
        assert s.rollback_to is None
        assert s.deployment.decisions[-1].reason == Reason.TASK_FAILED


def test_max_failure_ratio_acts_on_the_fourth_failure_one_at_a_time() -> None:
    d = deployment(6, config={"parallelism": 0, "max_failure_ratio": 0.5}, step=1)
    d = d.model_copy(update={"target_slots": (1, 2, 3, 4, 5, 6)})
    tasks = [old(s) for s in range(1, 7)]
    for n in range(1, 5):
        tasks.append(failed_new(n))
        s = step(d, tasks, T0 + n)
        d = s.deployment
        assert len(d.failed_tasks) == n
        if n < 4:
            assert d.phase == Phase.PROGRESSING
        else:
            assert d.phase == Phase.ROLLING_BACK
            assert s.rollback_to == 1
            assert "4 of 6 slots failed (max failure ratio 0.5)" in d.message


def test_each_failed_slot_is_counted_once() -> None:
    d = deployment(6, config={"parallelism": 2, "max_failure_ratio": 0.5}, step=1)
    d = d.model_copy(update={"target_slots": (1, 2)})
    tasks = [old(s) for s in range(1, 7)] + [failed_new(1)]
    first = step(d, tasks, T0 + 5).deployment
    assert first.failed_tasks == ("web.1.r2",)
    again = step(first, tasks, T0 + 6).deployment
    assert again.failed_tasks == ("web.1.r2",)
    assert len(again.decisions) == len(first.decisions)
    # A second failure in the same slot (a restart that crashed too) is the restart policy's:
    # a slot counts once, so the count never exceeds the slots.
    tasks.append(failed_new(1, suffix="b"))
    third = step(again, tasks, T0 + 7).deployment
    assert third.failed_tasks == ("web.1.r2",)


NOT_COUNTED = {
    "failed before the deployment started": task(
        1, 2, S.FAILED, ready=False, created_at=T0 - 5, message="exit code 1"
    ),
    "never ready, created before the deployment started": task(
        1, 2, S.STARTING, created_at=T0 - 500
    ),
    "old revision failed": task(1, 1, S.FAILED, suffix="x", created_at=T0 + 1, ready=False),
    "new revision failed after being shut down": task(
        1, 2, S.FAILED, ready=False, desired=DesiredState.SHUTDOWN, message="exit code 137"
    ),
    "new revision failed in a slot not moved yet": task(
        3, 2, S.FAILED, ready=False, message="exit code 1"
    ),
}


@pytest.mark.parametrize("bad", NOT_COUNTED.values(), ids=NOT_COUNTED.keys())
def test_tasks_that_are_not_this_rollouts_failures_are_never_counted(bad: Task) -> None:
    d = deployment(3, config={"healthy_deadline": 30.0}, step=1, target_slots=(1,))
    s = step(d, [old(1), old(2), old(3), bad], T0 + 100)
    assert s.deployment.failed_tasks == ()
    assert s.deployment.phase == Phase.PROGRESSING
    assert s.rollback_to is None


# --- progress deadline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "phase", "rollback_to"),
    [
        (A.ROLLBACK, Phase.ROLLING_BACK, 1),
        (A.PAUSE, Phase.PAUSED, None),
        (A.CONTINUE, Phase.FAILED, None),
    ],
)
def test_progress_deadline_applies_the_failure_action(
    action: FailureAction, phase: Phase, rollback_to: int | None
) -> None:
    config = {"progress_deadline": 100.0, "healthy_deadline": 1000.0, "failure_action": action}
    d = deployment(2, config=config, step=1, target_slots=(1,))
    tasks = [old(1), task(1, 2, S.STARTING), old(2)]

    before = step(d, tasks, T0 + 50)
    assert before.deployment.phase == Phase.PROGRESSING
    assert before.requeue_at == T0 + 100

    s = step(d, tasks, T0 + 100)
    assert s.deployment.phase == phase
    assert s.rollback_to == rollback_to
    assert s.deployment.decisions[-1].reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert "no progress for 100s" in s.deployment.message
    assert s.deployment.finished_at == (T0 + 100 if phase == Phase.FAILED else None)
    if phase == Phase.PAUSED:
        assert "progress deadline" in s.deployment.paused_reason


def test_progress_pushes_the_deadline_back() -> None:
    config = {"progress_deadline": 100.0, "healthy_deadline": 1000.0}
    d = deployment(3, config=config, step=1, target_slots=(1,))
    s = step(d, world(3, (1,), ready_at=T0 + 80), T0 + 90)
    assert s.deployment.step == 2
    assert s.deployment.progress_at == T0 + 90
    assert s.requeue_at == T0 + 190
    tasks = [*moved(1), old(2), task(2, 2, S.STARTING, created_at=T0 + 90), old(3)]
    later = step(s.deployment, tasks, T0 + 150)
    assert later.deployment.phase == Phase.PROGRESSING
    assert later.requeue_at == T0 + 190


def test_waiting_out_the_delay_is_not_a_lack_of_progress() -> None:
    config = {"delay": 120.0, "progress_deadline": 100.0, "healthy_deadline": 1000.0}
    d = deployment(2, config=config, step=1, target_slots=(1,))
    s = step(d, world(2, (1,)), T0 + 1)
    assert s.deployment.batch_ready_at == T0 + 1
    s = step(s.deployment, world(2, (1,)), T0 + 101)
    assert s.deployment.phase == Phase.PROGRESSING, s.deployment.message
    assert s.rollback_to is None
    s = step(s.deployment, world(2, (1,)), T0 + 121)
    assert s.deployment.step == 2


# --- rollback deployments never roll back ------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "trigger", "phase"),
    [
        (A.ROLLBACK, "task", Phase.PAUSED),
        (A.PAUSE, "task", Phase.PAUSED),
        (A.CONTINUE, "task", Phase.PROGRESSING),
        (A.ROLLBACK, "deadline", Phase.PAUSED),
        (A.PAUSE, "deadline", Phase.PAUSED),
        (A.CONTINUE, "deadline", Phase.FAILED),
    ],
)
def test_a_rollback_deployment_never_rolls_back(
    action: FailureAction, trigger: str, phase: Phase
) -> None:
    config = {"failure_action": action, "progress_deadline": 100.0, "healthy_deadline": 1000.0}
    d = deployment(
        2,
        kind=DeploymentKind.ROLLBACK,
        from_revision=3,
        config=config,
        step=1,
        target_slots=(1,),
    )
    if trigger == "task":
        tasks, now = [old(1), failed_new(1), old(2)], T0 + 5
    else:
        tasks, now = [old(1), task(1, 2, S.STARTING), old(2)], T0 + 100
    s = step(d, tasks, now)
    assert s.rollback_to is None
    assert s.deployment.phase == phase
    if phase == Phase.PROGRESSING:
        assert Reason.FAILURE_IGNORED in reasons(s.deployment)


# --- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason", "summary"),
    [
        (DeploymentKind.UPDATE, Reason.COMPLETE, "rollout complete: 3/3 tasks on revision 2"),
        (DeploymentKind.ROLLBACK, Reason.ROLLBACK_COMPLETE, "rollback complete: 3/3"),
    ],
)
def test_every_slot_done_succeeds(kind: DeploymentKind, reason: Reason, summary: str) -> None:
    d = deployment(3, kind=kind, config={"parallelism": 2}, step=2, target_slots=(1, 2, 3))
    s = step(d, world(3, (1, 2, 3)), T0 + 9)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert s.deployment.finished_at == T0 + 9
    assert s.deployment.ready_slots == 3
    assert s.deployment.decisions[-1].reason == reason
    assert s.deployment.decisions[-1].measured == {"seconds": 9.0, "batches": 2}
    assert s.deployment.message.startswith(summary)
    assert s.rollback_to is None
    assert s.requeue_at is None


@pytest.mark.parametrize("phase", [p for p in Phase if p != Phase.PROGRESSING])
def test_a_deployment_not_progressing_is_returned_unchanged(phase: Phase) -> None:
    d = deployment(2, config={"progress_deadline": 10.0}, step=1, target_slots=(1,), phase=phase)
    # A failure and an expired progress deadline would both trigger a progressing deployment.
    s = step(d, [old(1), failed_new(1), old(2)], T0 + 500)
    assert s == Step(d)


# --- scaling mid-rollout -----------------------------------------------------------------------


def service(replicas: int, revision: int = 2) -> Service:
    spec = ServiceSpec(name="web", command=("python", "app.py"), replicas=replicas)
    return Service(spec=spec, revision=revision, created_at=0, updated_at=0)


def test_scaling_up_mid_rollout_finishes_with_every_slot_on_the_new_revision() -> None:
    """Started with 2 replicas, scaled to 4 while batch 1 runs: the reconciler fills the new
    slots with revision 2, and the rollout finishes once all four are done."""
    d = deployment(2, step=1, target_slots=(1,))
    tasks = [*moved(1), old(2)]
    now = T0 + 2
    assert slot_revisions(d, tasks, 4) == {1: 2, 2: 1, 3: 2, 4: 2}
    plan = plan_service("web", service(4), tasks, now, slot_revisions(d, tasks, 4))
    assert {(n.slot, n.revision) for n in plan.create} == {(3, 2), (4, 2)}
    assert plan.shutdown == ()
    tasks += [task(3, 2, created_at=now, ready_at=now + 1)]
    tasks += [task(4, 2, created_at=now, ready_at=now + 1)]

    s = step(d, tasks, now + 1, replicas=4)
    assert s.deployment.step == 2
    assert s.deployment.target_slots == (1, 2)  # slots 3 and 4 already run revision 2
    assert s.deployment.ready_slots == 3

    tasks = [*moved(1), *moved(2, ready_at=now + 2), *tasks[3:]]
    s = step(s.deployment, tasks, now + 3, replicas=4)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert "4/4 tasks on revision 2" in s.deployment.message
    live = [t for t in tasks if t.state.active]
    assert sorted((t.slot, t.revision) for t in live) == [(1, 2), (2, 2), (3, 2), (4, 2)]


def test_scaling_up_into_empty_slots_not_yet_filled_moves_them_as_a_batch() -> None:
    d = deployment(2, step=2, target_slots=(1, 2))
    s = step(d, world(2, (1, 2)), T0 + 5, replicas=3)
    assert s.deployment.phase == Phase.PROGRESSING
    assert s.deployment.step == 3
    assert s.deployment.target_slots == (1, 2, 3)


def test_scaling_down_mid_rollout_ignores_the_removed_slots() -> None:
    d = deployment(4, config={"parallelism": 2}, step=2, target_slots=(1, 2, 3, 4))
    tasks = [*moved(1), *moved(2), old(3), task(3, 2, S.STARTING), old(4)]
    s = step(d, tasks, T0 + 5, replicas=2)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert "2/2 tasks" in s.deployment.message


# --- slots already on the target revision -------------------------------------------------------


def test_a_rollback_moves_only_the_slots_not_on_its_revision() -> None:
    """An update to revision 2 moved slots 1 and 2, then failed; the rollback to revision 1
    finds slots 3 and 4 still on revision 1 and leaves them alone."""
    d = deployment(4, kind=DeploymentKind.ROLLBACK, from_revision=2, to_revision=1)
    stuck = [
        task(1, 2, created_at=T0 - 50),
        task(2, 2, created_at=T0 - 40),
        old(3),
        old(4),
    ]
    s = step(d, stuck, T0)
    assert s.deployment.ready_slots == 2
    assert s.deployment.step == 1
    assert s.deployment.target_slots == (1,)

    def back(slot: int) -> list[Task]:
        gone = task(slot, 2, S.STOPPED, ready=False, desired=DesiredState.SHUTDOWN)
        return [gone, task(slot, 1, suffix="b", created_at=T0 + 1)]

    s = step(s.deployment, [*back(1), stuck[1], old(3), old(4)], T0 + 3)
    assert s.deployment.target_slots == (1, 2)
    s = step(s.deployment, [*back(1), *back(2), old(3), old(4)], T0 + 5)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert s.deployment.target_slots == (1, 2)
    assert s.deployment.decisions[-1].reason == Reason.ROLLBACK_COMPLETE


def test_every_slot_already_on_the_target_revision_succeeds_without_a_batch() -> None:
    d = deployment(3, config={"monitor": 5.0})
    s = step(d, [task(s, 2, created_at=0.0) for s in (1, 2, 3)], T0)
    assert s.deployment.phase == Phase.SUCCEEDED
    assert s.deployment.step == 0
    assert s.deployment.target_slots == ()


def test_order_does_not_change_the_plan_of_a_batch() -> None:
    for order in UpdateOrder:
        d = deployment(3, config={"order": order, "parallelism": 2})
        assert step(d, world(3), T0).deployment.target_slots == (1, 2)


def test_a_rollback_leaves_a_slot_it_counts_as_done_on_its_revision() -> None:
    """The update moved slot 1 (start-first): its revision-2 task crashed, its revision-1 task
    still runs. The rollback to revision 1 counts slot 1 as done and moves only slot 2; the
    reconciler must not bring revision 2 back into slot 1 meanwhile."""
    d = deployment(2, kind=DeploymentKind.ROLLBACK, from_revision=2, to_revision=1)
    hanging = task(2, 2, S.STARTING, created_at=T0)
    tasks = [old(1), failed_new(1), old(2), hanging]
    s = step(d, tasks, T0 + 1)
    assert s.deployment.target_slots == (2,)  # slot 1 is done: not moved
    stopping = hanging.changed(T0 + 1, desired_state=DesiredState.SHUTDOWN).transition(
        S.STOPPING, T0 + 1
    )
    tasks = [old(1), failed_new(1), old(2), stopping]
    revisions = slot_revisions(s.deployment, tasks, 2)
    plan = plan_service("web", service(2, revision=1), tasks, T0 + 3, revisions)
    assert [(n.slot, n.revision) for n in plan.create] == []
    assert revisions == {1: 1, 2: 1}


def test_batch_ready_names_the_slots_of_a_short_last_batch() -> None:
    """Issue 12, item 13: 3 replicas, parallelism 2 — batch 2 is slot 3 alone, and its
    BatchReady said "slots 2, 3"."""
    d = deployment(3, config={"parallelism": 2})
    s = step(d, world(3), T0)
    assert s.deployment.batch == (1, 2)
    s = step(s.deployment, world(3, done=(1, 2)), T0 + 2)
    assert s.deployment.batch == (3,)
    s = step(s.deployment, world(3, done=(1, 2, 3)), T0 + 4)
    ready = [x.message for x in s.deployment.decisions if x.reason == Reason.BATCH_READY]
    assert ready == ["batch 1 ready: slots 1, 2", "batch 2 ready: slots 3"]


def test_a_one_slot_batch_is_shown_as_one_slot() -> None:
    from warren.domain.specs import ServiceSpec
    from warren.planning.strategies.rolling import preview

    one = preview(ServiceSpec(name="web", command=["x"]), 1, 2)
    assert one.steps[0].description == "batch 1/1: slot 1 to revision 2"
    three = preview(ServiceSpec(name="web", command=["x"], replicas=3), 1, 2)
    assert [s.description for s in three.steps] == [
        "batch 1/3: slot 1 to revision 2",
        "batch 2/3: slot 2 to revision 2",
        "batch 3/3: slot 3 to revision 2",
    ]
