"""Rollout settings (the spec's ``deploy`` section) are not part of the template, as Swarm's
``update_config`` and a Kubernetes Deployment's ``strategy`` are not part of the pod template:
changing only them updates the service's spec in place — no revision, no deployment, no task
replaced — and the next deployment runs with them. A deployment already under way keeps the
settings it started with (``docs/deployments.md``, "Changing the rollout settings")."""

from __future__ import annotations

from typing import Any

import pytest

from warren.clocks import FakeClock
from warren.domain.deployments import DeploymentKind
from warren.domain.specs import ServiceSpec, patch_spec
from warren.store.cluster import ClusterStore
from warren.store.memory import MemoryStore


def web(version: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": 4,
            "env": {"VERSION": version},
        }
    )


def cluster() -> ClusterStore:
    clock = FakeClock()
    return ClusterStore(MemoryStore(clock), clock)


SETTINGS_ONLY = [
    {"updateConfig": {"parallelism": 2}},
    {"updateConfig": {"delay": "5s", "monitor": "1s", "failureAction": "pause"}},
    {"updateConfig": {"order": "stop-first", "maxFailureRatio": 0.5}},
    {"rollbackConfig": {"parallelism": 3}},
    {"strategy": "blue-green", "blueGreen": {"autoPromote": False}},
    {"strategy": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
    {"revisionHistoryLimit": 3},
    {"notify": [{"url": "http://hooks.example/x"}]},
]


@pytest.mark.parametrize("deploy", SETTINGS_ONLY)
async def test_a_settings_only_change_makes_no_revision_and_no_deployment(
    deploy: dict[str, Any],
) -> None:
    store = cluster()
    await store.create_service(web("v1"))
    service, changed = await store.update_service(
        "web", lambda s: patch_spec(s, {"deploy": deploy}), "update"
    )
    assert changed
    assert service.revision == 1
    assert service.spec == patch_spec(web("v1"), {"deploy": deploy})  # updated in place
    assert [r.number for r in await store.list_revisions("web")] == [1]
    assert await store.list_deployments("web") == []


async def test_the_next_rollout_runs_with_the_new_settings() -> None:
    store = cluster()
    await store.create_service(web("v1"))
    await store.update_service(
        "web", lambda s: patch_spec(s, {"deploy": {"updateConfig": {"parallelism": 2}}})
    )
    service, _ = await store.update_service(
        "web", lambda s: patch_spec(s, {"env": {"VERSION": "v2"}})
    )
    latest = await store.latest_deployment("web")
    assert latest is not None
    assert service.revision == 2 and latest[0].to_revision == 2
    assert latest[0].config.parallelism == 2
    assert (await store.get_revision("web", 2)).spec.deploy.update_config.parallelism == 2


async def test_a_settings_change_during_a_rollout_leaves_that_rollout_alone() -> None:
    """The deployment under way keeps the parallelism (and strategy) it started with; the
    change waits for the next one."""
    store = cluster()
    await store.create_service(web("v1"))
    await store.update_service("web", lambda s: patch_spec(s, {"env": {"VERSION": "v2"}}))
    before = await store.latest_deployment("web")
    assert before is not None and before[0].active
    service, changed = await store.update_service(
        "web",
        lambda s: patch_spec(
            s, {"deploy": {"strategy": "canary", "updateConfig": {"parallelism": 3}}}
        ),
    )
    assert changed and service.revision == 2
    after = await store.latest_deployment("web")
    assert after is not None
    assert after[0] == before[0]  # same record, untouched: config, strategy and all
    assert after[0].config.parallelism == 1 and after[0].strategy == "rolling"
    assert [d.id for d in await store.list_deployments("web")] == [before[0].id]
    # The revision the rollout moves to keeps the settings it was made with.
    assert (await store.get_revision("web", 2)).spec.deploy.update_config.parallelism == 1


async def test_a_rollback_keeps_the_current_settings() -> None:
    """A rollback restores a revision's template; the rollout settings are the service's now
    (as ``kubectl rollout undo`` keeps a Deployment's strategy), and the rollback runs with
    the current rollback config."""
    store = cluster()
    await store.create_service(web("v1"))
    await store.update_service("web", lambda s: patch_spec(s, {"env": {"VERSION": "v2"}}))
    settings = {"updateConfig": {"parallelism": 2}, "rollbackConfig": {"parallelism": 4}}
    await store.update_service("web", lambda s: patch_spec(s, {"deploy": settings}))
    service, rollback, _ = await store.rollback_service("web", to_revision=1)
    assert service.revision == 1 and service.spec.env == {"VERSION": "v1"}
    assert service.spec.deploy.update_config.parallelism == 2
    assert service.spec.deploy.rollback_config.parallelism == 4
    assert rollback.kind == DeploymentKind.ROLLBACK and rollback.config.parallelism == 4


async def test_the_status_of_a_rollout_names_its_own_strategy() -> None:
    """Strategy changed mid-rollout: the status still says how the rollout under way runs."""
    store = cluster()
    await store.create_service(web("v1"))
    await store.update_service("web", lambda s: patch_spec(s, {"env": {"VERSION": "v2"}}))
    await store.update_service("web", lambda s: patch_spec(s, {"deploy": {"strategy": "canary"}}))
    status = await store.deployment_status("web")
    assert status.deployment_id == "web-1" and status.strategy == "rolling"
