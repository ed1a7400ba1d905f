"""A rollback deployment. Pure. When every slot still has a ready task of the revision to go back
to (blue kept warm after a blue/green switch, a canary's stable tasks), the rollback is an
instant switch: 100% of the traffic to it for the next request, the other tasks drained and
stopped. Otherwise it is a rolling update with the rollback config. A rollback never re-runs
canary steps or analysis."""

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
        if all_slots and ready_in(by_slot(view.tasks), d.to_revision, all_slots):
            d = d.decide(
                now, Reason.INSTANT_ROLLBACK,
                f"revision {d.to_revision} is still warm: 100% switched back to it",
                weights=((d.to_revision, 100),), target_slots=all_slots, step=1,
                batch_started_at=now, progress_at=now,
            )  # fmt: skip
            return Step(d, requeue_at=now)
    return rolling_step(view)
