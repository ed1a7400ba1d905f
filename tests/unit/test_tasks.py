"""Task state machine: every allowed and forbidden transition, and what a transition resets."""

from __future__ import annotations

import itertools

import pytest

from warren.domain.errors import InvalidTransitionError
from warren.domain.tasks import DesiredState, Task, TaskState, task_id

S = TaskState

# Read off the diagram in warren.domain.tasks, written out independently of _ALLOWED.
ALLOWED = {
    (S.PENDING, S.STARTING),
    (S.PENDING, S.STOPPED),  # never started
    (S.PENDING, S.FAILED),  # never started
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.COMPLETE),
    (S.RUNNING, S.STOPPING),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.COMPLETE),
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.FAILED),
    (S.STOPPING, S.COMPLETE),
}
# Re-reporting the current state is not a state change and is always accepted.
SAME = {(s, s) for s in S}
ALL_PAIRS = list(itertools.product(S, S))
FORBIDDEN = [p for p in ALL_PAIRS if p not in ALLOWED | SAME]


def make_task(state: TaskState = S.PENDING, **fields: object) -> Task:
    return Task.model_validate(
        {
            "id": task_id("web", 1, "abc123"),
            "service": "web",
            "revision": 1,
            "slot": 1,
            "created_at": 10.0,
            "updated_at": 10.0,
            "state": state,
            **fields,
        }
    )


def test_table_covers_every_pair() -> None:
    assert len(ALL_PAIRS) == 49
    assert len(ALLOWED) + len(SAME) + len(FORBIDDEN) == 49
    assert len(FORBIDDEN) == 29


@pytest.mark.parametrize(("src", "dst"), sorted(ALLOWED | SAME))
def test_allowed_transition(src: TaskState, dst: TaskState) -> None:
    before = make_task(src)
    after = before.transition(dst, 20.0, message="why")
    if src == dst and src.terminal:
        assert after is before  # a repeated final report changes nothing
        return
    assert after.state == dst
    assert after.updated_at == 20.0
    assert after.message == "why"
    assert before.state == src  # frozen: a new task is returned


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN)
def test_forbidden_transition(src: TaskState, dst: TaskState) -> None:
    task = make_task(src)
    with pytest.raises(InvalidTransitionError) as info:
        task.transition(dst, 20.0)
    message = str(info.value)
    assert task.id in message
    assert f"from {src} to {dst}" in message


@pytest.mark.parametrize(
    ("src", "dst"), sorted(p for p in ALLOWED if p[1] in (S.STOPPED, S.FAILED, S.COMPLETE))
)
def test_terminal_transition_sets_finished_at_and_clears_ready(
    src: TaskState, dst: TaskState
) -> None:
    task = make_task(src, ready=src == S.RUNNING, ready_at=15.0 if src == S.RUNNING else None)
    done = task.transition(dst, 20.0, exit_code=1)
    assert done.finished_at == 20.0
    assert done.ready is False
    assert done.exit_code == 1
    assert done.ready_at == task.ready_at  # "was ready once" survives: it resets the back-off
    assert not done.state.active


def test_terminal_transition_keeps_an_explicit_finished_at() -> None:
    done = make_task(S.RUNNING).transition(S.FAILED, 20.0, finished_at=18.5)
    assert done.finished_at == 18.5
    assert done.updated_at == 20.0


@pytest.mark.parametrize("src", [S.STARTING, S.RUNNING])
def test_stopping_clears_ready_but_is_not_finished(src: TaskState) -> None:
    task = make_task(src, ready=True, ready_at=15.0)
    stopping = task.transition(S.STOPPING, 20.0)
    assert stopping.ready is False
    assert stopping.finished_at is None
    assert stopping.state.active


def test_non_terminal_transition_keeps_ready_and_fields() -> None:
    running = make_task(S.STARTING).transition(
        S.RUNNING, 20.0, ready=True, ready_at=20.0, endpoint="127.0.0.1:9000"
    )
    assert running.ready is True
    assert running.ready_at == 20.0
    assert running.endpoint == "127.0.0.1:9000"
    assert running.finished_at is None


def test_changed_updates_fields_without_a_state_change() -> None:
    task = make_task(S.RUNNING)
    changed = task.changed(30.0, desired_state=DesiredState.SHUTDOWN, message="scaled down")
    assert changed.state == S.RUNNING
    assert changed.updated_at == 30.0
    assert not changed.wants_running
    assert task.wants_running


def test_active_and_terminal_partition_the_states() -> None:
    assert {s for s in S if s.terminal} == {S.STOPPED, S.FAILED, S.COMPLETE}
    assert all(s.active != s.terminal for s in S)


def test_task_id_format() -> None:
    assert task_id("web", 3, "k2x9q1") == "web.3.k2x9q1"
