"""The corners of a release, each a fixed scenario on the whole engine in process (store,
controllers, agents on the fake driver, a fake clock): an update during a canary, going back to
the stable spec, promote before the canary is healthy, the status of a release rolled back, a
node down mid-rollout, ``failureAction: continue``, the monitor window, a canary and a scale,
the targets of rollbacks. Each names the item of issue 12 it pins down; each failed before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import RecordingPlane, SimCluster, SteadyTraffic
from warren.domain import transitions
from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason
from warren.domain.errors import ConflictError, NotFoundError
from warren.domain.requests import Answer, Intent
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task
from warren.store.cluster import encode, sequence_of

READY = {"FAKE_READY_AFTER": "1s"}


def spec(replicas: int = 4, deploy: dict[str, Any] | None = None, **env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"], "driver": "fake", "replicas": replicas,
            "env": {**READY, **env},
            "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
            "deploy": deploy or {},
        }
    )  # fmt: skip


CANARY = {
    "strategy": "canary",
    "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]},
    "updateConfig": {"monitor": "0s"},
}


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=2, dataplane=RecordingPlane(), metrics=SteadyTraffic()).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def plane(sim: SimCluster) -> RecordingPlane:
    assert isinstance(sim.dataplane, RecordingPlane)
    return sim.dataplane


async def live(sim: SimCluster) -> list[Task]:
    return [t for t in await sim.tasks("web") if t.state.active and t.wants_running]


async def history(sim: SimCluster) -> list[Deployment]:
    return await sim.cluster.list_deployments("web")


async def apply(sim: SimCluster, new: ServiceSpec) -> None:
    await sim.cluster.update_service("web", lambda _old: new)
    await sim.quiesce()


async def ask(sim: SimCluster, intent: Intent, **kw: bool) -> tuple[Answer, str]:
    asked = await sim.cluster.ask("web", intent, **kw)
    await sim.quiesce()
    answered = await sim.cluster.answer_of(asked, 1.0)
    assert answered is not None and answered.answer is not None
    return answered.answer, answered.message


async def canary_awaiting_promotion(sim: SimCluster, deploy: dict[str, Any] = CANARY) -> set[str]:
    """v1 on 4 slots; v2's canary at 25%, awaiting promotion. Returns v1's task ids."""
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    stable = {t.id for t in await live(sim)}
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(2)
    assert (await history(sim))[-1].phase == Phase.AWAITING_PROMOTION
    assert plane(sim).weights("web") == {1: 75, 2: 25}
    return stable


# --- item 1: an update while a canary awaits promotion --------------------------------------


async def test_an_update_during_a_canary_starts_from_the_stable_revision(sim: SimCluster) -> None:
    """Before: "1 → 2 superseded, 2 → 3", every v1 task "replaced by revision 2", weights
    {2: 75%, 3: 25%} — the unvalidated canary promoted by the next update."""
    stable = await canary_awaiting_promotion(sim)
    await apply(sim, spec(deploy=CANARY, VERSION="v3"))
    # At once: v2 gets no traffic, v3's canary has none yet, v1 keeps it all.
    assert plane(sim).weights("web") == {1: 100, 3: 0}
    assert 2 not in plane(sim).revisions("web")
    await sim.advance(2)
    canary, newer = (await history(sim))[-2:]
    assert (canary.phase, canary.to_revision) == (Phase.SUPERSEDED, 2)
    assert (newer.from_revision, newer.to_revision) == (1, 3)
    assert newer.phase == Phase.AWAITING_PROMOTION and newer.canary_step == 1
    assert plane(sim).weights("web") == {1: 75, 3: 25}
    tasks = await live(sim)
    assert {t.revision for t in tasks} == {1, 3}
    # The stable tasks were never touched: the same ones serve.
    assert {t.id for t in tasks if t.revision == 1} == stable


async def test_the_stable_spec_again_mid_canary_is_a_fast_track_rollback(sim: SimCluster) -> None:
    """Argo's TestFastRollback: weight 0 at once, canary tasks stopped, no new task, no step,
    no analysis, its own reason in the log."""
    stable = await canary_awaiting_promotion(sim)
    before = {t.id for t in await sim.tasks("web")}
    await sim.cluster.update_service("web", lambda _old: spec(deploy=CANARY, VERSION="v1"))
    # In the very write that changes the spec: all of the traffic to the stable revision.
    back = (await history(sim))[-1]
    assert back.weights == ((1, 100),)
    await sim.quiesce()
    assert plane(sim).revisions("web") == {1}
    service, _ = await sim.cluster.get_service("web")
    assert service.revision == 1
    await sim.advance(2)
    canary, back = (await history(sim))[-2:]
    assert (back.kind, back.cause, back.phase) == (
        DeploymentKind.ROLLBACK,
        "FastRollback",
        Phase.SUCCEEDED,
    )
    assert (back.from_revision, back.to_revision) == (2, 1)
    assert canary.phase == Phase.ROLLED_BACK and canary.rolled_back_by == back.id
    reasons = [x.reason for x in back.decisions]
    assert Reason.FAST_ROLLBACK in reasons
    assert not {Reason.WEIGHT_SET, Reason.BATCH_STARTED} & set(reasons)
    assert not [x for x in back.decisions if x.reason.startswith("Analysis")]
    assert back.step == 0
    after = await sim.tasks("web")
    assert {t.id for t in after} <= before  # no task started
    assert {t.id for t in after if t.state.active} == stable


# --- item 2: promote is guarded by health ---------------------------------------------------


async def test_promote_is_refused_while_the_canary_is_not_healthy(sim: SimCluster) -> None:
    deploy = {**CANARY, "canary": {**CANARY["canary"], "canaryReplicas": 2}}
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(deploy=deploy, VERSION="v2", FAKE_UNHEALTHY="1"))
    await sim.advance(0.5)
    before = (await history(sim))[-1]
    answer, message = await ask(sim, Intent.PROMOTE)
    assert answer == Answer.REFUSED
    assert message == "promote refused: 0/2 canary tasks healthy (--force to promote anyway)"
    assert (await history(sim))[-1] == before  # nothing changed
    answer, message = await ask(sim, Intent.PROMOTE, full=True, force=True)
    assert answer == Answer.APPLIED and "forced with 0/2 canary tasks healthy" in message


# --- item 3: the status of a release that failed --------------------------------------------


async def test_the_status_of_a_rolled_back_update_says_so(sim: SimCluster) -> None:
    """Before: the rollback deployment's "succeeded", and "3/3 ready" beside "1 failed"."""
    await sim.cluster.create_service(spec(replicas=3, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(replicas=3, VERSION="v2", FAKE_START_ERROR="no such image"))
    await sim.advance(10)
    status = await sim.cluster.deployment_status("web")
    update, rollback = await history(sim)
    assert status.deployment_id == update.id and status.kind == "update"
    assert status.phase == Phase.ROLLED_BACK and not status.succeeded
    assert (status.rollback_id, status.rollback_phase, status.rolled_back_to) == (
        rollback.id, Phase.SUCCEEDED, 1
    )  # fmt: skip
    assert (status.ready_tasks, status.desired_tasks) == (3, 3)
    assert status.tasks == {"running": 3}, status.tasks


# --- item 5: a failed canary's revert is one write ------------------------------------------


async def test_a_failed_canary_and_its_revert_are_one_write(sim: SimCluster) -> None:
    deploy = {**CANARY, "canary": {"steps": [{"setWeight": 25}, {"pause": "10s"}],
                                   "analysis": {"interval": "2s", "successRate": 0.9}}}  # fmt: skip
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    assert isinstance(sim.metrics, SteadyTraffic)
    sim.metrics.by_revision[2] = (100, 50)
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(6)
    failed = (await history(sim))[-1]
    assert failed.phase == Phase.FAILED and failed.reverted_to == 1
    service_kv = await sim.store.get("/services/web")
    deployment_kv = await sim.store.get(f"/deployments/web/{sequence_of(failed.id):08d}")
    assert service_kv is not None and deployment_kv is not None
    # The service went back to revision 1 in the very transaction that failed the canary.
    assert service_kv.mod_revision == deployment_kv.mod_revision
    assert (await sim.cluster.get_service("web"))[0].revision == 1


# --- item 7: a node down mid-rollout --------------------------------------------------------


async def test_a_rolling_update_does_not_wait_for_a_task_on_a_down_node(sim: SimCluster) -> None:
    """Before: the old task of slot 1, on the down node, stayed "desired shutdown, running",
    and the rollout waited at batch 1 until its progress deadline."""
    deploy = {"updateConfig": {"parallelism": 2, "monitor": "0s"}}
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    assert {t.node for t in await live(sim)} == {"n1", "n2"}
    await sim.agents.pop("n1").stop()
    await sim.advance(11)  # n1's heartbeat lease expires: down
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(10)
    update = (await history(sim))[-1]
    assert update.phase == Phase.SUCCEEDED, update.decisions[-3:]
    assert update.finished_at is not None and update.finished_at - update.started_at < 10
    on_n2 = [t for t in await live(sim) if t.node == "n2"]
    assert sorted(t.slot for t in on_n2 if t.revision == 2) == [1, 2, 3, 4]


# --- item 9: failureAction continue ---------------------------------------------------------


async def test_failure_action_continue_goes_on_and_counts_each_slot_once(
    sim: SimCluster,
) -> None:
    """Before: the failed slot was retried until the progress deadline, "5 of 4 failed"."""
    deploy = {"updateConfig": {"failureAction": "continue", "monitor": "0s"}}
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(deploy=deploy, VERSION="v2", FAKE_START_ERROR="no such image"))
    for _ in range(6):
        await sim.advance(10)
    update = (await history(sim))[-1]
    assert update.phase == Phase.SUCCEEDED, update.decisions[-3:]
    assert sorted(update.failed_slots) == [1, 2, 3, 4]
    assert len(update.failed_tasks) == 4
    assert all("of 4 slots failed" in x.message for x in update.decisions
               if x.reason == Reason.FAILURE_IGNORED)  # fmt: skip
    newest: dict[int, Task] = {}
    for t in sorted(await sim.tasks("web"), key=lambda t: t.created_at):
        if t.wants_running:
            newest[t.slot] = t
    assert {s: t.revision for s, t in newest.items()} == {1: 2, 2: 2, 3: 2, 4: 2}


