"""Plan before apply: the rollout a change would perform, step by step, without performing it.
Pure. Used by ``warren deploy plan`` (and the API's ``POST /v1/services/NAME/plan``).

Times are the earliest possible — what the configuration itself imposes (monitor periods,
delays, pauses, analysis windows); the tasks' own start-up time comes on top of each batch or
step that starts tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..domain.specs import Analysis, BlueGreenConfig, CanaryConfig, ServiceSpec, Strategy
from .strategies.traffic import canary_count

__all__ = ["PlannedStep", "RolloutPlan", "plan_rollout"]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    description: str
    tasks: dict[str, int]
    """Tasks per revision (``old`` / ``new``) once the step is done."""
    weights: dict[str, int] = field(default_factory=dict)
    """Traffic share per revision, when the release sets weights."""
    analysis: str = ""
    earliest_at: float | None = 0.0
    """Seconds after the start at which this step can be done at the earliest (None: it waits
    for a person)."""


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    strategy: str
    from_revision: int
    to_revision: int | None
    steps: tuple[PlannedStep, ...]
    peak_tasks: int
    earliest_finish: float | None
    notes: tuple[str, ...] = ()


def plan_rollout(current: ServiceSpec, revision: int, new: ServiceSpec) -> RolloutPlan:
    """The rollout that would move ``current`` (stored as ``revision``) to ``new``."""
    n = new.replicas
    if current.same_template(new):
        note = "no new revision: only replicas change" if current != new else "nothing changes"
        step = PlannedStep(f"scale to {n}", {"old": n})
        return RolloutPlan("none", revision, None, (step,), max(n, current.replicas), 0.0, (note,))
    strategy = new.deploy.strategy
    if strategy == Strategy.CANARY:
        return _canary(new, revision)
    if strategy == Strategy.BLUE_GREEN:
        return _blue_green(new, revision)
    return _rolling(new, revision)


def _rolling(spec: ServiceSpec, revision: int) -> RolloutPlan:
    cfg = spec.deploy.update_config
    n = spec.replicas
    per_batch = cfg.parallelism or max(n, 1)
    batches = math.ceil(n / per_batch) if n else 0
    steps = []
    at = 0.0
    for b in range(batches):
        first, last = b * per_batch + 1, min(n, (b + 1) * per_batch)
        at += (cfg.delay if b else 0.0) + cfg.monitor
        steps.append(
            PlannedStep(
                f"batch {b + 1}/{batches}: slots {first}-{last} to revision {revision + 1}",
                {"old": n - last, "new": last},
                earliest_at=at,
            )
        )
    surge = per_batch if cfg.order == "start-first" else 0
    return RolloutPlan(
        "rolling", revision, revision + 1, tuple(steps), n + surge, at,
        (f"{cfg.order}: at most {n + surge} tasks at once, at least "
         f"{n if surge else n - per_batch} ready",),
    )  # fmt: skip


def _judged_on(analysis: Analysis) -> str:
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


def _canary(spec: ServiceSpec, revision: int) -> RolloutPlan:
    cfg = spec.deploy.canary or CanaryConfig()
    n = spec.replicas
    k = canary_count(cfg, n)
    new = revision + 1
    steps = [PlannedStep(f"start {k} canary task(s) beside {n} stable", {"old": n, "new": k},
                         {"old": 100, "new": 0})]  # fmt: skip
    at: float | None = 0.0
    weight = 0
    analysis = cfg.analysis
    window = f"every {analysis.interval:g}s: {_judged_on(analysis)}" if analysis else ""
    for i, step in enumerate(cfg.steps, 1):
        if step.set_weight is not None:
            weight = step.set_weight
            steps.append(
                PlannedStep(f"step {i}: {weight}% to revision {new}", {"old": n, "new": k},
                            {"old": 100 - weight, "new": weight}, window if weight else "", at)
            )  # fmt: skip
        elif isinstance(step.pause, dict):
            at = None
            steps.append(PlannedStep(f"step {i}: pause until `warren deploy promote`",
                                     {"old": n, "new": k}, {"old": 100 - weight, "new": weight},
                                     window if weight else "", None))  # fmt: skip
        else:
            assert step.pause is not None
            at = None if at is None else at + step.pause
            steps.append(PlannedStep(f"step {i}: pause {step.pause:g}s", {"old": n, "new": k},
                                     {"old": 100 - weight, "new": weight},
                                     window if weight else "", at))  # fmt: skip
    steps.append(
        PlannedStep(f"promote: revision {new} on all {n} slots, stable retired",
                    {"old": 0, "new": n}, {"new": 100}, "", at)
    )  # fmt: skip
    return RolloutPlan("canary", revision, new, tuple(steps), 2 * n, at,
                       (f"the stable revision keeps its {n} tasks until promotion",))  # fmt: skip


def _blue_green(spec: ServiceSpec, revision: int) -> RolloutPlan:
    cfg = spec.deploy.blue_green or BlueGreenConfig()
    n = spec.replicas
    new = revision + 1
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
