"""Plan before apply: the rollout a change would perform, step by step, without performing it.
Pure. Used by ``warren deploy plan`` (and the API's ``POST /v1/services/NAME/plan``); each
strategy draws its own steps (``StrategyKind.preview``).

Times are the earliest possible — what the configuration itself imposes (monitor periods,
delays, pauses, analysis windows); the tasks' own start-up time comes on top of each batch or
step that starts tasks.
"""

from __future__ import annotations

import dataclasses
import shlex

from ..domain.durations import format_duration
from ..domain.specs import ServiceSpec
from .previews import PlannedStep, RolloutPlan
from .strategies import STRATEGIES
from .strategies.rolling import ROLLING

__all__ = ["PlannedStep", "RolloutPlan", "plan_fast_track", "plan_rollout"]


def plan_rollout(
    current: ServiceSpec, revision: int, new: ServiceSpec, next_revision: int | None = None
) -> RolloutPlan:
    """The rollout that would move ``current`` (stored as ``revision``) to ``new``, stored as
    ``next_revision`` (the service's next revision number: after a rollback it is not
    ``revision + 1``)."""
    n = new.replicas
    if current.same_template(new):
        what = f"scale to {n}" if current.replicas != n else f"the {n} task(s) keep running"
        step = PlannedStep(what, {"old": n})
        note = _in_place(current, new)
        return RolloutPlan("none", revision, None, (step,), max(n, current.replicas), 0.0, (note,))
    kind = STRATEGIES.get(str(new.deploy.strategy), ROLLING)
    plan = kind.preview(new, revision, next_revision or revision + 1)
    return _with_jobs(plan, current.replicas, new)


def _with_jobs(plan: RolloutPlan, running: int, new: ServiceSpec) -> RolloutPlan:
    """The plan with its release's jobs as steps: the pre-deploy job first (every slot still
    on the old revision), the post-deploy job last."""
    before, after = new.deploy.pre_deploy, new.deploy.post_deploy
    steps = list(plan.steps)
    if before is not None:
        what = (
            f"pre-deploy job `{shlex.join(before.command)}` (timeout "
            f"{format_duration(before.timeout)}): once, before any task of revision "
            f"{plan.to_revision} starts; the release fails, nothing replaced, unless it exits 0"
        )
        steps.insert(0, PlannedStep(what, {"old": running}))
    if after is not None and steps:
        last = steps[-1]
        what = (
            f"post-deploy job `{shlex.join(after.command)}` (timeout "
            f"{format_duration(after.timeout)}): once, after the release succeeded"
        )
        steps.append(
            PlannedStep(what, dict(last.tasks), dict(last.weights), "", last.earliest_after)
        )
    return dataclasses.replace(plan, steps=tuple(steps))


def _in_place(current: ServiceSpec, new: ServiceSpec) -> str:
    """What a change that needs no new task does: scale, or store the rollout settings for the
    next rollout (an active one keeps its own)."""
    changed = [
        what
        for what, differs in (
            ("replicas", current.replicas != new.replicas),
            ("rollout settings", current.deploy != new.deploy),
        )
        if differs
    ]
    if not changed:
        return "nothing changes"
    note = f"no new revision: only {' and '.join(changed)} change"
    if current.deploy != new.deploy:
        note += " (the next rollout uses the new settings; one under way keeps its own)"
    return note


def plan_fast_track(dropped: int, stable: int, replicas: int) -> RolloutPlan:
    """The stable spec applied again while the release of ``dropped`` is not promoted: a
    fast-track rollback (``planning.releases``)."""
    step = PlannedStep(
        f"fast-track rollback: revision {stable} keeps every slot; revision {dropped}'s tasks "
        "stop, no task starts",
        {"old": replicas},
        {"old": 100},
    )
    note = f"the stable spec again: the unpromoted release of revision {dropped} is dropped"
    return RolloutPlan("fast-track rollback", dropped, stable, (step,), replicas, 0.0, (note,))
