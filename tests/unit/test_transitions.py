"""The transitions of a deployment, by table: every phase x event, allowed or refused, with the
phase it leads to — the table docs/deployments.md prints ("Phases and events") — and the
checks that keep a planner from writing anything but progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from warren.domain import transitions
from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason, RolloutConfig
from warren.domain.errors import InvalidTransitionError
from warren.domain.transitions import TRANSITIONS, Event

T0 = 1000.0


def deployment(phase: Phase = Phase.PROGRESSING, **fields: Any) -> Deployment:
    base: dict[str, Any] = {
        "id": "web-2", "service": "web", "from_revision": 1, "to_revision": 2, "replicas": 3,
        "config": RolloutConfig(), "started_at": T0, "updated_at": T0, "progress_at": T0,
    }  # fmt: skip
    return Deployment(**{**base, **fields}, phase=phase)


ROLLBACK = deployment(id="web-3", kind=DeploymentKind.ROLLBACK, from_revision=2, to_revision=1,
                      rollback_of="web-2", cause=Reason.AUTOMATIC_ROLLBACK)  # fmt: skip

EVENTS: dict[Event, Callable[[Deployment], Deployment]] = {
    Event.SUPERSEDE: lambda d: transitions.supersede(d, T0 + 1, ROLLBACK),
    Event.PAUSE: lambda d: transitions.pause(d, T0 + 1, Reason.MANUAL_PAUSE, "paused"),
    Event.RESUME: lambda d: transitions.resume(d, T0 + 1),
    Event.AWAIT_PROMOTION: lambda d: transitions.await_promotion(d, T0 + 1, "waiting"),
    Event.PROMOTE: lambda d: transitions.promote(d, T0 + 1, False, "promote"),
    Event.FAIL: lambda d: transitions.fail(d, T0 + 1, Reason.TASK_FAILED, "failed"),
    Event.FINISH: lambda d: transitions.finish(d, T0 + 1, Reason.COMPLETE, "done"),
    Event.ROLL_BACK: lambda d: transitions.roll_back(d, T0 + 1, Reason.TASK_FAILED, "bad", "x"),
    Event.LINK_ROLLBACK: lambda d: transitions.link_rollback(d, T0 + 1, ROLLBACK),
    Event.END_ROLLBACK: lambda d: transitions.end_rollback(
        d, T0 + 1, ROLLBACK.checked(phase=Phase.SUCCEEDED)
    ),
}

# The table, as docs/deployments.md shows it: phase → event → resulting phase ("-": refused).
P, A, S = Phase.PROGRESSING, Phase.AWAITING_PROMOTION, Phase.PAUSED
TABLE: dict[Phase, dict[Event, Phase | None]] = {
    Phase.PROGRESSING: {
        Event.SUPERSEDE: Phase.SUPERSEDED, Event.PAUSE: S, Event.RESUME: None,
        Event.AWAIT_PROMOTION: A, Event.PROMOTE: P, Event.FAIL: Phase.FAILED,
        Event.FINISH: Phase.SUCCEEDED, Event.ROLL_BACK: Phase.ROLLING_BACK,
        Event.LINK_ROLLBACK: Phase.ROLLING_BACK, Event.END_ROLLBACK: None,
    },
    Phase.PAUSED: {
        Event.SUPERSEDE: Phase.SUPERSEDED, Event.PAUSE: None, Event.RESUME: P,
        Event.AWAIT_PROMOTION: None, Event.PROMOTE: P, Event.FAIL: Phase.FAILED,
        Event.FINISH: None, Event.ROLL_BACK: Phase.ROLLING_BACK,
        Event.LINK_ROLLBACK: Phase.ROLLING_BACK, Event.END_ROLLBACK: None,
    },
    Phase.AWAITING_PROMOTION: {
        Event.SUPERSEDE: Phase.SUPERSEDED, Event.PAUSE: S, Event.RESUME: None,
        Event.AWAIT_PROMOTION: None, Event.PROMOTE: P, Event.FAIL: Phase.FAILED,
        Event.FINISH: None, Event.ROLL_BACK: Phase.ROLLING_BACK,
        Event.LINK_ROLLBACK: Phase.ROLLING_BACK, Event.END_ROLLBACK: None,
    },
    Phase.ROLLING_BACK: {
        Event.SUPERSEDE: Phase.SUPERSEDED, Event.PAUSE: None, Event.RESUME: None,
        Event.AWAIT_PROMOTION: None, Event.PROMOTE: None, Event.FAIL: Phase.FAILED,
        Event.FINISH: None,
        Event.ROLL_BACK: None, Event.LINK_ROLLBACK: Phase.ROLLING_BACK,
        Event.END_ROLLBACK: Phase.ROLLED_BACK,
    },
    **{
        final: dict.fromkeys(Event)
        for final in (Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK, Phase.SUPERSEDED)
    },
}  # fmt: skip


def test_the_table_covers_every_phase_and_event() -> None:
    assert set(TABLE) == set(Phase)
    assert all(set(row) == set(Event) for row in TABLE.values())


@pytest.mark.parametrize(
    ("phase", "event"), [(p, e) for p in Phase for e in Event], ids=lambda x: str(x)
)
def test_phase_x_event(phase: Phase, event: Event) -> None:
    expected = TABLE[phase][event]
    d = deployment(phase, finished_at=T0 if phase.terminal else None)
    assert (phase in TRANSITIONS[event]) == (expected is not None)
    if expected is None:
        with pytest.raises(InvalidTransitionError, match=f"is {phase}: cannot {event}"):
            EVENTS[event](d)
        return
    moved = EVENTS[event](d)
    assert moved.phase == expected
    # Every transition says why in the log, and a final phase has its finish time.
    assert len(moved.decisions) == 1 and moved.decision_count == 1
    assert (moved.finished_at is not None) == expected.terminal
    progressing = next(c for c in moved.conditions if c.type == "Progressing")
    assert progressing.status == (expected in (Phase.PROGRESSING, Phase.ROLLING_BACK))
    paused = next(c for c in moved.conditions if c.type == "Paused")
    assert paused.status == (expected in (Phase.PAUSED, Phase.AWAITING_PROMOTION))


@pytest.mark.parametrize(
    ("rollback", "ends"),
    [
        (Phase.SUCCEEDED, Phase.ROLLED_BACK),
        (Phase.SUPERSEDED, Phase.SUPERSEDED),
        (Phase.FAILED, Phase.FAILED),
    ],
)
def test_a_deployment_rolling_back_ends_as_its_rollback(rollback: Phase, ends: Phase) -> None:
    d = transitions.link_rollback(deployment(), T0, ROLLBACK)
    assert (d.phase, d.rolled_back_by) == (Phase.ROLLING_BACK, "web-3")
    done = transitions.end_rollback(d, T0 + 5, ROLLBACK.checked(phase=rollback, finished_at=T0))
    assert done.phase == ends and done.finished_at == T0 + 5


def test_a_failed_release_reverts_in_the_same_record() -> None:
    d = transitions.fail_and_revert(deployment(), T0, Reason.ANALYSIS_FAILED, "bad", 1)
    assert d.phase == Phase.FAILED
    assert d.reverted_to == 1 and d.weights == ((1, 100), (2, 0))


# --- a planner changes progress only ------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"phase": Phase.SUCCEEDED}, "not a progress field of a deployment: phase"),
        ({"finished_at": T0}, "not a progress field of a deployment: finished_at"),
        ({"rolled_back_by": "web-9"}, "not a progress field"),
        ({"stpe": 3}, "not a progress field of a deployment: stpe"),
    ],
)
def test_decide_refuses_anything_but_progress(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(TypeError, match=words):
        deployment().decide(T0, Reason.BATCH_STARTED, "x", **changes)


def test_decide_checks_the_values_it_changes() -> None:
    with pytest.raises(ValueError, match="step"):
        deployment().decide(T0, Reason.BATCH_STARTED, "x", step="two")
    with pytest.raises(ValueError, match="phase"):
        deployment().checked(phase="not-a-phase")
    with pytest.raises(TypeError, match="not a field"):
        deployment().checked(phaze=Phase.FAILED)


def test_the_decision_count_tells_new_decisions_past_the_log_cap() -> None:
    d = deployment()
    for i in range(250):
        d = d.decide(T0 + i, Reason.BATCH_READY, f"batch {i}")
    assert len(d.decisions) == 200 and d.decision_count == 250
