"""The A/B test. Pure.

Two revisions at a fixed split for a set time, then the better one: the stable revision (A)
keeps all its replicas; beside it, in slots 1..k, run k tasks of the new revision (B:
``abTest.replicas``, else enough for its weight). Once they are ready, ``weight`` percent of the
new clients go to B — each client kept on the revision that first answered it, by a cookie
(``stickyCookie``) — for ``duration``. Every ``interval`` both revisions' figures since the
test began are logged side by side (``ExperimentFigures``: requests, success rate, median and
p95 latency, and the p-values so far); ``warren deploy status`` shows the last.

At the end, ``planning.analysis.compare`` judges the whole test: error rates first, then
latencies, each both ways. B significantly better → ``ExperimentWon`` and B is promoted to
every slot, as a canary is; A better, or no difference that counts (or fewer than
``minRequests`` requests of either) → ``ExperimentLost``: B gets weight 0 and goes, A — never
touched — stays the service's revision, and the deployment ends failed (B was not released).

``warren deploy promote`` ends the test early for B (refused while B's tasks are not ready,
unless forced); ``deploy abort`` ends it for A; a pause holds the split, and a resume starts
the test over. A task of B that fails (or is not ready within ``healthyDeadline``) fails the
release at once, as a canary's does.

Worked example (``weight: 50, duration: 1h, interval: 5m``): B's tasks start → ready: 50% →
figures at 5m, 10m … 55m → at 1h, A 30/1000 errors, B 12/1000: B wins (p = 0.002, confidence
99.8%) → promoted.
"""

from __future__ import annotations

import math

from ...domain import transitions
from ...domain.deployments import Deployment, Phase, Reason
from ...domain.durations import format_duration
from ...domain.specs import AbTestConfig, Analysis, ServiceSpec
from ..analysis import Comparison, Sample, compare
from ..previews import PlannedStep, RolloutPlan
from ..rollouts import RolloutView, Step, by_slot, earliest
from .kinds import RouteExtras, StrategyKind
from .traffic import (
    promote_slots,
    promotion_blocker_of,
    ready_in,
    release_tasks_failed,
    side_by_side,
    weights_of,
)

__all__ = ["AB_TEST", "next_step", "preview"]


def _config(spec_or_view: AbTestConfig | None) -> AbTestConfig:
    return spec_or_view or AbTestConfig()


def b_count(cfg: AbTestConfig, replicas: int) -> int:
    """``replicas``, else enough tasks for B's weight: 10 replicas at 50% → 5."""
    if cfg.replicas is not None:
        return cfg.replicas
    return max(1, min(replicas, math.ceil(replicas * cfg.weight / 100)))


def next_step(view: RolloutView) -> Step:
    d = view.deployment
    if d.phase not in (Phase.PROGRESSING, Phase.AWAITING_PROMOTION):
        return Step(d)  # paused: the split holds
    cfg, now = _config(view.ab_test), view.now
    stop, health_due = release_tasks_failed(view, d)
    if stop is not None:
        return stop
    if d.promoting:
        message = f"A/B test: revision {d.to_revision} on {view.replicas}/{view.replicas} slots"
        step = promote_slots(view, d, Reason.COMPLETE, message)
        return Step(step.deployment, earliest(step.requeue_at, health_due), step.checks)
    if d.promote:
        return _promote(view, d, Reason.PROMOTED, "A/B test ended by the operator", {})
    slots = tuple(range(1, b_count(cfg, view.replicas) + 1))
    if d.target_slots != slots:
        first = not d.target_slots
        message = f"A/B test: {len(slots)} task(s) of revision {d.to_revision} beside " + (
            f"{view.replicas} of revision {d.from_revision}" if first else "the scaled service"
        )
        d = d.decide(now, Reason.CANARY_SCALED, message, target_slots=slots)
        return Step(d, requeue_at=health_due)
    ready = ready_in(by_slot(view.live_tasks), d.to_revision, slots)
    if d.pause_until is None:
        return _begin(d, cfg, now, ready, health_due)
    if now >= d.pause_until:
        return _conclude(view, d, cfg)
    if d.analysis_at is not None and now >= d.analysis_at + cfg.interval:
        result = _compared(view, d, cfg)
        so_far = f"{result.reason}; ends in {format_duration(round(d.pause_until - now))}"
        d = d.decide(
            now, Reason.EXPERIMENT_FIGURES, f"A/B test so far: {so_far}",
            measured=_measured(d, result), analysis_at=now,
        )  # fmt: skip
    due = (d.analysis_at or now) + cfg.interval
    return Step(d, requeue_at=earliest(earliest(due, d.pause_until), health_due))


def _begin(
    d: Deployment, cfg: AbTestConfig, now: float, ready: bool, health_due: float | None
) -> Step:
    """B's tasks ready: the split starts, and the test's clock."""
    if not ready:
        return Step(d, requeue_at=health_due)
    a, b = d.from_revision, d.to_revision
    message = (
        f"A/B test: {cfg.weight}% of new clients to revision {b}, {100 - cfg.weight}% to "
        f"revision {a}, each kept on its own (cookie {cfg.sticky_cookie}), for "
        f"{format_duration(cfg.duration)}"
    )
    d = d.decide(
        now, Reason.EXPERIMENT_STARTED, message, weights=weights_of(a, b, cfg.weight),
        step=d.step + 1, batch_started_at=now, analysis_at=now, pause_until=now + cfg.duration,
        progress_at=now,
    )  # fmt: skip
    return Step(d, requeue_at=earliest(now + cfg.interval, health_due))


