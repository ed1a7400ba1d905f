"""The transitions of a deployment: one pure function per event, each allowed from the phases of
its row in TRANSITIONS and nowhere else. Pure.

A planner changes a rollout's *progress* (``Deployment.decide``: batches, weights, steps …);
its *phase* changes only here. Each function appends the decision that explains the move,
keeps the conditions in step with the phase and sets ``finished_at`` on a final phase. An event
a phase does not allow raises InvalidTransitionError — a bug, or a request that came too late
(the operator's pause of a rollout that has just ended).

``docs/deployments.md`` ("Phases and events") prints the table below; its tests cite it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from .deployments import Condition, Deployment, Phase, Reason, check_progress
from .errors import InvalidTransitionError
from .notifications import DeploymentEvent

__all__ = [
    "TRANSITIONS",
    "Event",
    "await_promotion",
    "end_rollback",
    "fail",
    "fail_and_revert",
    "fail_unstarted",
    "finish",
    "link_rollback",
    "milestone_of",
    "pause",
    "promote",
    "resume",
    "roll_back",
    "start",
    "supersede",
]


class Event(StrEnum):
    SUPERSEDE = "supersede"
    """A newer deployment of the service took over."""
    PAUSE = "pause"
    """The operator's pause, a failure with ``failureAction: pause``, an inconclusive window."""
    RESUME = "resume"
    AWAIT_PROMOTION = "await-promotion"
    """A ``pause: {}`` step, or a blue/green release without ``autoPromote``."""
    PROMOTE = "promote"
    """The operator's ``deploy promote``: the planner skips the pause (or every step)."""
    FAIL = "fail"
    FINISH = "finish"
    ROLL_BACK = "roll-back"
    """Decided (failure action rollback, abort): the rollback deployment is not started yet."""
    LINK_ROLLBACK = "link-rollback"
    """A rollback deployment undoing this one exists: the two are linked."""
    END_ROLLBACK = "end-rollback"
    """The rollback undoing this one ended: so does this one, the same way."""


_LIVE = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_PROMOTION})

TRANSITIONS: Mapping[Event, Mapping[Phase, Phase]] = {
    Event.SUPERSEDE: {p: Phase.SUPERSEDED for p in (*_LIVE, Phase.ROLLING_BACK)},
    Event.PAUSE: {
        Phase.PROGRESSING: Phase.PAUSED,
        Phase.AWAITING_PROMOTION: Phase.PAUSED,
    },
    Event.RESUME: {Phase.PAUSED: Phase.PROGRESSING},
    Event.AWAIT_PROMOTION: {Phase.PROGRESSING: Phase.AWAITING_PROMOTION},
    Event.PROMOTE: {p: Phase.PROGRESSING for p in _LIVE},
    # From rolling_back: a rollback decided that cannot start (nothing left to go back to).
    Event.FAIL: {p: Phase.FAILED for p in (*_LIVE, Phase.ROLLING_BACK)},
    Event.FINISH: {Phase.PROGRESSING: Phase.SUCCEEDED},
    Event.ROLL_BACK: {p: Phase.ROLLING_BACK for p in _LIVE},
    Event.LINK_ROLLBACK: {p: Phase.ROLLING_BACK for p in (*_LIVE, Phase.ROLLING_BACK)},
    # The phase it ends in is the rollback's: see end_rollback.
    Event.END_ROLLBACK: {Phase.ROLLING_BACK: Phase.ROLLED_BACK},
}
"""Phase x event → phase. An event absent from a phase's row is refused."""


def _move(
    d: Deployment,
    event: Event,
    now: float,
    reason: Reason | str,
    message: str,
    action: str = "",
    measured: dict[str, Any] | None = None,
    to: Phase | None = None,
    **changes: Any,
) -> Deployment:
    allowed = TRANSITIONS[event]
    if d.phase not in allowed:
        raise InvalidTransitionError(f"deployment {d.id} is {d.phase}: cannot {event}")
    phase = to or allowed[d.phase]
    if phase.terminal:
        changes.setdefault("finished_at", now)
    moved = d.logged(now, reason, message, action, measured, phase=phase, **changes)
    milestone = milestone_of(event, str(reason), d.phase, phase)
    if milestone is not None:
        moved = moved.with_milestone(milestone)
    return _conditions(moved, now, str(reason), message)


