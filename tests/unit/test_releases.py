"""Where an update starts and where a rollback goes (planning/releases.py), by table; and the
revisions each slot keeps while a deployment drives the service."""

from __future__ import annotations

from typing import Any

import pytest

from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason, RolloutConfig
from warren.domain.tasks import Task, TaskState
from warren.planning.releases import (
    good_revisions,
    last_good_revision,
    previous_revision,
    starts_from,
)
from warren.planning.strategies import slot_revisions

T0 = 1000.0
S, F, RB, P, SUP = (
    Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SUPERSEDED,
)  # fmt: skip


def d(n: int, start: int, to: int, phase: Phase, kind: str = "update", **kw: Any) -> Deployment:
    return Deployment(
        id=f"web-{n}", service="web", kind=DeploymentKind(kind), from_revision=start,
        to_revision=to, replicas=3, config=RolloutConfig(), started_at=T0 + n,
        updated_at=T0 + n, progress_at=T0 + n, phase=phase,
        finished_at=T0 + n if phase.terminal else None, **kw,
    )  # fmt: skip


HISTORIES: dict[str, tuple[list[Deployment], int, int | None]] = {
    # name: (history, current revision, where `service rollback` goes)
    "an update that succeeded: back to where it started": ([d(1, 1, 2, S)], 2, 1),
    "two rollbacks flip between two good revisions": (
        [d(1, 1, 2, S), d(2, 2, 3, S), d(3, 3, 2, S, "rollback")], 2, 3,
    ),
    "after an automatic rollback: no earlier good revision": (
        [d(1, 1, 2, RB), d(2, 2, 1, S, "rollback", cause=Reason.AUTOMATIC_ROLLBACK)], 1, None,
    ),
    "after an automatic rollback with a good one before": (
        [d(1, 1, 2, S), d(2, 2, 3, RB), d(3, 3, 2, S, "rollback")], 2, 1,
    ),
    "nothing happened yet": ([], 1, None),
    "history that starts with a rollback from a failed revision": (
        [d(5, 5, 4, S, "rollback"), d(6, 4, 6, S)], 6, 4,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("history", "current", "goes"), HISTORIES.values(), ids=HISTORIES.keys())
def test_where_a_manual_rollback_goes(
    history: list[Deployment], current: int, goes: int | None
) -> None:
    assert previous_revision(history, current) == goes


def test_a_trimmed_revision_is_no_target() -> None:
    history = [d(1, 1, 2, S)]
    assert previous_revision(history, 2, kept={2}) is None
    assert last_good_revision([d(1, 1, 2, F)], d(1, 1, 2, F), kept={2}) is None


def test_the_oldest_kept_rollback_does_not_make_its_failed_revision_good() -> None:
    assert good_revisions([d(5, 5, 4, S, "rollback")]) == {4}


def test_an_automatic_rollback_goes_to_the_last_revision_that_succeeded() -> None:
    """Issue 12, item 15: 1 succeeded, 2's update paused (then superseded), 3 fails → 1."""
    history = [d(1, 1, 2, SUP), d(2, 2, 3, P)]
    assert last_good_revision(history, history[-1]) == 1
    good = [d(1, 1, 2, S), d(2, 2, 3, P)]
    assert last_good_revision(good, good[-1]) == 2


@pytest.mark.parametrize(
    ("strategy", "fields", "start"),
    [
        ("rolling", {}, 2),
        ("canary", {}, 1),
        ("canary", {"promoting": True}, 2),
        ("blue-green", {}, 1),
        ("blue-green", {"switched_at": T0}, 2),
    ],
)
def test_a_new_update_starts_from_what_the_slots_serve(
    strategy: str, fields: dict[str, Any], start: int
) -> None:
    active = d(1, 1, 2, P, strategy=strategy, **fields)
    assert starts_from(active, 2) == start
    assert starts_from(d(1, 1, 2, S, strategy=strategy), 2) == 2


# --- the revisions slots keep ---------------------------------------------------------------


def task(
    slot: int, revision: int, state: TaskState = TaskState.RUNNING, ready: bool = True
) -> Task:
    return Task(
        id=f"web.{slot}.r{revision}", service="web", revision=revision, slot=slot, node="n1",
        state=state, created_at=T0 + revision, updated_at=T0 + revision, ready=ready,
    )  # fmt: skip


def test_a_rolling_update_over_a_dropped_canary_keeps_the_stable_revision() -> None:
    """Slot 1 ran a stable task (crashed, being restarted) beside the canary of revision 2 that
    the update to 3 dropped: it keeps revision 1, not the canary."""
    update = d(2, 1, 3, P, target_slots=(3,))
    tasks = [task(1, 1, TaskState.FAILED, ready=False), task(1, 2), task(2, 1), task(3, 1)]
    assert slot_revisions(update, tasks, 3) == {1: 1, 2: 1, 3: 3}


def test_a_rollback_keeps_the_revision_it_goes_back_to_where_it_runs() -> None:
    rollback = d(3, 2, 1, P, "rollback", target_slots=(1,))
    tasks = [task(1, 1), task(1, 2), task(2, 1, ready=False), task(2, 2), task(3, 2)]
    assert slot_revisions(rollback, tasks, 3) == {1: 1, 2: 1, 3: 2}
