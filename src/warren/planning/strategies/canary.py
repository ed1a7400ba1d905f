"""The canary release. Pure.

The stable revision keeps all its replicas until promotion. Beside it, in slots 1..k, run k
canary tasks of the new revision (``canaryReplicas``, else enough for the largest weight; k
follows a scale of the service). The steps then run in order:

- ``setWeight: N`` — once the canary tasks are ready, N% of the requests go to the canary
  (exactly: the ingress's weighted round-robin), the rest to stable;
- ``pause: 30s`` — wait, ``pause: {}`` — wait for ``warren deploy promote`` (the canary is
  still analysed meanwhile: a failure fails it).

No steps given: 10% → 50% → 100%, each weight held and judged for one analysis window
(``CanaryConfig.with_defaults``).

Webhooks (``analysis.webhooks``): ``pre-rollout`` ones must pass before the first weight above
0, ``pre-promotion`` ones before promotion (``promote --full`` too); a failure fails the canary.

While the canary has traffic, every ``analysis.interval`` the window that closed is judged
(``planning.analysis``, with the ``rollout`` webhooks and the provider metrics of that window,
``planning.checks``): pass → go on; inconclusive (too few requests) → pause with the reason,
never a silent pass; ``failureLimit`` failures in a row → the canary gets weight 0 at once, its
tasks go, the deployment fails, and the stable revision — never touched — stays current (with
``failureAction: pause``: weight 0 and a pause for a person instead). A new task that fails (or
is not ready within ``healthyDeadline``) fails the canary the same way.

After the last step: promotion — the new revision takes every slot (each new task ready before
the stable task of its slot is drained and stopped), then it has 100% and the deployment has
succeeded. ``promote`` skips the current pause; ``promote --full`` skips every remaining step;
either is refused while the canary tasks are not all ready (unless forced).
"""

from __future__ import annotations

from ...domain import transitions
from ...domain.deployments import Deployment, Phase, Reason
from ...domain.specs import Analysis, CanaryConfig, HeaderRoute, ServiceSpec
from ..analysis import Outcome
from ..previews import PlannedStep, RolloutPlan
from ..rollouts import RolloutView, Step, by_slot, earliest
from .kinds import RouteExtras, StrategyKind
from .traffic import (
    canary_count,
    fail_release,
    judge_window,
    judged_on,
    pause_inconclusive,
    promote_slots,
    promotion_blocker_of,
    ready_in,
    release_tasks_failed,
    run_hooks,
    side_by_side,
    weights_of,
)

__all__ = ["CANARY", "canary_slots", "config_of", "next_step", "preview"]


def config_of(view: RolloutView) -> CanaryConfig:
    return (view.canary or CanaryConfig()).with_defaults()


def canary_slots(view: RolloutView) -> tuple[int, ...]:
    k = canary_count(config_of(view), view.replicas)
    return tuple(range(1, k + 1))


def next_step(view: RolloutView) -> Step:
    d = view.deployment
    # Waiting for `warren deploy promote` (``pause: {}``), the canary keeps its traffic: it is
    # still analysed, and a failure still fails it.
    if d.phase not in (Phase.PROGRESSING, Phase.AWAITING_PROMOTION):
        return Step(d)
    cfg = config_of(view)
    d, stop = _promote_fully(view, d, cfg)
    if stop is not None:
        return stop
    stop, health_due = release_tasks_failed(view, d)
    if stop is not None:
        return stop
    if d.promoting:
        new = d.to_revision
        message = f"canary promoted: {view.replicas}/{view.replicas} tasks on revision {new}"
        step = promote_slots(view, d, Reason.COMPLETE, message)
        return Step(step.deployment, earliest(step.requeue_at, health_due), step.checks)
    d, scaled = _scale_canary(view, d)
    if scaled:
        return Step(d, requeue_at=health_due)
    ready = ready_in(by_slot(view.live_tasks), d.to_revision, d.target_slots)
    d = _restore_weight(view, d, cfg, ready)
    d, analysis_due, stop = _analyse(view, d, cfg, ready)
    if stop is not None:
        return stop
    if d.phase == Phase.AWAITING_PROMOTION:
        return Step(d, requeue_at=earliest(health_due, analysis_due))
    return _run_steps(view, d, cfg, ready, health_due, analysis_due)


def _promote_fully(
    view: RolloutView, d: Deployment, cfg: CanaryConfig
) -> tuple[Deployment, Step | None]:
    """``promote --full``: the pre-promotion webhooks, then every slot to the new revision."""
    if d.promote != "full" or d.promoting:
        return d, None
    d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", view.now)
    if stop is not None:
        return d, stop
    return d.decide(
        view.now, Reason.PROMOTED, "promoted by the operator: the remaining steps are skipped",
        promoting=True, promote="", target_slots=tuple(range(1, view.replicas + 1)),
        progress_at=view.now,
    ), None  # fmt: skip