_MILESTONES: Mapping[Event, DeploymentEvent] = {
    Event.SUPERSEDE: DeploymentEvent.SUPERSEDED,
    Event.PAUSE: DeploymentEvent.PAUSED,
    Event.RESUME: DeploymentEvent.RESUMED,
    Event.AWAIT_PROMOTION: DeploymentEvent.AWAITING_PROMOTION,
    Event.PROMOTE: DeploymentEvent.PROMOTED,
    Event.FAIL: DeploymentEvent.FAILED,
    Event.FINISH: DeploymentEvent.SUCCEEDED,
    Event.ROLL_BACK: DeploymentEvent.ROLLING_BACK,
    Event.LINK_ROLLBACK: DeploymentEvent.ROLLING_BACK,
}
_ENDED_AS = {
    Phase.ROLLED_BACK: DeploymentEvent.ROLLED_BACK,
    Phase.SUPERSEDED: DeploymentEvent.SUPERSEDED,
    Phase.FAILED: DeploymentEvent.FAILED,
}


def milestone_of(event: Event, reason: str, before: Phase, after: Phase) -> DeploymentEvent | None:
    """The milestone a transition is (None: it tells nothing new). The operator's abort is
    ``aborted`` whatever follows it; linking the rollback of a release that is rolling back
    already changes nothing anyone waits for."""
    if event == Event.END_ROLLBACK:
        return _ENDED_AS[after]
    if event == Event.LINK_ROLLBACK and before == Phase.ROLLING_BACK:
        return None
    if reason == Reason.ABORTED and event in (Event.FAIL, Event.ROLL_BACK):
        return DeploymentEvent.ABORTED
    return _MILESTONES[event]


def _conditions(d: Deployment, now: float, reason: str, message: str) -> Deployment:
    """``Progressing``: the deployment still moves tasks or traffic (progressing, rolling
    back); ``Paused``: it waits for a person (paused, awaiting promotion)."""
    moving = d.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK)
    waiting = d.phase in (Phase.PAUSED, Phase.AWAITING_PROMOTION)
    for kind, status in (("Progressing", moving), ("Paused", waiting)):
        old = next((c for c in d.conditions if c.type == kind), None)
        if old is None or old.status != status or status:
            d = d.with_condition(Condition(type=kind, status=status, reason=reason,
                                           message=message, time=now))  # fmt: skip
    return d


def start(d: Deployment, now: float, reason: Reason | str, message: str) -> Deployment:
    """A new deployment's first decision: why it exists."""
    if d.decisions or d.phase != Phase.PROGRESSING:
        raise InvalidTransitionError(f"deployment {d.id} has started already")
    started = d.logged(now, reason, message).with_milestone(DeploymentEvent.STARTED)
    return _conditions(started, now, str(reason), message)


def supersede(d: Deployment, now: float, by: Deployment) -> Deployment:
    what = f"{by.kind} to revision {by.to_revision}"
    return _move(d, Event.SUPERSEDE, now, Reason.SUPERSEDED, f"superseded by {by.id} ({what})")


def pause(
    d: Deployment,
    now: float,
    reason: Reason | str,
    message: str,
    action: str = "pause",
    measured: dict[str, Any] | None = None,
    **progress: Any,
) -> Deployment:
    """Nothing moves until ``resume`` (or a newer update, or a rollback)."""
    return _move(
        d, Event.PAUSE, now, reason, message, action, measured, paused_reason=message,
        **_progress(progress),
    )  # fmt: skip


def resume(d: Deployment, now: float, message: str = "resumed by the operator") -> Deployment:
    """Progress counts again from now: a paused rollout is not late for its deadline; an
    analysis judges a fresh window, and a canary's timed pause starts over (a canary paused by a
    failure is judged again before its next weight)."""
    return _move(
        d, Event.RESUME, now, Reason.RESUMED, message, "resume", paused_reason="",
        progress_at=now, analysis_at=now, analysis_failures=0, pause_until=None,
    )  # fmt: skip


def await_promotion(d: Deployment, now: float, message: str) -> Deployment:
    return _move(d, Event.AWAIT_PROMOTION, now, Reason.AWAITING_PROMOTION, message)


def promote(d: Deployment, now: float, full: bool, message: str) -> Deployment:
    """The planner applies it on its next look: ``full`` skips every remaining step, else
    the current pause."""
    return _move(
        d, Event.PROMOTE, now, Reason.PROMOTED, message, "promote",
        promote="full" if full else "step", paused_reason="", analysis_at=now,
    )  # fmt: skip


