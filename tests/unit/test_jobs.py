"""Pre-deploy and post-deploy jobs and ``warren run``'s, on the whole engine in process (store,
controllers, agents on the fake driver, a fake clock): the job runs once, with the new
revision, before any of its tasks; a failing or late job fails the release with nothing
replaced; a crash of the manager does not run it twice; a rollback runs none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import RecordingPlane, SimCluster
from warren.control.plane import ControlPlane
from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import JobKind, Task, TaskState
from warren.planning.jobs import JOBS_KEPT

READY = {"FAKE_READY_AFTER": "1s"}


def spec(replicas: int = 3, deploy: dict[str, Any] | None = None, **env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"], "driver": "fake", "replicas": replicas,
            "env": {**READY, **env},
            "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
            "deploy": {"updateConfig": {"monitor": "0s"}, **(deploy or {})},
        }
    )  # fmt: skip


def job(run_for: str = "2s", exit_code: int = 0, timeout: str = "1m") -> dict[str, Any]:
    command = ["env", f"FAKE_RUN_FOR={run_for}", f"FAKE_EXIT_CODE={exit_code}", "migrate"]
    return {"command": command, "timeout": timeout}


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=2, dataplane=RecordingPlane()).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


async def jobs(sim: SimCluster) -> list[Task]:
    return [t for t in await sim.cluster.list_tasks("web", jobs=True) if t.job is not None]


async def newest(sim: SimCluster) -> Deployment:
    return (await sim.cluster.list_deployments("web"))[-1]


async def v1_running(sim: SimCluster, deploy: dict[str, Any] | None = None) -> set[str]:
    await sim.cluster.create_service(spec(deploy=deploy, VERSION="v1"))
    await sim.advance(2)
    return {t.id for t in await sim.tasks("web") if t.ready}


async def update(sim: SimCluster, deploy: dict[str, Any]) -> None:
    await sim.cluster.update_service("web", lambda _old: spec(deploy=deploy, VERSION="v2"))
    await sim.quiesce()


def started(sim: SimCluster) -> list[str]:
    return [tid for driver in sim.drivers.values() for tid in driver.started]


async def test_a_pre_deploy_job_runs_once_with_the_new_revision_before_any_of_its_tasks(
    sim: SimCluster,
) -> None:
    stable = await v1_running(sim)
    await update(sim, {"preDeploy": job("2s")})
    (migrate,) = await jobs(sim)
    assert (migrate.id, migrate.job, migrate.revision, migrate.slot) == (
        "web.pre-deploy.1", JobKind.PRE_DEPLOY, 2, 0,
    )  # fmt: skip
    assert migrate.state == TaskState.RUNNING and migrate.node is not None
    # The job runs; the release waits for it: every slot still runs revision 1.
    await sim.advance(1)
    assert {t.revision for t in await sim.tasks("web")} == {1}
    assert {t.id for t in await sim.tasks("web")} == stable
    assert (await newest(sim)).phase == Phase.PROGRESSING
    await sim.advance(1.5)
    (migrate,) = await jobs(sim)
    assert (migrate.state, migrate.exit_code) == (TaskState.COMPLETE, 0)
    await sim.advance(5)
    d = await newest(sim)
    assert d.phase == Phase.SUCCEEDED, d.message
    reasons = [x.reason for x in d.decisions]
    started_at = reasons.index(Reason.JOB_STARTED)
    assert started_at < reasons.index(Reason.JOB_SUCCEEDED) < reasons.index(Reason.BATCH_STARTED)
    assert reasons.count(Reason.JOB_STARTED) == 1
    new = [t for t in await sim.tasks("web") if t.revision == 2]
    assert len(new) == 3
    assert migrate.finished_at is not None
    assert all(t.created_at >= migrate.finished_at for t in new)
    # Run once: never started again, and no task of the service (slot or job) is the job's.
    assert started(sim).count(migrate.id) == 1


async def test_a_failing_pre_deploy_job_fails_the_release_and_nothing_is_replaced(
    sim: SimCluster,
) -> None:
    stable = await v1_running(sim)
    await update(sim, {"preDeploy": job("1s", exit_code=3)})
    await sim.advance(3)
    d = await newest(sim)
    assert (d.phase, d.decisions[-1].reason) == (Phase.FAILED, Reason.JOB_FAILED)
    assert "web.pre-deploy.1 exited 3" in d.message
    assert d.reverted_to == 1
    service, _ = await sim.cluster.get_service("web")
    assert service.revision == 1
    await sim.advance(5)
    tasks = await sim.tasks("web")
    assert {t.id for t in tasks if t.state.active} == stable
    assert not any(t.revision == 2 for t in tasks)
    assert set(started(sim)) == stable | {"web.pre-deploy.1"}
    # The job is kept, with its outcome, for its logs.
    (migrate,) = await jobs(sim)
    assert (migrate.state, migrate.exit_code) == (TaskState.FAILED, 3)


async def test_a_pre_deploy_job_past_its_timeout_is_stopped_and_fails_the_release(
    sim: SimCluster,
) -> None:
    stable = await v1_running(sim)
    await update(sim, {"preDeploy": job("1h", timeout="5s")})
    await sim.advance(4)
    assert (await newest(sim)).phase == Phase.PROGRESSING
    await sim.advance(2)
    d = await newest(sim)
    assert d.phase == Phase.FAILED
    assert d.message == "pre-deploy job web.pre-deploy.1 did not finish within 5s"
    await sim.advance(12)  # its stop grace
    (migrate,) = await jobs(sim)
    assert migrate.state.terminal and not migrate.wants_running
    assert {t.id for t in await sim.tasks("web") if t.state.active} == stable


async def test_a_manager_restart_while_the_job_runs_does_not_run_it_again(
    sim: SimCluster,
) -> None:
    await v1_running(sim)
    await update(sim, {"preDeploy": job("3s")})
    await sim.advance(1)
    # The manager dies and a new one starts on the same store; the agents keep running.
    await sim.plane.stop()
    sim.plane = ControlPlane(sim.cluster, sim.clock, sim.dataplane)
    sim.plane.tasks.on_change(sim._dispatch)
    await sim.plane.start()
    await sim.advance(3)
    await sim.advance(5)
    assert (await newest(sim)).phase == Phase.SUCCEEDED
    assert started(sim).count("web.pre-deploy.1") == 1
    assert len(await jobs(sim)) == 1


@pytest.mark.parametrize(
    "deploy",
    [
        {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        {"strategy": "blue-green", "blueGreen": {"autoPromote": False}},
    ],
)
async def test_a_release_by_weights_starts_its_new_tasks_after_the_job_too(
    sim: SimCluster, deploy: dict[str, Any]
) -> None:
    await v1_running(sim, deploy)
    await update(sim, {**deploy, "preDeploy": job("2s")})
    await sim.advance(1)
    assert {t.revision for t in await sim.tasks("web")} == {1}
    await sim.advance(4)
    assert 2 in {t.revision for t in await sim.tasks("web") if t.state.active}
    assert (await newest(sim)).phase == Phase.AWAITING_PROMOTION


async def test_a_new_service_with_a_pre_deploy_job_starts_its_tasks_once_it_passed(
    sim: SimCluster,
) -> None:
    await sim.cluster.create_service(spec(deploy={"preDeploy": job("2s")}, VERSION="v1"))
    await sim.quiesce()
    assert await sim.tasks("web") == []
    (migrate,) = await jobs(sim)
    assert migrate.revision == 1
    await sim.advance(5)
    assert len([t for t in await sim.tasks("web") if t.ready]) == 3
    assert (await newest(sim)).phase == Phase.SUCCEEDED


async def test_a_new_service_whose_job_fails_starts_no_task(sim: SimCluster) -> None:
    await sim.cluster.create_service(spec(deploy={"preDeploy": job("1s", 1)}, VERSION="v1"))
    await sim.advance(5)
    assert (await newest(sim)).phase == Phase.FAILED
    assert await sim.tasks("web") == []


async def test_a_post_deploy_job_runs_after_success_and_not_on_rollback(sim: SimCluster) -> None:
    deploy = {"postDeploy": job("1s")}
    await v1_running(sim, deploy)
    assert await jobs(sim) == []  # a new service: no release, no job
    await update(sim, deploy)
    await sim.advance(5)
    d = await newest(sim)
    assert d.phase == Phase.SUCCEEDED
    (cleanup,) = await jobs(sim)
    assert (cleanup.id, cleanup.revision) == ("web.post-deploy.1", 2)
    await sim.advance(2)
    d = await newest(sim)
    assert d.decisions[-1].reason == Reason.JOB_SUCCEEDED
    assert d.message.startswith("update complete") or "post-deploy" not in d.message
    # A rollback to revision 1 runs no job.
    await sim.cluster.rollback_service("web")
    await sim.advance(5)
    back = await newest(sim)
    assert (back.kind, back.phase) == (DeploymentKind.ROLLBACK, Phase.SUCCEEDED)
    await sim.advance(5)
    assert [t.id for t in await jobs(sim)] == ["web.post-deploy.1"]


async def test_run_jobs_run_once_and_the_newest_are_kept(sim: SimCluster) -> None:
    await v1_running(sim)
    ids = []
    for _ in range(JOBS_KEPT + 2):
        ran = await sim.cluster.start_job("web", ("env", "FAKE_RUN_FOR=1s", "report"))
        ids.append(ran.id)
        await sim.advance(2)
    kept = await jobs(sim)
    assert [t.id for t in sorted(kept, key=lambda t: t.created_at)] == ids[-JOBS_KEPT:]
    assert all(t.state == TaskState.COMPLETE and t.revision == 1 for t in kept)
    assert all(started(sim).count(tid) == 1 for tid in ids)
    # A slot's task is never a job: the service still has its 3.
    assert len([t for t in await sim.tasks("web") if t.ready]) == 3


async def test_a_run_job_past_its_timeout_is_stopped(sim: SimCluster) -> None:
    await v1_running(sim)
    ran = await sim.cluster.start_job("web", ("env", "FAKE_RUN_FOR=1h", "hang"), timeout=3)
    await sim.advance(4)
    await sim.advance(12)
    (stopped,) = [t for t in await jobs(sim) if t.id == ran.id]
    assert stopped.state.terminal
    assert "did not finish within 3s" in stopped.message