def _scale_canary(view: RolloutView, d: Deployment) -> tuple[Deployment, bool]:
    """Start the canary tasks with no traffic — or, when the service was scaled, as many as
    its new replica count asks for (5 → 10 replicas at 20%: 1 → 2 canary tasks). The stable
    revision keeps every slot until promotion."""
    canaries = canary_slots(view)
    if d.target_slots == canaries:
        return d, False
    new, stable = d.to_revision, d.from_revision
    first = not d.target_slots
    if first:
        message = f"{len(canaries)} canary task(s) of revision {new} beside {view.replicas} stable"
        weights = weights_of(stable, new, 0)
    else:
        message = f"canary follows the scale: {len(canaries)} task(s) for {view.replicas} replicas"
        weights = d.weights
    d = d.decide(view.now, Reason.CANARY_SCALED, message, target_slots=canaries, weights=weights)
    return d, first


def _restore_weight(view: RolloutView, d: Deployment, cfg: CanaryConfig, ready: bool) -> Deployment:
    """A canary paused by a failure (``failureAction: pause``) lost its traffic; resumed, it
    gets back the weight of the step it stood at, once its tasks are ready."""
    wanted = current_weight(cfg, d.canary_step)
    have = dict(d.weights).get(d.to_revision, 0)
    if have == wanted or not ready or wanted == 0:
        return d
    return d.decide(
        view.now, Reason.WEIGHT_SET, f"{wanted}% to revision {d.to_revision} again",
        weights=weights_of(d.from_revision, d.to_revision, wanted), analysis_at=view.now,
    )  # fmt: skip


def current_weight(cfg: CanaryConfig, canary_step: int) -> int:
    """The weight of the last ``setWeight`` among the steps run so far."""
    weights = [s.set_weight for s in cfg.steps[:canary_step] if s.set_weight is not None]
    return weights[-1] if weights else 0


def _analyse(
    view: RolloutView, d: Deployment, cfg: CanaryConfig, ready: bool
) -> tuple[Deployment, float | None, Step | None]:
    """The window that closed, judged: ``(d, when the next one closes, the Step that ends this
    look — failed, paused, waiting for checks — or None)``."""
    now = view.now
    weight = dict(d.weights).get(d.to_revision, 0)
    if cfg.analysis is None or weight == 0 or not ready:
        return d, None, None
    if d.analysis_at is None:
        return d.advance(now, analysis_at=now), now + cfg.analysis.interval, None
    if now >= d.analysis_at + cfg.analysis.interval:
        d, verdict, waiting = judge_window(d, cfg.analysis, view, now, f"canary at {weight}%")
        if verdict is None:
            return d, None, Step(d, checks=waiting)
        if verdict.outcome == Outcome.FAIL and d.analysis_failures >= cfg.analysis.failure_limit:
            message = f"canary analysis failed: {verdict.reason}"
            return d, None, fail_release(d, now, Reason.ANALYSIS_FAILED, message)
        if verdict.outcome == Outcome.INCONCLUSIVE and d.phase == Phase.PROGRESSING:
            return d, None, Step(pause_inconclusive(d, now, "", verdict.reason))
    return d, (d.analysis_at or now) + cfg.analysis.interval, None


