"""kill -9 of the server at random points of rolling updates, automatic rollbacks and manual
rollbacks: after each restart the rollout finishes (or rolls back) from the stored state, the
running processes are re-adopted, and no process is left behind or started twice."""

from __future__ import annotations

import functools
import random
import signal
import time
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, pid_alive, wait_for
from warren.client import Client
from warren.domain.deployments import Phase
from warren.domain.specs import ServiceSpec

pytestmark = pytest.mark.integration

NAME = "crashy"
REPLICAS = 4


def service_processes() -> set[int]:
    """Every live process of this test's service, found by its environment."""
    marker = f"WARREN_SERVICE={NAME}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env and pid_alive(int(entry.name)):
                pids.add(int(entry.name))
    return pids


def converged(client: Client) -> bool:
    deployments = client.list_deployments(NAME)
    if deployments and not deployments[-1].phase.terminal:
        return False
    service = client.get_service(NAME)
    active = [t for t in client.list_tasks(NAME) if t.state.active]
    return (
        len(active) == REPLICAS
        and all(t.ready and t.revision == service.revision for t in active)
        and {int(t.runtime_id or 0) for t in active} == service_processes()
    )


def test_sigkill_at_random_points_of_rollouts(server: ServerProcess) -> None:
    rng = random.Random(20261126)
    client = server.client()
    client.create_service(
        ServiceSpec.model_validate(
            {
                "name": NAME,
                "command": ["python", "-m", "warren.demo.app"],
                "replicas": REPLICAS,
                "env": {"VERSION": "v0"},
                "ports": [{"published": free_port()}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms"},
                "stopGrace": "2s",
                "drainTimeout": "500ms",
                "deploy": {"updateConfig": {"parallelism": 1, "monitor": "0s"}},
            }
        )
    )
    wait_for(lambda: converged(client), 30, "the first tasks")
    rounds = ["good", "bad", "rollback", "good", "bad", "good"]
    for n, kind in enumerate(rounds, 1):
        before = client.get_service(NAME)
        if kind == "rollback":
            client.rollback_service(NAME)
        else:
            env = {"VERSION": f"v{n}"} | ({"UNHEALTHY": "1"} if kind == "bad" else {})
            client.patch_service(NAME, {"env": env})
        time.sleep(rng.uniform(0.0, 2.0))  # kill it somewhere in the rollout
        server.stop(signal.SIGKILL)
        server.start()
        client = server.client()
        wait_for(functools.partial(converged, client), 60, f"round {n} ({kind}) to converge")
        latest = client.list_deployments(NAME)[-1]
        service = client.get_service(NAME)
        if kind == "bad":
            assert service.revision == before.revision, "a bad update must roll back"
            assert "UNHEALTHY" not in service.spec.env
            assert client.list_deployments(NAME)[-2].phase == Phase.ROLLED_BACK
        else:
            assert latest.phase == Phase.SUCCEEDED, latest.message
            assert service.revision != before.revision
    client.delete_service(NAME)
    wait_for(lambda: not service_processes(), 30, "every process to stop")
    assert all(not pid_alive(pid) for pid in server.task_pids())
