"""Rollout strategies: the registry, and what is the same for all of them. Pure.

Each strategy is one ``StrategyKind`` record (``kinds.py``) in one module — ``rolling``,
``canary``, ``blue_green``, ``ab_test`` — registered here by its name; a rollback deployment
has its own planner (``rollback``: instant when the old revision is still warm). Everything
else looks a strategy up with ``kind_of`` and never tests its name: the deployment controller
(its planner, its analysis), the reconciler (``slot_revisions``), the routing controller
(``route_extras``), ``deploy plan`` (``preview``) and ``deploy promote`` (``promotable``,
``promotion_blocker``).

A new strategy: a module with its planner and preview and a ``StrategyKind``; a line here; its
name in ``domain.specs.Strategy`` — or, in a test, ``register`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...domain.deployments import Deployment, DeploymentKind, Phase
from ...domain.services import Service
from ...domain.specs import register_strategy_name, unregister_strategy_name
from ...domain.tasks import Task
from ..jobs import held_slots, holds_new_tasks, pre_deploy_step
from ..reconciling import SlotTarget
from ..rollouts import RolloutView, Step, by_slot
from .ab_test import AB_TEST
from .blue_green import BLUE_GREEN
from .blue_green import next_step as blue_green_step
from .canary import CANARY
from .canary import next_step as canary_step
from .kinds import RouteExtras, StrategyKind
from .rollback import next_step as rollback_step
from .rolling import ROLLING
from .rolling import next_step as rolling_step

__all__ = [
    "STRATEGIES",
    "RouteExtras",
    "StrategyKind",
    "blue_green_step",
    "canary_step",
    "drives",
    "kind_of",
    "plan_step",
    "register",
    "rollback_step",
    "rolling_step",
    "slot_revisions",
    "unregister",
]

STRATEGIES: dict[str, StrategyKind] = {}
"""Every strategy by its name (``deploy.strategy``)."""


def register(kind: StrategyKind) -> None:
    STRATEGIES[kind.name] = kind
    register_strategy_name(kind.name)


def unregister(name: str) -> None:
    STRATEGIES.pop(name, None)
    unregister_strategy_name(name)


for _kind in (ROLLING, CANARY, BLUE_GREEN, AB_TEST):
    register(_kind)


def kind_of(d: Deployment) -> StrategyKind:
    """The strategy that drives ``d``: its own for an update that starts from a revision; a
    rollback, or a first deployment with nothing to compare against, moves slot by slot."""
    if d.kind != DeploymentKind.UPDATE or d.from_revision is None:
        return ROLLING
    return STRATEGIES.get(str(d.strategy), ROLLING)


def plan_step(view: RolloutView) -> Step:
    d = view.deployment
    if d.kind == DeploymentKind.ROLLBACK:
        return rollback_step(view)
    # Whatever the strategy, an update with a pre-deploy job waits for it.
    waiting = pre_deploy_step(view)
    if waiting is not None:
        return waiting
    return kind_of(d).next_step(view)


def drives(service: Service, deployment: Deployment | None) -> bool:
    """Whether ``deployment`` says which revision each of the service's slots runs: it moves
    the service to its current revision and has not succeeded (after that, every slot runs the
    current revision)."""
    return (
        deployment is not None
        and deployment.to_revision == service.revision
        and deployment.phase != Phase.SUCCEEDED
    )


def slot_revisions(
    deployment: Deployment | None, tasks: Iterable[Task], replicas: int
) -> dict[int, SlotTarget]:
    """The revision each slot should run while ``deployment`` drives the service: its
    strategy's slot targets (canary, blue/green: both revisions side by side), else slot by
    slot — the deployment's target slots run ``to_revision``; every other slot keeps what it
    runs: the revision it is to keep if it has a task of it (an update: the one it started
    from — never a canary that a newer update dropped, even while the stable task restarts; a
    rollback: the one it goes back to), else the revision of its newest live task, else of its
    newest task (a slot the rollout has not reached yet is left alone, even if its task crashes
    and is restarted); a slot with no task at all (scaled up mid-rollout) gets
    ``to_revision``. Before an update's pre-deploy job has passed, no slot runs its new
    revision (``jobs.held_slots``)."""
    if deployment is None:
        return {}
    if holds_new_tasks(deployment):
        return held_slots(deployment, tasks, replicas)
    targets_of = kind_of(deployment).slot_targets(deployment, replicas)
    if targets_of is not None:
        return dict(targets_of)
    targets = set(deployment.target_slots)
    slots = by_slot(t for t in tasks if t.wants_running)
    # A rollback its planner has not looked at yet may be an instant switch back to warm tasks
    # (blue beside green): until it has decided, a slot keeps every revision it runs.
    rollback = deployment.kind == DeploymentKind.ROLLBACK
    undecided = rollback and not targets
    keep = deployment.to_revision if rollback else deployment.from_revision
    result: dict[int, SlotTarget] = {}
    for slot in range(1, replicas + 1):
        group = slots.get(slot)
        if slot in targets or not group:
            result[slot] = deployment.to_revision
            continue
        live = [t for t in group if t.state.active]
        running = tuple(dict.fromkeys(t.revision for t in live))
        if undecided and len(running) > 1:
            result[slot] = running
        elif keep in running or (keep is not None and any(t.revision == keep for t in group)):
            result[slot] = keep
        else:
            # The live task's revision first: a crashed task of the revision being left must
            # not come back while the slot still runs a live task of another one.
            result[slot] = (live or group)[0].revision
    return result
