"""What canary and blue/green releases share. Pure: how many canary tasks, whether a revision's
tasks are ready in given slots, one analysis window judged and logged (the ingress's figures
and the external checks together), a stage's webhooks, a failed release undone (weight 0 for the
new revision at once, the stable revision current again) or paused (``failureAction: pause``),
and what a window checks, as ``deploy plan`` says it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...domain import transitions
from ...domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ...domain.specs import Analysis, CanaryConfig, FailureAction
from ...domain.tasks import Task, TaskState
from ..analysis import Outcome, Sample, Verdict, judge
from ..checks import Check, combine, gather, hook_checks, window_checks
from ..reconciling import SlotTarget
from ..rollouts import Failure, RolloutView, Step, by_slot, find_failures, slot_done

__all__ = [
    "canary_count",
    "fail_release",
    "judge_window",
    "judged_on",
    "max_weight",
    "pause_inconclusive",
    "post_rollout_step",
    "promote_slots",
    "promoted",
    "promotion_blocker_of",
    "ready_count",
    "ready_in",
    "release_tasks_failed",
    "run_hooks",
    "side_by_side",
    "tasks_failed",
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


def ready_count(slots: Mapping[int, Sequence[Task]], revision: int, wanted: Iterable[int]) -> int:
    """How many of ``wanted`` slots have a ready, running task of ``revision``."""
    return sum(
        any(
            t.revision == revision and t.ready and t.wants_running and t.state == TaskState.RUNNING
            for t in slots.get(s, ())
        )
        for s in wanted
    )


def ready_in(slots: Mapping[int, Sequence[Task]], revision: int, wanted: Iterable[int]) -> bool:
    """Every one of ``wanted`` slots has a ready, running task of ``revision``."""
    wanted = tuple(wanted)
    return ready_count(slots, revision, wanted) == len(wanted)


def side_by_side(d: Deployment, replicas: int) -> dict[int, SlotTarget] | None:
    """Canary and blue/green updates run both revisions in their target slots (a canary task
    beside a stable one; green beside blue) and the stable one alone elsewhere, until
    promotion; then the new one everywhere, slot by slot (None: as a rolling update whose
    target slots are all of them). A release that ended without promotion leaves the stable
    revision alone everywhere."""
    if d.kind != DeploymentKind.UPDATE or d.promoting:
        return None
    stable = d.from_revision
    if stable is None or d.phase == Phase.SUCCEEDED:
        return None
    if d.phase.terminal:
        # Failed (or superseded) before promotion: the stable revision everywhere — its tasks
        # were never to be touched.
        return {slot: stable for slot in range(1, replicas + 1)}
    targets = set(d.target_slots)
    pair = (stable, d.to_revision)
    wanted = set(range(1, replicas + 1)) | targets
    return {slot: pair if slot in targets else stable for slot in sorted(wanted)}


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
    return transitions.pause(
        d, now, Reason.ANALYSIS_INCONCLUSIVE, reason, action="pause for a human"
    )


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
        transitions.finish(d, now, reason, message, ready_slots=view.replicas,
                           target_slots=all_slots)
    )  # fmt: skip


def tasks_failed(d: Deployment, now: float, failures: Sequence[Failure]) -> Step:
    """New tasks of a canary or green that failed (or never got ready): the release fails —
    or pauses, counting them, so that a resume does not pause on them again."""
    counted = (*d.failed_tasks, *(f.task_id for f in failures))
    message = "; ".join(f.message for f in failures)
    return fail_release(d, now, failures[0].reason, message, failed_tasks=counted)


def release_tasks_failed(view: RolloutView, d: Deployment) -> tuple[Step | None, float | None]:
    """The Step when new tasks failed (else None), and the next healthy deadline."""
    failures, due = find_failures(
        d, view.live_tasks, view.now, d.config.healthy_deadline, per_slot=False
    )
    return (tasks_failed(d, view.now, failures) if failures else None), due


def promotion_blocker_of(view: RolloutView, slots: Sequence[int], what: str) -> str | None:
    """``0/2 canary tasks healthy`` while the new revision is not ready in every one of
    ``slots``: a promotion waits (unless forced)."""
    ready = ready_count(by_slot(view.live_tasks), view.deployment.to_revision, slots)
    return None if ready == len(slots) else f"{ready}/{len(slots)} {what} tasks healthy"


def promote_slots(view: RolloutView, d: Deployment, reason: Reason, message: str) -> Step:
    """Promotion: the new revision takes every slot. Its tasks that fail fail the release; so
    does no slot done for ``progressDeadline`` (a new task that never gets ready must not hold
    the release for ever)."""
    done = promoted(view, d, by_slot(view.live_tasks), reason, message)
    if done is not None:
        return done
    stop, health_due = release_tasks_failed(view, d)
    if stop is not None:
        return stop
    now, deadline = view.now, d.progress_at + d.config.progress_deadline
    if now >= deadline:
        why = f"promotion: not every slot done within {d.config.progress_deadline:g}s"
        return fail_release(d, now, Reason.PROGRESS_DEADLINE_EXCEEDED, why)
    return Step(d, requeue_at=min(deadline, health_due) if health_due else deadline)


def fail_release(
    d: Deployment, now: float, reason: Reason | str, message: str, **progress: Any
) -> Step:
    """A failed canary or green: the new revision gets weight 0 at once. With ``failureAction:
    pause`` the release waits for a person, its tasks kept (``resume`` gives the canary its
    weight back and judges again; ``rollback`` or ``abort`` undo it); otherwise it fails and the
    stable revision — which never stopped serving — is the service's revision again, in the
    same write."""
    stable = d.from_revision
    if stable is None:
        return Step(transitions.fail(d, now, reason, message))
    if d.config.failure_action == FailureAction.PAUSE:
        return Step(
            transitions.pause(
                d, now, reason, message,
                action=f"weight 0 for revision {d.to_revision}; pause (failure action)",
                weights=weights_of(stable, d.to_revision, 0), **progress,
            )
        )  # fmt: skip
    if progress:
        d = d.advance(now, **progress)
    return Step(transitions.fail_and_revert(d, now, reason, message, stable))


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
    return Step(called.checked(message=d.message))


def judged_on(analysis: Analysis) -> str:
    """What a window must show, as ``planning.analysis`` judges it."""
    if analysis.mode == "baseline":
        checks = ["no worse than stable"]
    else:
        checks = [
            f"{label} {sign} {value:g}{unit}"
            for label, sign, value, unit in (
                ("success rate", ">=", analysis.success_rate, ""),
                ("p95", "<=", analysis.max_latency_p95, "s"),
                ("p99", "<=", analysis.max_latency_p99, "s"),
            )
            if value is not None
        ]
    checks += [m.name for m in analysis.metrics]
    checks += [w.name for w in analysis.webhooks if w.type == "rollout"]
    return ", ".join([*checks, f"min {analysis.min_requests} requests"])
