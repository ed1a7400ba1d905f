"""The canary release. Pure.

The stable revision keeps all its replicas until promotion. Beside it, in slots 1..k, run k
canary tasks of the new revision (``canaryReplicas``, else enough for the largest weight). The
steps then run in order:

- ``setWeight: N`` — once the canary tasks are ready, N% of the requests go to the canary
  (exactly: the ingress's weighted round-robin), the rest to stable;
- ``pause: 30s`` — wait, ``pause: {}`` — wait for ``warren deploy promote`` (the canary is
  still analysed meanwhile: a failure fails it).

Webhooks (``analysis.webhooks``): ``pre-rollout`` ones must pass before the first weight above
0, ``pre-promotion`` ones before promotion (``promote --full`` too); a failure fails the canary.

While the canary has traffic, every ``analysis.interval`` the window that closed is judged
(``planning.analysis``, with the ``rollout`` webhooks and the provider metrics of that window,
``planning.checks``): pass → go on; inconclusive (too few requests) → pause with the reason,
never a silent pass; ``failureLimit`` failures in a row → the canary gets weight 0 at once, its
tasks go, the deployment fails, and the stable revision — never touched — stays current. A new
task that fails (or is not ready within ``healthyDeadline``) fails the canary the same way.

After the last step: promotion — the new revision takes every slot (each new task ready before
the stable task of its slot is drained and stopped), then it has 100% and the deployment has
succeeded. ``promote`` skips the current pause; ``promote --full`` skips every remaining step.
"""

from __future__ import annotations

from ...domain.deployments import Phase, Reason
from ...domain.specs import CanaryConfig
from ..analysis import Outcome
from ..rollouts import RolloutView, Step, by_slot, earliest, find_failures
from .traffic import (
    canary_count,
    fail_release,
    judge_window,
    pause_inconclusive,
    promoted,
    ready_in,
    run_hooks,
    weights_of,
)

__all__ = ["canary_slots", "next_step"]


def canary_slots(view: RolloutView) -> tuple[int, ...]:
    k = canary_count(view.canary or CanaryConfig(), view.replicas)
    return tuple(range(1, k + 1))


def next_step(view: RolloutView) -> Step:
    d, now = view.deployment, view.now
    # Waiting for `warren deploy promote` (``pause: {}``), the canary keeps its traffic: it is
    # still analysed, and a failure still fails it.
    awaiting = d.phase == Phase.AWAITING_PROMOTION
    if d.phase != Phase.PROGRESSING and not awaiting:
        return Step(d)
    cfg = view.canary or CanaryConfig()
    stable, new = d.from_revision, d.to_revision
    slots = by_slot(view.tasks)
    all_slots = tuple(range(1, view.replicas + 1))

    if d.promote == "full" and not d.promoting:
        d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", now)
        if stop is not None:
            return stop
        d = d.decide(
            now, Reason.PROMOTED, "promoted by the operator: the remaining steps are skipped",
            promoting=True, promote="", target_slots=all_slots,
        )  # fmt: skip

    # New tasks that fail (or never get ready) fail the canary.
    failures, health_due = find_failures(d, view.tasks, now, d.config.healthy_deadline)
    if failures:
        return fail_release(d, now, failures[0].reason, "; ".join(f.message for f in failures))

    if d.promoting:
        message = f"canary promoted: {view.replicas}/{view.replicas} tasks on revision {new}"
        done = promoted(view, d, slots, Reason.COMPLETE, message)
        return done or Step(d, requeue_at=health_due)

    canaries = canary_slots(view)
    if not d.target_slots:
        d = d.decide(
            now, Reason.CANARY_SCALED,
            f"{len(canaries)} canary task(s) of revision {new} beside {view.replicas} stable",
            target_slots=canaries, weights=weights_of(stable, new, 0),
        )  # fmt: skip
        return Step(d, requeue_at=health_due)
    ready = ready_in(slots, new, d.target_slots)
    weight = dict(d.weights).get(new, 0)

    # Analysis of the window that closed.
    analysis_due: float | None = None
    if cfg.analysis is not None and weight > 0 and ready:
        if d.analysis_at is None:
            d = d.model_copy(update={"analysis_at": now})
        elif now >= d.analysis_at + cfg.analysis.interval:
            d, verdict, waiting = judge_window(d, cfg.analysis, view, now, f"canary at {weight}%")
            if verdict is None:
                return Step(d, checks=waiting)
            if (
                verdict.outcome == Outcome.FAIL
                and d.analysis_failures >= cfg.analysis.failure_limit
            ):
                return fail_release(
                    d, now, Reason.ANALYSIS_FAILED, f"canary analysis failed: {verdict.reason}"
                )
            if verdict.outcome == Outcome.INCONCLUSIVE and not awaiting:
                return Step(pause_inconclusive(d, now, "", verdict.reason))
        analysis_due = (d.analysis_at or now) + cfg.analysis.interval
    if awaiting:
        return Step(d, requeue_at=earliest(health_due, analysis_due))

    # The steps.
    if d.canary_step >= len(cfg.steps):
        if not ready:
            return Step(d, requeue_at=health_due)
        d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", now)
        if stop is not None:
            return stop
        d = d.decide(
            now, Reason.PROMOTED, f"all {len(cfg.steps)} steps passed: promoting revision {new}",
            promoting=True, target_slots=all_slots,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    step = cfg.steps[d.canary_step]
    if step.set_weight is not None:
        if step.set_weight > 0 and not ready:
            return Step(d, requeue_at=earliest(health_due, analysis_due))
        if step.set_weight > 0:
            d, stop = run_hooks(view, d, cfg.analysis, "pre-rollout", now)
            if stop is not None:
                return stop
        message = f"step {d.canary_step + 1}: {step.set_weight}% to revision {new}"
        d = d.decide(
            now, Reason.WEIGHT_SET, message,
            weights=weights_of(stable, new, step.set_weight), canary_step=d.canary_step + 1,
            step=d.step + 1, analysis_at=now, progress_at=now,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    if d.promote == "step":
        d = d.decide(
            now, Reason.PROMOTED, f"step {d.canary_step + 1}: pause skipped by the operator",
            promote="", pause_until=None, canary_step=d.canary_step + 1, step=d.step + 1,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    if isinstance(step.pause, dict):
        d = d.decide(
            now, Reason.AWAITING_PROMOTION,
            f"step {d.canary_step + 1}: paused until `warren deploy promote`",
            phase=Phase.AWAITING_PROMOTION,
        )  # fmt: skip
        return Step(d, requeue_at=analysis_due)
    assert step.pause is not None
    if d.pause_until is None:
        d = d.decide(
            now, Reason.PAUSED_FOR, f"step {d.canary_step + 1}: pause {step.pause:g}s",
            pause_until=now + step.pause,
        )  # fmt: skip
        return Step(d, requeue_at=earliest(now + step.pause, analysis_due))
    if now < d.pause_until:
        return Step(d, requeue_at=earliest(d.pause_until, analysis_due))
    d = d.model_copy(
        update={"pause_until": None, "canary_step": d.canary_step + 1, "step": d.step + 1}
    )
    return Step(d, requeue_at=now)
