"""A rollback deployment. Pure. When every slot still has a ready task of the revision to go back
to (blue kept warm after a blue/green switch, a canary's stable tasks), the rollback is an
instant switch: 100% of the traffic to it for the next request, the other tasks drained and
stopped — no task started, no step, no analysis. Otherwise it is a rolling update with the
rollback config. A rollback never re-runs canary steps or analysis."""

from __future__ import annotations

from ...domain.deployments import Phase, Reason
from ..rollouts import RolloutView, Step, by_slot
from .rolling import next_step as rolling_step
from .traffic import ready_in

__all__ = ["next_step"]


def next_step(view: RolloutView) -> Step:
    d, now = view.deployment, view.now
    if d.phase == Phase.PROGRESSING and not d.target_slots:
        all_slots = tuple(range(1, view.replicas + 1))
        if all_slots and ready_in(by_slot(view.live_tasks), d.to_revision, all_slots):
            ready_at = None
            if d.cause == Reason.FAST_ROLLBACK:
                # The operator applied the stable spec again mid-release: the release is
                # dropped, not rolled out again — no step, no batch.
                reason, step, ready_at = Reason.FAST_ROLLBACK, d.step, now
                message = (
                    f"back to the stable spec: revision {d.to_revision} kept, the canary of "
                    f"revision {d.from_revision} stopped"
                )
            else:
                reason, step = Reason.INSTANT_ROLLBACK, 1
                message = f"revision {d.to_revision} is still warm: 100% switched back to it"
            d = d.decide(
                now, reason, message, weights=((d.to_revision, 100),), target_slots=all_slots,
                step=step, batch_started_at=now, batch_ready_at=ready_at, progress_at=now,
            )  # fmt: skip
            return Step(d, requeue_at=now)
    return rolling_step(view)
