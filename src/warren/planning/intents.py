"""An operator's request applied to a service's newest deployment. Pure.

``answer(view, request)`` → the deployment's next record (unchanged when refused), the answer,
and one line that says why. The deployment controller stores both in one write; the API that
stored the request shows the line. Refusals change nothing:

- pause: only a progressing rollout (a paused one: already done);
- resume: only a paused one (a progressing one: already done);
- promote: a canary or blue/green update that is active — and whose new revision's tasks are
  all ready (``0/2 canary tasks healthy`` otherwise), unless forced;
- abort: an active rollout. An update goes back — to the revision it started from, unless that
  one never succeeded (a rollback, which the controller starts next); anything else just stops
  (failed).
"""

from __future__ import annotations

from ..domain import transitions
from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..domain.requests import Answer, Intent, OperatorRequest
from .rollouts import RolloutView
from .strategies import kind_of

__all__ = ["answer"]


def answer(view: RolloutView, request: OperatorRequest) -> tuple[Deployment, Answer, str]:
    d = view.deployment
    if request.deployment != d.id:
        return (
            d,
            Answer.REFUSED,
            f"deployment {request.deployment} is no longer the newest ({d.id} is)",
        )
    if request.intent == Intent.PAUSE:
        return _pause(view, d)
    if request.intent == Intent.RESUME:
        return _resume(view, d)
    if request.intent == Intent.PROMOTE:
        return _promote(view, d, request)
    return _abort(view, d)


def _pause(view: RolloutView, d: Deployment) -> tuple[Deployment, Answer, str]:
    if d.phase == Phase.PAUSED:
        return d, Answer.APPLIED, f"deployment {d.id} is paused already"
    if d.phase != Phase.PROGRESSING:
        return d, Answer.REFUSED, f"deployment {d.id} is {d.phase}, not progressing"
    message = "paused by the operator"
    return transitions.pause(d, view.now, Reason.MANUAL_PAUSE, message), Answer.APPLIED, message


def _resume(view: RolloutView, d: Deployment) -> tuple[Deployment, Answer, str]:
    if d.phase == Phase.PROGRESSING:
        return d, Answer.APPLIED, f"deployment {d.id} is progressing already"
    if d.phase != Phase.PAUSED:
        return d, Answer.REFUSED, f"deployment {d.id} is {d.phase}, not paused"
    return transitions.resume(d, view.now), Answer.APPLIED, "resumed by the operator"


def _promote(
    view: RolloutView, d: Deployment, request: OperatorRequest
) -> tuple[Deployment, Answer, str]:
    if not d.active:
        return d, Answer.REFUSED, f"deployment {d.id} is {d.phase}: nothing to promote"
    kind = kind_of(d)
    if d.kind != DeploymentKind.UPDATE or not kind.promotable:
        what = "a rollback" if d.kind != DeploymentKind.UPDATE else f"a {kind.name} update"
        return d, Answer.REFUSED, f"deployment {d.id} is {what}: nothing to promote"
    blocker = kind.promotion_blocker(view)
    if blocker is not None and not request.force:
        return d, Answer.REFUSED, f"promote refused: {blocker} (--force to promote anyway)"
    what = "full" if request.full else "step"
    message = f"promote ({what}) asked by the operator"
    if blocker is not None:
        message += f", forced with {blocker}"
    return transitions.promote(d, view.now, request.full, message), Answer.APPLIED, message


def _abort(view: RolloutView, d: Deployment) -> tuple[Deployment, Answer, str]:
    if not d.active:
        return d, Answer.REFUSED, f"deployment {d.id} is {d.phase}: no active rollout to abort"
    if d.kind == DeploymentKind.UPDATE and d.from_revision is not None:
        # The controller picks the revision: the one it started from, unless that one never
        # succeeded (then the last good one); the rollback's log says which.
        message = "aborted by the operator: rolling back"
        aborted = transitions.roll_back(d, view.now, Reason.ABORTED, message, "roll back")
        return aborted, Answer.APPLIED, message
    message = "aborted by the operator"
    return transitions.fail(d, view.now, Reason.ABORTED, message, "stop"), Answer.APPLIED, message
