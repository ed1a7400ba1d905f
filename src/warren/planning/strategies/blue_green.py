"""The blue/green release. Pure.

Green (the new revision) starts at full replicas beside blue, one green task next to each blue
one; blue keeps 100% of the traffic, while requests with the preview header (``previewHeader``,
``X-Warren-Preview: 1`` by default) already reach green. When every green task is ready:

1. ``pre-rollout`` webhooks, then the pre-promotion analysis, if configured: one window of
   green's (preview) traffic must pass — a failure fails the release, an inconclusive window
   pauses it for a human;
2. ``autoPromote`` (after ``autoPromoteAfter``), or ``warren deploy promote``;
3. ``pre-promotion`` webhooks, then the switch: one routing change, 100% to green for the next
   request;
4. post-promotion analysis over ``soak``, if configured: a failure switches straight back, an
   inconclusive window pauses for a human;
5. blue is kept warm for ``scaleDownDelay`` — ``warren service rollback`` inside that window is
   an instant switch back — then retired (drained and stopped); the deployment has succeeded.
"""

from __future__ import annotations

from ...domain.deployments import Deployment, Phase, Reason
from ...domain.specs import BlueGreenConfig
from ..analysis import Outcome
from ..rollouts import RolloutView, Step, by_slot, find_failures
from .traffic import (
    fail_release,
    judge_window,
    pause_inconclusive,
    promoted,
    ready_in,
    run_hooks,
    weights_of,
)

__all__ = ["next_step"]


def next_step(view: RolloutView) -> Step:
    d, now = view.deployment, view.now
    if d.phase != Phase.PROGRESSING:
        return Step(d)
    cfg = view.blue_green or BlueGreenConfig()
    blue, green = d.from_revision, d.to_revision
    slots = by_slot(view.tasks)
    all_slots = tuple(range(1, view.replicas + 1))

    if d.promoting:  # blue is being retired
        message = f"blue (revision {blue}) retired: all {view.replicas} tasks on {green}"
        return promoted(view, d, slots, Reason.BLUE_RETIRED, message) or Step(d)

    if not d.target_slots:
        d = d.decide(
            now, Reason.CANARY_SCALED,
            f"green: {view.replicas} task(s) of revision {green} beside blue (revision {blue})",
            target_slots=all_slots, weights=weights_of(blue, green, 0),
        )  # fmt: skip
    failures, health_due = find_failures(d, view.tasks, now, d.config.healthy_deadline)
    if failures and d.switched_at is None:
        return fail_release(d, now, failures[0].reason, "; ".join(f.message for f in failures))

    if d.switched_at is None:
        if not ready_in(slots, green, all_slots):
            return Step(d, requeue_at=health_due)
        if d.green_ready_at is None:
            d = d.decide(
                now, Reason.GREEN_READY,
                f"green ready; preview with `{cfg.preview_header}: 1`", green_ready_at=now,
                analysis_at=now,
            )  # fmt: skip
        d, stop = run_hooks(view, d, cfg.analysis, "pre-rollout", now)
        if stop is not None:
            return stop
        if cfg.analysis is not None and d.analysis_failures == 0 and not _passed_once(d):
            due = (d.analysis_at or now) + cfg.analysis.interval
            if now < due:
                return Step(d, requeue_at=due)
            d, verdict, waiting = judge_window(d, cfg.analysis, view, now, "green (preview)")
            if verdict is None:
                return Step(d, checks=waiting)
            if verdict.outcome == Outcome.FAIL:
                return fail_release(d, now, Reason.ANALYSIS_FAILED, verdict.reason)
            if verdict.outcome == Outcome.INCONCLUSIVE:
                return Step(pause_inconclusive(d, now, "pre-promotion", verdict.reason))
        if d.promote == "" and not cfg.auto_promote:
            d = d.decide(
                now, Reason.AWAITING_PROMOTION, "green ready: waiting for `warren deploy promote`",
                phase=Phase.AWAITING_PROMOTION,
            )  # fmt: skip
            return Step(d)
        promote_at = (d.green_ready_at or now) + cfg.auto_promote_after
        if d.promote == "" and now < promote_at:
            return Step(d, requeue_at=promote_at)
        d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", now)
        if stop is not None:
            return stop
        d = d.decide(
            now, Reason.SWITCHED, f"switched: 100% to green (revision {green})",
            weights=weights_of(blue, green, 100), switched_at=now, promote="",
            analysis_at=now, analysis_failures=0, progress_at=now,
        )  # fmt: skip
        return Step(d, requeue_at=now)

    # After the switch: soak with analysis, then keep blue warm, then retire it.
    switched_at = d.switched_at
    soak_end = switched_at + cfg.soak
    if cfg.analysis is not None and cfg.soak > 0 and now < soak_end + cfg.analysis.interval:
        due = (d.analysis_at or now) + cfg.analysis.interval
        if now >= due:
            d, verdict, waiting = judge_window(d, cfg.analysis, view, now, "green after the switch")
            if verdict is None:
                return Step(d, checks=waiting)
            if (
                verdict.outcome == Outcome.FAIL
                and d.analysis_failures >= cfg.analysis.failure_limit
            ):
                d = d.decide(
                    now, Reason.SWITCHED_BACK, f"switched back to blue: {verdict.reason}",
                    weights=weights_of(blue, green, 0),
                )  # fmt: skip
                return fail_release(d, now, Reason.ANALYSIS_FAILED, verdict.reason)
            if verdict.outcome == Outcome.INCONCLUSIVE:
                return Step(pause_inconclusive(d, now, "post-promotion", verdict.reason))
            due = now + cfg.analysis.interval
        if now < soak_end:
            return Step(d, requeue_at=min(due, soak_end))
    retire_at = switched_at + max(cfg.scale_down_delay, cfg.soak)
    if now < retire_at:
        return Step(d, requeue_at=retire_at)
    d = d.decide(
        now, Reason.BLUE_RETIRED, f"retiring blue (revision {blue})", promoting=True,
    )  # fmt: skip
    return Step(d, requeue_at=now)


def _passed_once(d: Deployment) -> bool:
    return any(x.reason == Reason.ANALYSIS_PASSED for x in d.decisions)
