"""A/B tests on the whole engine in process (store, controllers, agents on the fake driver, a
fake clock, fixed traffic figures per revision): the split with sticky sessions for the set
time, the figures of both side by side every interval, then the winner promoted or the stable
revision kept; ``deploy promote`` ends it early. And the judge itself, both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import RecordingPlane, SimCluster, SteadyTraffic
from warren.domain.deployments import Deployment, Phase, Reason
from warren.domain.requests import Answer, Intent
from warren.domain.specs import ServiceSpec
from warren.planning.analysis import Sample, compare
from warren.planning.previewing import plan_rollout

AB = {"strategy": "ab-test", "abTest": {"weight": 50, "duration": "60s", "interval": "20s"}}


def spec(replicas: int = 4, **env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"], "driver": "fake", "replicas": replicas,
            "env": {"FAKE_READY_AFTER": "1s", **env},
            "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
            "deploy": {**AB, "updateConfig": {"monitor": "0s"}},
        }
    )  # fmt: skip


@pytest.fixture
async def traffic() -> SteadyTraffic:
    return SteadyTraffic()


@pytest.fixture
async def sim(traffic: SteadyTraffic) -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=2, dataplane=RecordingPlane(), metrics=traffic).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def plane(sim: SimCluster) -> RecordingPlane:
    assert isinstance(sim.dataplane, RecordingPlane)
    return sim.dataplane


async def newest(sim: SimCluster) -> Deployment:
    return (await sim.cluster.list_deployments("web"))[-1]


async def start_test(sim: SimCluster) -> None:
    """v1 on 4 slots, then v2 under test: 2 tasks of it, 50% of new clients."""
    await sim.cluster.create_service(spec(VERSION="v1"))
    await sim.advance(2)
    await sim.cluster.update_service("web", lambda _old: spec(VERSION="v2"))
    await sim.quiesce()
    # B's tasks are starting: no split yet, and no client kept on A by a cookie meanwhile.
    assert plane(sim).weights("web") == {1: 100, 2: 0}
    assert plane(sim).routes["web"].sticky_cookie is None
    await sim.advance(2)
    d = await newest(sim)
    assert d.decisions[-1].reason == Reason.EXPERIMENT_STARTED, d.message
    assert plane(sim).weights("web") == {1: 50, 2: 50}
    assert plane(sim).routes["web"].sticky_cookie == "warren-ab"
    live = [t for t in await sim.tasks("web") if t.state.active and t.wants_running]
    assert sorted(t.revision for t in live) == [1, 1, 1, 1, 2, 2]


async def applied(sim: SimCluster, intent: Intent) -> None:
    """The operator's ``intent`` asked, and applied."""
    asked = await sim.cluster.ask("web", intent)
    await sim.quiesce()
    answered = await sim.cluster.answer_of(asked, 1.0)
    assert answered is not None and answered.answer == Answer.APPLIED


def _figures(d: Deployment) -> list[dict[str, Any]]:
    return [x.measured for x in d.decisions if x.reason == Reason.EXPERIMENT_FIGURES]


async def test_the_better_new_revision_wins_and_is_promoted(
    sim: SimCluster, traffic: SteadyTraffic
) -> None:
    traffic.by_revision = {1: (1000, 30), 2: (1000, 12)}
    await start_test(sim)
    await sim.advance(21)
    (first,) = _figures(await newest(sim))
    assert first["a"]["revision"] == 1 and first["b"]["revision"] == 2
    assert (first["a"]["successRate"], first["b"]["successRate"]) == (0.97, 0.988)
    assert first["winner"] == 2 and first["endsAt"] is not None
    await sim.advance(20)
    assert (await newest(sim)).phase == Phase.PROGRESSING  # the whole test, even with a leader
    await sim.advance(25)
    d = await newest(sim)
    assert d.phase == Phase.SUCCEEDED, d.message
    won = next(x for x in d.decisions if x.reason == Reason.EXPERIMENT_WON)
    assert "revision 2 won (error rate 3.00% vs 1.20%" in won.message
    assert won.measured["confidence"] > 0.99
    assert {t.revision for t in await sim.tasks("web") if t.state.active} == {2}


@pytest.mark.parametrize(
    ("figures", "why"),
    [
        ({1: (1000, 10), 2: (1000, 11)}, "no winner: no significant difference"),
        ({1: (1000, 5), 2: (1000, 40)}, "revision 1 won (error rate 0.50% vs 4.00%"),
        ({1: (1000, 5), 2: (50, 0)}, "no winner: 1000 and 50 requests, fewer than minRequests"),
    ],
)
async def test_without_a_better_new_revision_the_stable_one_is_kept(
    sim: SimCluster, traffic: SteadyTraffic, figures: dict[int, tuple[int, int]], why: str
) -> None:
    traffic.by_revision = figures
    await start_test(sim)
    await sim.advance(61)
    d = await newest(sim)
    assert (d.phase, d.reverted_to) == (Phase.FAILED, 1)
    assert d.decisions[-1].reason == Reason.EXPERIMENT_LOST
    assert why in d.message, d.message
    await sim.advance(15)
    assert {t.revision for t in await sim.tasks("web") if t.state.active} == {1}
    service, _ = await sim.cluster.get_service("web")
    assert service.revision == 1


async def test_promote_ends_the_test_early_for_the_new_revision(sim: SimCluster) -> None:
    await start_test(sim)
    await applied(sim, Intent.PROMOTE)
    await sim.advance(10)
    d = await newest(sim)
    assert d.phase == Phase.SUCCEEDED
    assert any("A/B test ended by the operator" in x.message for x in d.decisions)


def test_the_judge_names_the_better_revision_both_ways() -> None:
    fast = [0.010 + i * 1e-5 for i in range(400)]
    slow = [0.013 + i * 1e-5 for i in range(400)]
    b_faster = compare(Sample(400, 4, slow), Sample(400, 4, fast), 100, 0.05)
    assert b_faster.winner == "b" and b_faster.confidence > 0.99
    assert "median latency" in b_faster.reason
    a_faster = compare(Sample(400, 4, fast), Sample(400, 4, slow), 100, 0.05)
    assert a_faster.winner == "a"
    same = compare(Sample(400, 4, fast), Sample(400, 4, fast), 100, 0.05)
    assert same.winner is None and same.measured["a"] == same.measured["b"]


def test_deploy_plan_shows_the_split_and_the_end() -> None:
    plan = plan_rollout(spec(VERSION="v1"), 1, spec(VERSION="v2"))
    assert plan.strategy == "ab-test"
    assert [s.weights for s in plan.steps] == [
        {"old": 100, "new": 0}, {"old": 50, "new": 50}, {"new": 100},
    ]  # fmt: skip
    assert "for 1m" in plan.steps[1].description
    assert plan.earliest_finish == 60


async def test_abort_ends_the_test_for_the_stable_revision(sim: SimCluster) -> None:
    await start_test(sim)
    await applied(sim, Intent.ABORT)
    await sim.advance(15)
    service, _ = await sim.cluster.get_service("web")
    assert service.revision == 1
    assert {t.revision for t in await sim.tasks("web") if t.state.active} == {1}
    assert plane(sim).revisions("web") == {1}