# --- item 10: the monitor window bounds failures --------------------------------------------


async def test_a_crash_after_the_monitor_period_is_the_restart_policys(sim: SimCluster) -> None:
    """Before: with monitor 5s, a task that crashed 8 s after it started paused the update."""
    deploy = {"updateConfig": {"monitor": "5s", "failureAction": "pause"}}
    await sim.cluster.create_service(spec(replicas=2, deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    bad = {"FAKE_READY_AFTER": "0s", "FAKE_RUN_FOR": "8s", "FAKE_EXIT_CODE": "1"}
    await apply(sim, spec(replicas=2, deploy=deploy, VERSION="v2", **bad))
    for _ in range(4):
        await sim.advance(5)
    update = (await history(sim))[-1]
    assert update.phase == Phase.SUCCEEDED, update.decisions[-4:]
    assert update.failed_tasks == ()


async def test_a_crash_within_the_monitor_period_of_the_last_batch_counts(
    sim: SimCluster,
) -> None:
    deploy = {"updateConfig": {"monitor": "5s", "failureAction": "pause"}}
    await sim.cluster.create_service(spec(replicas=1, deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    bad = {"FAKE_READY_AFTER": "0s", "FAKE_RUN_FOR": "3s", "FAKE_EXIT_CODE": "1"}
    await apply(sim, spec(replicas=1, deploy=deploy, VERSION="v2", **bad))
    await sim.advance(10)
    update = (await history(sim))[-1]
    assert update.phase == Phase.PAUSED and len(update.failed_tasks) == 1


# --- item 11: blue/green honours failureAction pause ----------------------------------------


async def test_a_failed_green_with_failure_action_pause_pauses(sim: SimCluster) -> None:
    deploy = {"strategy": "blue-green", "updateConfig": {"failureAction": "pause",
                                                         "healthyDeadline": "5s"}}  # fmt: skip
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    blue = {t.id for t in await live(sim)}
    await apply(sim, spec(deploy=deploy, VERSION="v2", FAKE_UNHEALTHY="1"))
    await sim.advance(10)
    update = (await history(sim))[-1]
    assert update.phase == Phase.PAUSED, update.decisions[-3:]
    assert dict(update.weights) == {1: 100, 2: 0}
    assert blue <= {t.id for t in await live(sim)}


# --- item 12: the canary follows a scale ----------------------------------------------------


async def test_the_canary_task_count_follows_a_scale(sim: SimCluster) -> None:
    deploy = {"strategy": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
    await sim.cluster.create_service(spec(replicas=5, deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(replicas=5, deploy=deploy, VERSION="v2"))
    await sim.advance(2)
    assert len([t for t in await live(sim) if t.revision == 2]) == 1
    await sim.cluster.update_service("web", lambda s: s.model_copy(update={"replicas": 10}))
    await sim.advance(2)
    tasks = await live(sim)
    assert len([t for t in tasks if t.revision == 2]) == 2
    assert len([t for t in tasks if t.revision == 1]) == 10  # stable keeps every slot


# --- items 14 and 15: where rollbacks go ----------------------------------------------------


async def test_a_manual_rollback_never_goes_back_to_the_failed_revision(sim: SimCluster) -> None:
    """Before: "rolling back to revision 2", the failed one."""
    await sim.cluster.create_service(spec(VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(VERSION="v2", FAKE_UNHEALTHY="1"))
    await sim.advance(70)
    assert [d.phase for d in await history(sim)] == [Phase.ROLLED_BACK, Phase.SUCCEEDED]
    with pytest.raises(
        ConflictError, match=r"no earlier good revision to roll back to \(revision 2 failed\)"
    ):
        await sim.cluster.rollback_service("web")
    assert (await sim.cluster.get_service("web"))[0].revision == 1


async def test_an_automatic_rollback_goes_to_the_last_revision_that_succeeded(
    sim: SimCluster,
) -> None:
    """Before: revision 2 (paused by a failure, never succeeded) was where 3 rolled back to."""
    await sim.cluster.create_service(spec(VERSION="v1"))
    await sim.advance(2)
    pause = {"updateConfig": {"failureAction": "pause"}}
    await apply(sim, spec(deploy=pause, VERSION="v2", FAKE_START_ERROR="bad"))
    await sim.advance(5)
    assert (await history(sim))[-1].phase == Phase.PAUSED
    await apply(sim, spec(VERSION="v3", FAKE_START_ERROR="bad"))
    await sim.advance(10)
    *_, update, rollback = await history(sim)
    assert (update.to_revision, update.phase) == (3, Phase.ROLLED_BACK)
    assert rollback.to_revision == 1
    assert "the last that succeeded (revision 2 never did)" in rollback.decisions[0].message
    assert (await sim.cluster.get_service("web"))[0].revision == 1


# --- item 13: a trimmed revision is gone for rollbacks too ----------------------------------


async def test_a_revision_trimmed_by_the_history_limit_cannot_be_rolled_back_to(
    sim: SimCluster,
) -> None:
    """Before: the manager's cache of decoded revisions still had it."""
    deploy = {"revisionHistoryLimit": 2, "updateConfig": {"monitor": "0s"}}
    await sim.cluster.create_service(spec(replicas=1, deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    for version in ("v2", "v3", "v4"):
        await apply(sim, spec(replicas=1, deploy=deploy, VERSION=version))
        await sim.advance(3)
    assert 1 not in [r.number for r in await sim.cluster.list_revisions("web")]
    with pytest.raises(NotFoundError, match="revision 1 of service 'web' not found"):
        await sim.cluster.rollback_service("web", 1)


# --- the corners a review of the redesign found --------------------------------------------


async def test_a_rollback_decided_before_a_newer_update_never_undoes_it(sim: SimCluster) -> None:
    """An update rolling back whose rollback had not started when the operator updated again:
    the stale rollback must not be written over the operator's new revision."""
    await sim.cluster.create_service(spec(VERSION="v1"))
    await sim.advance(2)
    await sim.plane.deployer.stop()  # the decision is made, the controller dies before acting
    await sim.cluster.update_service("web", lambda _: spec(VERSION="v2"))
    failed = (await history(sim))[-1]
    kv = await sim.store.get(f"/deployments/web/{sequence_of(failed.id):08d}")
    assert kv is not None
    decided = transitions.roll_back(failed, sim.clock.now(), Reason.TASK_FAILED, "bad", "x")
    await sim.store.put(kv.key, encode(decided))
    await sim.cluster.update_service("web", lambda _: spec(VERSION="v3"))
    started = await sim.cluster.start_rollback(
        "web", 1, Reason.AUTOMATIC_ROLLBACK, undoes=failed.id
    )
    assert started is None
    assert (await sim.cluster.get_service("web"))[0].revision == 3


async def test_a_canary_paused_by_a_failure_is_judged_again_before_its_next_weight(
    sim: SimCluster,
) -> None:
    deploy = {
        "strategy": "canary",
        "updateConfig": {"failureAction": "pause", "monitor": "0s"},
        "canary": {"steps": [{"setWeight": 10}, {"pause": "30s"}, {"setWeight": 50}],
                   "analysis": {"interval": "2s", "successRate": 0.9}},
    }  # fmt: skip
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    assert isinstance(sim.metrics, SteadyTraffic)
    sim.metrics.by_revision[2] = (100, 50)
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(5)
    assert (await history(sim))[-1].phase == Phase.PAUSED
    assert plane(sim).weights("web") == {1: 100, 2: 0}
    await sim.advance(60)  # long past the step's 30 s pause
    sim.metrics.by_revision[2] = (100, 0)
    assert await ask(sim, Intent.RESUME) == (Answer.APPLIED, "resumed by the operator")
    resumed = sim.clock.now()
    await sim.advance(1)
    assert plane(sim).weights("web") == {1: 90, 2: 10}  # its weight back, not the next one
    await sim.advance(35)
    later = [x for x in (await history(sim))[-1].decisions if x.time >= resumed]
    weights = [(x.time - resumed, x.message) for x in later if x.reason == Reason.WEIGHT_SET]
    assert [m for _, m in weights] == ["10% to revision 2 again", "step 3: 50% to revision 2"]
    assert weights[1][0] >= 30  # the step's pause, and its windows, all over again


async def test_a_green_switched_back_and_resumed_passes_its_preview_again(
    sim: SimCluster,
) -> None:
    deploy = {
        "strategy": "blue-green",
        "updateConfig": {"failureAction": "pause", "monitor": "0s"},
        "blueGreen": {"soak": "10s", "scaleDownDelay": "20s",
                      "analysis": {"interval": "2s", "successRate": 0.9}},
    }  # fmt: skip
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(4)
    assert plane(sim).weights("web") == {1: 0, 2: 100}
    assert isinstance(sim.metrics, SteadyTraffic)
    sim.metrics.by_revision[2] = (100, 50)
    await sim.advance(3)
    assert (await history(sim))[-1].phase == Phase.PAUSED
    assert plane(sim).weights("web") == {1: 100, 2: 0}
    sim.metrics.by_revision[2] = (100, 0)
    await ask(sim, Intent.RESUME)
    await sim.advance(0.5)
    assert plane(sim).weights("web") == {1: 100, 2: 0}  # not switched again untested
    await sim.advance(3)
    assert plane(sim).weights("web") == {1: 0, 2: 100}


async def test_a_canary_resumed_after_a_task_failure_is_not_paused_by_it_again(
    sim: SimCluster,
) -> None:
    deploy = {
        "strategy": "canary",
        "updateConfig": {"failureAction": "pause", "monitor": "0s"},
        "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]},
    }
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(deploy=deploy, VERSION="v2"))
    await sim.advance(2)
    (canary,) = [t for t in await live(sim) if t.revision == 2]
    assert canary.node is not None
    sim.drivers[canary.node].crash(canary.id)
    await sim.quiesce()
    paused = (await history(sim))[-1]
    assert paused.phase == Phase.PAUSED and paused.failed_tasks == (canary.id,)
    await sim.advance(5)  # its replacement is ready
    await ask(sim, Intent.RESUME)
    await sim.advance(2)
    assert (await history(sim))[-1].phase == Phase.AWAITING_PROMOTION


async def test_a_promotion_whose_tasks_never_get_ready_ends(sim: SimCluster) -> None:
    """Found by the model of the engine: a blue/green release promoted at 0 replicas (nothing to
    wait for), then scaled up with a green that never gets ready, stayed progressing for ever."""
    deploy = {
        "strategy": "blue-green",
        "blueGreen": {"autoPromote": False, "scaleDownDelay": "20s"},
        "updateConfig": {"progressDeadline": "60s", "healthyDeadline": "30s"},
    }
    await sim.cluster.create_service(spec(replicas=3, deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    await apply(sim, spec(replicas=0, deploy=deploy, VERSION="v2", FAKE_UNHEALTHY="1"))
    await sim.advance(1)
    assert (await ask(sim, Intent.PROMOTE))[0] == Answer.APPLIED
    assert (await history(sim))[-1].switched_at is not None
    await sim.cluster.update_service("web", lambda s: s.model_copy(update={"replicas": 3}))
    for _ in range(4):
        await sim.advance(30)
    update = (await history(sim))[-1]
    assert update.phase == Phase.FAILED, update.decisions[-3:]
    assert (await sim.cluster.get_service("web"))[0].revision == 1
