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

A green task that fails, or a failed window, fails the release (green gets no traffic, blue is
the service's revision again) — or, with ``failureAction: pause``, pauses it for a person with
green out of traffic. ``warren deploy promote`` is refused while green is not all ready (unless
forced).
"""

from __future__ import annotations

from ...domain import transitions
from ...domain.deployments import Deployment, Phase, Reason
from ...domain.specs import Analysis, BlueGreenConfig, FailureAction, ServiceSpec
from ..analysis import Outcome
from ..previews import PlannedStep, RolloutPlan
from ..rollouts import RolloutView, Step, by_slot
from .kinds import RouteExtras, StrategyKind
from .traffic import (
    fail_release,
    judge_window,
    pause_inconclusive,
    promote_slots,
    promotion_blocker_of,
    ready_in,
    release_tasks_failed,
    run_hooks,
    side_by_side,
    weights_of,
)

__all__ = ["BLUE_GREEN", "next_step", "preview"]


def next_step(view: RolloutView) -> Step:
    d = view.deployment
    if d.phase != Phase.PROGRESSING:
        return Step(d)
    cfg = view.blue_green or BlueGreenConfig()
    if d.promoting:  # blue is being retired
        message = (
            f"blue (revision {d.from_revision}) retired: all {view.replicas} tasks on "
            f"{d.to_revision}"
        )
        return promote_slots(view, d, Reason.BLUE_RETIRED, message)
    d = _start_green(view, d)
    if d.switched_at is None:
        return _before_switch(view, d, cfg)
    return _after_switch(view, d, cfg)


def _start_green(view: RolloutView, d: Deployment) -> Deployment:
    """Green beside blue in every slot, with no traffic; the slots follow a scale."""
    slots = tuple(range(1, view.replicas + 1))
    if d.green_started or d.target_slots:
        return d if d.target_slots == slots else d.advance(view.now, target_slots=slots)
    blue, green = d.from_revision, d.to_revision
    return d.decide(
        view.now, Reason.CANARY_SCALED,
        f"green: {view.replicas} task(s) of revision {green} beside blue (revision {blue})",
        target_slots=slots, weights=weights_of(blue, green, 0), green_started=True,
    )  # fmt: skip


def _before_switch(view: RolloutView, d: Deployment, cfg: BlueGreenConfig) -> Step:
    """Green starts, gets ready, passes its pre-rollout webhooks and its preview analysis,
    waits for promotion (or ``autoPromoteAfter``), passes its pre-promotion webhooks: switch."""
    now, green = view.now, d.to_revision
    stop, health_due = release_tasks_failed(view, d)
    if stop is not None:
        return stop
    if not ready_in(by_slot(view.live_tasks), green, range(1, view.replicas + 1)):
        return Step(d, requeue_at=health_due)
    if d.green_ready_at is None:
        d = d.decide(
            now, Reason.GREEN_READY, f"green ready; preview with `{cfg.preview_header}: 1`",
            green_ready_at=now, analysis_at=now,
        )  # fmt: skip
    d, stop = run_hooks(view, d, cfg.analysis, "pre-rollout", now)
    if stop is not None:
        return stop
    d, stop = _judge_preview(view, d, cfg)
    if stop is not None:
        return stop
    if d.promote == "" and not cfg.auto_promote:
        message = "green ready: waiting for `warren deploy promote`"
        return Step(transitions.await_promotion(d, now, message))
    promote_at = (d.green_ready_at or now) + cfg.auto_promote_after
    if d.promote == "" and now < promote_at:
        return Step(d, requeue_at=promote_at)
    d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", now)
    if stop is not None:
        return stop
    d = d.decide(
        now, Reason.SWITCHED, f"switched: 100% to green (revision {green})",
        weights=weights_of(d.from_revision, green, 100), switched_at=now, promote="",
        analysis_at=now, analysis_failures=0, progress_at=now,
    )  # fmt: skip
    return Step(d, requeue_at=now)


def _judge_preview(
    view: RolloutView, d: Deployment, cfg: BlueGreenConfig
) -> tuple[Deployment, Step | None]:
    """One window of green's preview traffic must pass before the switch (once)."""
    now = view.now
    if cfg.analysis is None or d.analysis_failures > 0 or _passed_once(d):
        return d, None
    due = (d.analysis_at or now) + cfg.analysis.interval
    if now < due:
        return d, Step(d, requeue_at=due)
    d, verdict, waiting = judge_window(d, cfg.analysis, view, now, "green (preview)")
    if verdict is None:
        return d, Step(d, checks=waiting)
    if verdict.outcome == Outcome.FAIL:
        return d, fail_release(d, now, Reason.ANALYSIS_FAILED, verdict.reason)
    if verdict.outcome == Outcome.INCONCLUSIVE:
        return d, Step(pause_inconclusive(d, now, "pre-promotion", verdict.reason))
    return d, None


def _after_switch(view: RolloutView, d: Deployment, cfg: BlueGreenConfig) -> Step:
    """Soak with analysis (a failure switches straight back to blue), then keep blue warm for
    ``scaleDownDelay``, then retire it."""
    now = view.now
    switched_at = d.switched_at
    assert switched_at is not None
    soak_end = switched_at + cfg.soak
    if cfg.analysis is not None and cfg.soak > 0 and now < soak_end + cfg.analysis.interval:
        due = (d.analysis_at or now) + cfg.analysis.interval
        if now >= due:
            d, verdict, waiting = judge_window(d, cfg.analysis, view, now, "green after the switch")
            if verdict is None:
                return Step(d, checks=waiting)
            if verdict.outcome == Outcome.FAIL and (
                d.analysis_failures >= cfg.analysis.failure_limit
            ):
                d = d.decide(
                    now, Reason.SWITCHED_BACK, f"switched back to blue: {verdict.reason}",
                    weights=weights_of(d.from_revision, d.to_revision, 0),
                )  # fmt: skip
                if d.config.failure_action == FailureAction.PAUSE:
                    # Paused back before the switch: resumed, green must pass again.
                    d = d.advance(now, switched_at=None)
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
        now, Reason.BLUE_RETIRED, f"retiring blue (revision {d.from_revision})", promoting=True,
        progress_at=now,
    )  # fmt: skip
    return Step(d, requeue_at=now)


