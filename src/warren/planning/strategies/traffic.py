"""What canary and blue/green releases share. Pure: how many canary tasks, whether a revision's
tasks are ready in given slots, one analysis window judged and logged (the ingress's figures
and the external checks together), a stage's webhooks, and a failed release undone (weight 0
for the new revision at once, the stable revision current again)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from ...domain.deployments import Deployment, Phase, Reason
from ...domain.specs import Analysis, CanaryConfig
from ...domain.tasks import Task, TaskState
from ..analysis import Outcome, Sample, Verdict, judge
from ..checks import Check, combine, gather, hook_checks, window_checks
from ..rollouts import RolloutView, Step, slot_done

__all__ = [
    "canary_count",
    "fail_release",
    "judge_window",
    "max_weight",
    "pause_inconclusive",
    "post_rollout_step",
    "promoted",
    "ready_in",
    "run_hooks",
    "weights_of",
]


def max_weight(config: CanaryConfig) -> int:
    return max((s.set_weight for s in config.steps if s.set_weight is not None), default=0)


def canary_count(config: CanaryConfig, replicas: int) -> int:
    """``canaryReplicas``, else enough tasks for the largest weight: 10 replicas, steps up to 50%
    → 5 canary tasks. Weights are exact whatever the count (1% with 1 task works)."""
    if config.canary_replicas is not None:
        return config.canary_replicas
    return max(1, min(replicas, math.ceil(replicas * max_weight(config) / 100)))


def ready_in(slots: Mapping[int, Sequence[Task]], revision: int, wanted: Iterable[int]) -> bool:
    """Every one of ``wanted`` slots has a ready, running task of ``revision``."""
    return all(
        any(
            t.revision == revision and t.ready and t.wants_running and t.state == TaskState.RUNNING
            for t in slots.get(s, ())
        )
        for s in wanted
    )


def weights_of(stable: int | None, new: int, new_weight: int) -> tuple[tuple[int, int], ...]:
    if stable is None:
        return ((new, 100),)
    return ((stable, 100 - new_weight), (new, new_weight))


def judge_window(
    d: Deployment, analysis: Analysis, view: RolloutView, now: float, label: str
) -> tuple[Deployment, Verdict | None, tuple[Check, ...]]:
    """Judge the window that just closed and log it; count consecutive failures. While the
    window's external checks have not all answered: ``(d, None, the checks to run)``."""
    checks = window_checks(d, analysis, d.analysis_at or 0.0)
    results = gather(view.checks, checks)
    if results is None:
        return d, None, checks
    canary = view.samples.get(d.to_revision, Sample(0, 0))
    stable = view.samples.get(d.from_revision) if d.from_revision is not None else None
    verdict = combine(judge(analysis, canary, stable), results)
    reason = {
        Outcome.PASS: Reason.ANALYSIS_PASSED,
        Outcome.FAIL: Reason.ANALYSIS_FAILED,
        Outcome.INCONCLUSIVE: Reason.ANALYSIS_INCONCLUSIVE,
    }[verdict.outcome]
    failures = d.analysis_failures + 1 if verdict.outcome == Outcome.FAIL else 0
    d = d.decide(
        now,
        reason,
        f"{label}: {verdict.reason}",
        measured={**verdict.measured, "window": analysis.interval},
        analysis_at=now,
        analysis_failures=failures,
    )
    return d, verdict, ()


def pause_inconclusive(d: Deployment, now: float, which: str, why: str) -> Deployment:
    """Too little to judge is never a silent pass: pause for a human (traffic stays where it
    is; ``warren deploy resume`` judges a new window, ``warren service rollback`` goes back)."""
    reason = f"{which} analysis inconclusive: {why}".lstrip()
    return d.decide(
        now, Reason.ANALYSIS_INCONCLUSIVE, reason, action="pause for a human",
        phase=Phase.PAUSED, paused_reason=reason,
    )  # fmt: skip


def run_hooks(
    view: RolloutView, d: Deployment, analysis: Analysis | None, stage: str, now: float
) -> tuple[Deployment, Step | None]:
    """The webhooks of ``stage`` (``pre-rollout``, ``pre-promotion``), once per deployment:
    ``(d, None)`` once they have all passed (or when there are none); else the Step to return —
    waiting for their answers, or the release failed by those that did not pass."""
    if stage in d.hooks_done:
        return d, None
    checks = hook_checks(d, analysis, stage)
    if not checks:
        return d, None
    results = gather(view.checks, checks)
    if results is None:
        return d, Step(d, checks=checks)
    failed = [r.reason for r in results if r.outcome != Outcome.PASS]
    if failed:
        return d, fail_release(d, now, Reason.WEBHOOK_FAILED, "; ".join(failed))
    d = d.decide(
        now, Reason.WEBHOOKS_PASSED, "; ".join(r.reason for r in results),
        hooks_done=(*d.hooks_done, stage),
    )  # fmt: skip
    return d, None


def promoted(
    view: RolloutView,
    d: Deployment,
    slots: Mapping[int, Sequence[Task]],
    reason: Reason,
    message: str,
) -> Step | None:
    """Once the new revision alone runs in every slot (the old tasks drained and gone), the
    release has succeeded; None until then."""
    now, all_slots = view.now, tuple(range(1, view.replicas + 1))
    if not all(slot_done(slots.get(s, []), d.to_revision, 0.0, now) for s in all_slots):
        return None
    return Step(
        d.decide(
            now,
            reason,
            message,
            phase=Phase.SUCCEEDED,
            finished_at=now,
            weights=(),
            ready_slots=view.replicas,
            target_slots=all_slots,
        )
    )


def fail_release(d: Deployment, now: float, reason: Reason | str, message: str) -> Step:
    """A failed canary or green: the new revision gets weight 0 at once, the deployment fails,
    and the stable revision — which never stopped serving — is the service's revision again."""
    stable = d.from_revision
    weights = ((stable, 100), (d.to_revision, 0)) if stable is not None else ()
    d = d.decide(
        now,
        reason,
        message,
        action=f"weight 0 for revision {d.to_revision}; revision {stable} stays",
        phase=Phase.FAILED,
        finished_at=now,
        weights=weights,
        promoting=False,
    )
    return Step(d, revert_to=stable)


def post_rollout_step(view: RolloutView, analysis: Analysis | None) -> Step:
    """An ended deployment calls its ``post-rollout`` webhooks once, whatever its outcome: a
    notification — the answers are logged, nothing else changes (the message that says why it
    ended stays)."""
    d = view.deployment
    if "post-rollout" in d.hooks_done:
        return Step(d)
    checks = hook_checks(d, analysis, "post-rollout")
    if not checks:
        return Step(d)
    results = gather(view.checks, checks)
    if results is None:
        return Step(d, checks=checks)
    called = d.decide(
        view.now, Reason.WEBHOOKS_CALLED, "; ".join(r.reason for r in results),
        hooks_done=(*d.hooks_done, "post-rollout"),
    )  # fmt: skip
    return Step(called.model_copy(update={"message": d.message}))