def _compared(view: RolloutView, d: Deployment, cfg: AbTestConfig) -> Comparison:
    a = view.samples.get(d.from_revision or 0, Sample(0, 0))
    b = view.samples.get(d.to_revision, Sample(0, 0))
    return compare(a, b, cfg.min_requests, cfg.significance)


def _measured(d: Deployment, result: Comparison) -> dict[str, object]:
    """A decision's figures: each revision's, the p-values, the winner so far and the end."""
    measured = dict(result.measured)
    measured["a"] = {"revision": d.from_revision, **measured["a"]}
    measured["b"] = {"revision": d.to_revision, **measured["b"]}
    winner = {"a": d.from_revision, "b": d.to_revision}.get(result.winner or "")
    measured.update(winner=winner, confidence=round(result.confidence, 4), endsAt=d.pause_until)
    return measured


def _conclude(view: RolloutView, d: Deployment, cfg: AbTestConfig) -> Step:
    """The test is over: B promoted if it won; else A kept, B gone."""
    result = _compared(view, d, cfg)
    measured = _measured(d, result)
    now, a, b = view.now, d.from_revision, d.to_revision
    if result.winner == "b":
        why = f"A/B test: revision {b} won ({result.reason}; confidence {result.confidence:.1%})"
        return _promote(view, d, Reason.EXPERIMENT_WON, why, measured)
    if result.winner == "a":
        why = f"revision {a} won ({result.reason}; confidence {result.confidence:.1%})"
    else:
        why = f"no winner: {result.reason}"
    d = d.decide(now, Reason.EXPERIMENT_FIGURES, f"A/B test over: {why}", measured=measured)
    assert a is not None
    return Step(transitions.fail_and_revert(d, now, Reason.EXPERIMENT_LOST, f"A/B test: {why}", a))


def _promote(
    view: RolloutView, d: Deployment, reason: Reason, message: str, measured: dict[str, object]
) -> Step:
    d = d.decide(
        view.now, reason, f"{message}: promoting revision {d.to_revision}", measured=measured,
        promoting=True, promote="", target_slots=tuple(range(1, view.replicas + 1)),
        progress_at=view.now,
    )  # fmt: skip
    return Step(d, requeue_at=view.now)


def promotion_blocker(view: RolloutView) -> str | None:
    d = view.deployment
    if d.promoting:
        return None
    slots = d.target_slots or tuple(range(1, b_count(_config(view.ab_test), view.replicas) + 1))
    return promotion_blocker_of(view, slots, f"revision {d.to_revision}")


def stable_of(d: Deployment) -> int | None:
    return d.to_revision if d.promoting else d.from_revision


def _route_extras(d: Deployment, spec: ServiceSpec | None) -> RouteExtras:
    """Sticky sessions from the start of the test on, while both revisions are weighted (a
    test that ended without a winner keeps A at 100 and B at 0, so that B's clients are moved
    back with a new cookie). Not before: a client seen while B's tasks start must not be kept
    on A for the whole test."""
    cfg = _config(spec.deploy.ab_test if spec is not None else None)
    began = d.batch_started_at is not None and len(d.weights) >= 2
    return RouteExtras(sticky_cookie=cfg.sticky_cookie if began else None)


def analysis_of(spec: ServiceSpec | None) -> Analysis | None:
    """What the controller needs to hand the planner both revisions' samples."""
    cfg = _config(spec.deploy.ab_test if spec is not None else None)
    return Analysis(interval=cfg.interval, min_requests=cfg.min_requests)


def sample_window(d: Deployment, analysis: Analysis, now: float) -> float:
    """Since the test began (the whole test, at its end)."""
    start = d.batch_started_at if d.pause_until is not None else None
    return max(now - start, 1.0) if start is not None else analysis.interval


def preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    cfg = _config(spec.deploy.ab_test)
    n = spec.replicas
    k = b_count(cfg, n)
    w = cfg.weight
    split = {"old": 100 - w, "new": w}
    steps = (
        PlannedStep(f"start {k} task(s) of revision {new} beside {n} of revision {revision}",
                    {"old": n, "new": k}, {"old": 100, "new": 0}),
        PlannedStep(f"A/B test: {w}% of new clients to revision {new} for "
                    f"{format_duration(cfg.duration)}, each kept on its revision (cookie "
                    f"{cfg.sticky_cookie})", {"old": n, "new": k}, split,
                    f"figures of both every {format_duration(cfg.interval)}", 0.0),
        PlannedStep(f"the winner (error rate, then latency; significance {cfg.significance:g}, "
                    f"at least {cfg.min_requests} requests each): revision {new} on all {n} "
                    f"slots — or revision {revision} kept", {"old": 0, "new": n}, {"new": 100},
                    "", cfg.duration),
    )  # fmt: skip
    notes = (f"revision {revision} keeps its {n} tasks until the end of the test",)
    return RolloutPlan("ab-test", revision, new, steps, n + max(k, n), cfg.duration, notes)


AB_TEST = StrategyKind(
    name="ab-test",
    next_step=next_step,
    preview=preview,
    slot_targets=side_by_side,
    analysis=analysis_of,
    route_extras=_route_extras,
    promotable=True,
    weighted=True,
    promotion_blocker=promotion_blocker,
    sample_window=sample_window,
    stable_of=stable_of,
)