def _passed_once(d: Deployment) -> bool:
    """Green's preview window passed — since it was last switched back from, if it was."""
    for x in reversed(d.decisions):
        if x.reason == Reason.SWITCHED_BACK:
            return False
        if x.reason == Reason.ANALYSIS_PASSED:
            return True
    return False


def promotion_blocker(view: RolloutView) -> str | None:
    """The switch waits for every green task to be ready: ``2/4 green tasks healthy``."""
    d = view.deployment
    if d.switched_at is not None or d.promoting:
        return None
    return promotion_blocker_of(view, tuple(range(1, view.replicas + 1)), "green")


def stable_of(d: Deployment) -> int | None:
    """Switched, green is what serves; before, blue."""
    return d.to_revision if d.switched_at is not None or d.promoting else d.from_revision


def _route_extras(d: Deployment, spec: ServiceSpec | None) -> RouteExtras:
    """While the release is active, requests with the preview header reach green."""
    if not d.active:
        return RouteExtras()
    cfg = (spec.deploy.blue_green if spec is not None else None) or BlueGreenConfig()
    return RouteExtras(preview_header=cfg.preview_header)


def analysis_of(spec: ServiceSpec | None) -> Analysis | None:
    cfg = spec.deploy.blue_green if spec is not None else None
    return cfg.analysis if cfg is not None else None


def preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    cfg = spec.deploy.blue_green or BlueGreenConfig()
    n = spec.replicas
    steps = [
        PlannedStep(f"green: {n} task(s) of revision {new} beside blue; preview with "
                    f"`{cfg.preview_header}: 1`", {"old": n, "new": n}, {"old": 100, "new": 0}),
    ]  # fmt: skip
    at: float | None = 0.0
    if cfg.analysis is not None:
        at = cfg.analysis.interval
        steps.append(PlannedStep("pre-promotion analysis of green's preview traffic",
                                 {"old": n, "new": n}, {"old": 100, "new": 0},
                                 f"one window of {cfg.analysis.interval:g}s", at))  # fmt: skip
    if cfg.auto_promote:
        at = None if at is None else at + cfg.auto_promote_after
        what = (
            f"auto-promote after {cfg.auto_promote_after:g}s"
            if cfg.auto_promote_after
            else ("auto-promote")
        )
    else:
        at, what = None, "wait for `warren deploy promote`"
    steps.append(PlannedStep(f"switch ({what}): 100% to green", {"old": n, "new": n},
                             {"old": 0, "new": 100}, "", at))  # fmt: skip
    keep = max(cfg.scale_down_delay, cfg.soak)
    at = None if at is None else at + keep
    soak = f"soak {cfg.soak:g}s" if cfg.soak and cfg.analysis else ""
    steps.append(PlannedStep(f"blue kept warm {keep:g}s (instant rollback), then retired",
                             {"old": 0, "new": n}, {"new": 100}, soak, at))  # fmt: skip
    return RolloutPlan("blue-green", revision, new, tuple(steps), 2 * n, at)


BLUE_GREEN = StrategyKind(
    name="blue-green",
    next_step=next_step,
    preview=preview,
    slot_targets=side_by_side,
    analysis=analysis_of,
    route_extras=_route_extras,
    promotable=True,
    weighted=True,
    promotion_blocker=promotion_blocker,
    stable_of=stable_of,
)