def _run_steps(
    view: RolloutView,
    d: Deployment,
    cfg: CanaryConfig,
    ready: bool,
    health_due: float | None,
    analysis_due: float | None,
) -> Step:
    """The current step: a weight (once the canary is ready), a pause, or — after the last
    one — promotion."""
    now, new = view.now, d.to_revision
    if d.canary_step >= len(cfg.steps):
        if not ready:
            return Step(d, requeue_at=health_due)
        d, stop = run_hooks(view, d, cfg.analysis, "pre-promotion", now)
        if stop is not None:
            return stop
        d = d.decide(
            now, Reason.PROMOTED, f"all {len(cfg.steps)} steps passed: promoting revision {new}",
            promoting=True, target_slots=tuple(range(1, view.replicas + 1)), progress_at=now,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    step = cfg.steps[d.canary_step]
    number = d.canary_step + 1
    if step.set_weight is not None:
        if step.set_weight > 0 and not ready:
            return Step(d, requeue_at=earliest(health_due, analysis_due))
        if step.set_weight > 0:
            d, stop = run_hooks(view, d, cfg.analysis, "pre-rollout", now)
            if stop is not None:
                return stop
        d = d.decide(
            now, Reason.WEIGHT_SET, f"step {number}: {step.set_weight}% to revision {new}",
            weights=weights_of(d.from_revision, new, step.set_weight), canary_step=number,
            step=d.step + 1, analysis_at=now, progress_at=now,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    if step.set_header_route is not None:
        if not ready:  # a matching request would find no canary to go to
            return Step(d, requeue_at=earliest(health_due, analysis_due))
        d = d.decide(
            now, Reason.HEADER_ROUTE_SET,
            f"step {number}: header route {step.set_header_route.describe()} to revision {new}",
            canary_step=number, step=d.step + 1, progress_at=now,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    if d.promote == "step":
        d = d.decide(
            now, Reason.PROMOTED, f"step {number}: pause skipped by the operator",
            promote="", pause_until=None, canary_step=number, step=d.step + 1,
        )  # fmt: skip
        return Step(d, requeue_at=now)
    if isinstance(step.pause, dict):
        message = f"step {number}: paused until `warren deploy promote`"
        return Step(transitions.await_promotion(d, now, message), requeue_at=analysis_due)
    assert step.pause is not None
    if d.pause_until is None:
        d = d.decide(
            now, Reason.PAUSED_FOR, f"step {number}: pause {step.pause:g}s",
            pause_until=now + step.pause,
        )  # fmt: skip
        return Step(d, requeue_at=earliest(now + step.pause, analysis_due))
    if now < d.pause_until:
        return Step(d, requeue_at=earliest(d.pause_until, analysis_due))
    d = d.advance(now, pause_until=None, canary_step=number, step=d.step + 1)
    return Step(d, requeue_at=now)


def promotion_blocker(view: RolloutView) -> str | None:
    """Promotion waits for every canary task to be ready: ``0/2 canary tasks healthy``."""
    d = view.deployment
    if d.promoting:
        return None
    return promotion_blocker_of(view, d.target_slots or canary_slots(view), "canary")


def stable_of(d: Deployment) -> int | None:
    """Promoted (or promoting), the new revision is what serves; before, the stable one."""
    return d.to_revision if d.promoting else d.from_revision


def _route_extras(d: Deployment, spec: ServiceSpec | None) -> RouteExtras:
    """Sticky sessions while stable and canary are both weighted. Not only while active: a
    failed canary keeps weights (stable 100, canary 0) so that its sticky clients are moved
    back with a new cookie; a promoted one has none, and leftover cookies are then ignored.
    The header routes of the steps reached so far, while the canary runs: none once it is
    promoting, aborted or ended."""
    canary = spec.deploy.canary if spec is not None else None
    if canary is None:
        return RouteExtras()
    sticky = canary.sticky_sessions and len(d.weights) >= 2
    routes: tuple[HeaderRoute, ...] = ()
    if d.phase.active and not d.promoting:
        reached = canary.steps[: d.canary_step]
        routes = tuple(s.set_header_route for s in reached if s.set_header_route is not None)
    return RouteExtras(sticky_cookie=canary.sticky_cookie if sticky else None, header_routes=routes)


def preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    given = spec.deploy.canary or CanaryConfig()
    cfg = given.with_defaults()
    n = spec.replicas
    k = canary_count(cfg, n)
    steps = [PlannedStep(f"start {k} canary task(s) beside {n} stable", {"old": n, "new": k},
                         {"old": 100, "new": 0})]  # fmt: skip
    at: float | None = 0.0
    weight = 0
    analysis = cfg.analysis
    window = f"every {analysis.interval:g}s: {judged_on(analysis)}" if analysis else ""
    for i, step in enumerate(cfg.steps, 1):
        if step.set_weight is not None:
            weight = step.set_weight
        judged = window if weight else ""
        if step.set_header_route is not None:
            steps.append(
                PlannedStep(f"step {i}: header route {step.set_header_route.describe()} to "
                            f"revision {new}", {"old": n, "new": k},
                            {"old": 100 - weight, "new": weight}, judged, at)
            )  # fmt: skip
        elif step.set_weight is not None:
            steps.append(
                PlannedStep(f"step {i}: {weight}% to revision {new}", {"old": n, "new": k},
                            {"old": 100 - weight, "new": weight}, judged, at)
            )  # fmt: skip
        elif isinstance(step.pause, dict):
            at = None
            steps.append(PlannedStep(f"step {i}: pause until `warren deploy promote`",
                                     {"old": n, "new": k}, {"old": 100 - weight, "new": weight},
                                     judged, None))  # fmt: skip
        else:
            assert step.pause is not None
            at = None if at is None else at + step.pause
            steps.append(PlannedStep(f"step {i}: pause {step.pause:g}s", {"old": n, "new": k},
                                     {"old": 100 - weight, "new": weight}, judged, at))  # fmt: skip
    steps.append(
        PlannedStep(f"promote: revision {new} on all {n} slots, stable retired",
                    {"old": 0, "new": n}, {"new": 100}, "", at)
    )  # fmt: skip
    notes = [f"the stable revision keeps its {n} tasks until promotion"]
    if given.defaulted:
        notes.append(
            "no canary steps given: the default 10% → 50% → 100%, each weight judged for one "
            "analysis window (too few requests pauses the release)"
        )
    return RolloutPlan("canary", revision, new, tuple(steps), 2 * n, at, tuple(notes))


def analysis_of(spec: ServiceSpec | None) -> Analysis | None:
    canary = spec.deploy.canary if spec is not None else None
    return (canary or CanaryConfig()).with_defaults().analysis


CANARY = StrategyKind(
    name="canary",
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
