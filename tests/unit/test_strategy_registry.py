"""A strategy is one record of the registry: this file adds a toy one — every slot at once —
with nothing else changed, and the whole engine runs it: the spec accepts its name, the
deployment controller plans with it, the reconciler moves the slots it names, ``deploy plan``
previews it, ``deploy promote`` knows it cannot be promoted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import SimCluster
from warren.domain import transitions
from warren.domain.base import parse_model
from warren.domain.deployments import Phase, Reason
from warren.domain.errors import ValidationError
from warren.domain.requests import Answer, Intent
from warren.domain.specs import ServiceSpec
from warren.planning.previewing import plan_rollout
from warren.planning.previews import PlannedStep, RolloutPlan
from warren.planning.rollouts import RolloutView, Step, by_slot, slot_done
from warren.planning.strategies import StrategyKind, register, unregister

# --- the toy strategy: all of it ------------------------------------------------------------


def all_at_once(view: RolloutView) -> Step:
    """Move every slot in one batch; succeed when all are done."""
    d, now = view.deployment, view.now
    if d.phase != Phase.PROGRESSING:
        return Step(d)
    slots = tuple(range(1, view.replicas + 1))
    if not d.target_slots:
        d = d.decide(now, Reason.BATCH_STARTED, "every slot at once", step=1, target_slots=slots)
        return Step(d)
    tasks = by_slot(view.live_tasks)
    if all(slot_done(tasks.get(s, []), d.to_revision, 0.0, now) for s in slots):
        return Step(transitions.finish(d, now, Reason.COMPLETE, "all at once: done"))
    return Step(d)


def preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    n = spec.replicas
    step = PlannedStep(f"every slot to revision {new} at once", {"new": n})
    return RolloutPlan("all-at-once", revision, new, (step,), 2 * n, 0.0)


ALL_AT_ONCE = StrategyKind(name="all-at-once", next_step=all_at_once, preview=preview)


# --- the engine runs it ---------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    register(ALL_AT_ONCE)
    cluster = await SimCluster(nodes=2).start()
    try:
        yield cluster
    finally:
        await cluster.stop()
        unregister(ALL_AT_ONCE.name)


def spec(**env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"], "driver": "fake", "replicas": 4,
            "env": {"FAKE_READY_AFTER": "1s", **env},
            "deploy": {"strategy": "all-at-once"},
        }
    )  # fmt: skip


async def test_a_strategy_registered_in_one_file_runs_end_to_end(sim: SimCluster) -> None:
    await sim.cluster.create_service(spec(VERSION="v1"))
    await sim.advance(2)
    await sim.cluster.update_service("web", lambda s: s.model_copy(update={"env": {
        **s.env, "VERSION": "v2"}}))  # fmt: skip
    await sim.quiesce()
    # One batch: every slot has a task of revision 2 starting at once.
    starting = {t.slot for t in await sim.tasks("web") if t.revision == 2 and t.state.active}
    assert starting == {1, 2, 3, 4}
    await sim.advance(2)
    (d,) = await sim.cluster.list_deployments("web")
    assert (d.strategy, d.phase, d.step) == ("all-at-once", Phase.SUCCEEDED, 1)
    live = [t for t in await sim.tasks("web") if t.state.active]
    assert sorted(t.slot for t in live) == [1, 2, 3, 4] and {t.revision for t in live} == {2}

    # deploy plan previews it; deploy promote knows it has nothing to promote.
    service, _ = await sim.cluster.get_service("web")
    plan = plan_rollout(service.spec, 2, spec(VERSION="v3"), 3)
    assert plan.steps[0].description == "every slot to revision 3 at once"
    await sim.cluster.update_service("web", lambda s: spec(VERSION="v3", FAKE_READY_AFTER="1h"))
    asked = await sim.cluster.ask("web", Intent.PROMOTE)
    await sim.quiesce()
    answered = await sim.cluster.answer_of(asked, 1.0)
    assert answered is not None and answered.answer == Answer.REFUSED
    assert "all-at-once update: nothing to promote" in answered.message


def test_an_unknown_strategy_is_refused_with_the_names_known() -> None:
    register(ALL_AT_ONCE)
    try:
        data = spec().model_dump(by_alias=True)
        data["deploy"]["strategy"] = "big-bang"
        with pytest.raises(ValidationError, match="all-at-once, blue-green, canary, rolling"):
            parse_model(ServiceSpec, data)
    finally:
        unregister(ALL_AT_ONCE.name)
    with pytest.raises(ValidationError, match="unknown strategy 'all-at-once'"):
        parse_model(ServiceSpec, data | {"deploy": {"strategy": "all-at-once"}})