def fail(
    d: Deployment,
    now: float,
    reason: Reason | str,
    message: str,
    action: str = "fail",
    measured: dict[str, Any] | None = None,
    **progress: Any,
) -> Deployment:
    return _move(d, Event.FAIL, now, reason, message, action, measured, **_progress(progress))


def fail_and_revert(
    d: Deployment, now: float, reason: Reason | str, message: str, stable: int
) -> Deployment:
    """A canary or green that failed before promotion: weight 0 for it at once, and the
    stable revision — whose tasks never stopped serving — is the service's revision again,
    written with this record (``reverted_to``)."""
    return _move(
        d, Event.FAIL, now, reason, message,
        f"weight 0 for revision {d.to_revision}; revision {stable} stays",
        weights=((stable, 100), (d.to_revision, 0)), promoting=False, reverted_to=stable,
    )  # fmt: skip


def fail_unstarted(d: Deployment, now: float, reason: Reason | str, message: str) -> Deployment:
    """A release that failed before any task of its new revision started (its pre-deploy
    job): nothing was replaced, and the revision it started from is the service's revision
    again, written with this record (``reverted_to``) — a first release just fails."""
    stable = d.from_revision
    if stable is None:
        return fail(d, now, reason, message)
    weights = ((stable, 100), (d.to_revision, 0)) if d.weights else ()
    return _move(
        d, Event.FAIL, now, reason, message,
        f"nothing replaced; revision {stable} stays", weights=weights, reverted_to=stable,
    )  # fmt: skip


def finish(
    d: Deployment,
    now: float,
    reason: Reason | str,
    message: str,
    measured: dict[str, Any] | None = None,
    **progress: Any,
) -> Deployment:
    """Succeeded: traffic follows the ready tasks again (no weights)."""
    return _move(
        d, Event.FINISH, now, reason, message, "", measured, weights=(), **_progress(progress)
    )


def roll_back(
    d: Deployment,
    now: float,
    reason: Reason | str,
    message: str,
    action: str,
    measured: dict[str, Any] | None = None,
) -> Deployment:
    """Decided: the controller starts the rollback deployment next (and again after a crash,
    while this one is rolling_back with no rollback linked)."""
    return _move(d, Event.ROLL_BACK, now, reason, message, action, measured)


def link_rollback(d: Deployment, now: float, rollback: Deployment) -> Deployment:
    """``rollback`` undoes ``d``: ``d`` waits for it, and ends when it does."""
    if d.phase == Phase.ROLLING_BACK and d.rolled_back_by is None:
        # Decided by its planner: the reason is in the log already.
        moved = _move(
            d, Event.LINK_ROLLBACK, now, rollback.cause or Reason.AUTOMATIC_ROLLBACK,
            f"rolling back to revision {rollback.to_revision} ({rollback.id})",
            rolled_back_by=rollback.id,
        )  # fmt: skip
        return moved.checked(message=d.message)
    return _move(
        d, Event.LINK_ROLLBACK, now, rollback.cause or Reason.MANUAL_ROLLBACK,
        f"rolling back: rollback to revision {rollback.to_revision} ({rollback.id})",
        f"rollback to revision {rollback.to_revision}", rolled_back_by=rollback.id,
    )  # fmt: skip


def end_rollback(d: Deployment, now: float, rollback: Deployment) -> Deployment:
    """``d`` ends as its rollback did: rolled back when it succeeded; superseded when a newer
    update took over from it; failed otherwise."""
    if rollback.phase == Phase.SUCCEEDED:
        return _move(
            d, Event.END_ROLLBACK, now, Reason.ROLLBACK_COMPLETE,
            f"rolled back to revision {rollback.to_revision} by {rollback.id}",
        )  # fmt: skip
    if rollback.phase == Phase.SUPERSEDED:
        return _move(
            d, Event.END_ROLLBACK, now, Reason.SUPERSEDED,
            f"its rollback {rollback.id} was superseded", to=Phase.SUPERSEDED,
        )  # fmt: skip
    return _move(
        d, Event.END_ROLLBACK, now, Reason.ROLLBACK_FAILED,
        f"rollback {rollback.id} {rollback.phase}", to=Phase.FAILED,
    )  # fmt: skip


def _progress(changes: dict[str, Any]) -> dict[str, Any]:
    """Progress that a transition carries along (the failure that caused it, counted)."""
    check_progress(changes)
    return changes
