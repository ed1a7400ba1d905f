"""The corners of a release with real processes (the demo app), real load through the ingress,
driven through the CLI as an operator would: an update while a canary awaits promotion, going
back to the stable spec mid-canary, promote before the canary is healthy, the status of an
update that was rolled back, and a manual rollback after an automatic one (issue 12, items 1,
2, 3 and 14; the behaviour Argo Rollouts, Nomad and Swarm pin down)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.demo.load import LoadGenerator
from warren.deploy import Deployer
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration


CANARY = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 4
  env: {VERSION: v1}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, startPeriod: 60s}
  deploy:
    strategy: canary
    updateConfig: {monitor: 0s}
    canary: {steps: [{setWeight: 25}, {pause: {}}], canaryReplicas: 2}
"""


def canary_service(server: ServerProcess, tmp_path: Path, port: int) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(CANARY.replace("PORT", str(port)))
    done = warren(server, "apply", "-f", str(manifest))
    assert done.returncode == 0, done.stderr
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 4, 30, "4 ready")


def awaiting(server: ServerProcess) -> bool:
    return server.client().deployment_status("web").phase == Phase.AWAITING_PROMOTION


def test_an_update_during_a_canary_and_back_to_the_stable_spec(
    server: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    canary_service(server, tmp_path, port)
    client = server.client()
    stable = {t.id for t in client.list_tasks("web") if t.state.active}
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=200, connections=8) as load:
        assert warren(server, "service", "update", "web", "--env", "VERSION=v2",
                      "--detach").returncode == 0  # fmt: skip
        wait_for(lambda: awaiting(server), 30, "v2's canary awaiting promotion")

        # v3 while v2's canary waits: v3 starts from v1, v2 is dropped, v1 untouched.
        update = warren(server, "service", "update", "web", "--env", "VERSION=v3", "--detach")
        assert update.returncode == 0, update.stderr
        after_v3 = load.snapshot()
        wait_for(lambda: awaiting(server), 30, "v3's canary awaiting promotion")
        plan = warren(server, "deploy", "plan", "web", "--env", "VERSION=v1")
        assert plan.stdout.startswith(
            '+/- service "web" (revision 3 → 1, a fast-track rollback)\n'
            '  ~ env.VERSION: "v3" => "v1"\n\n'
            "fast-track rollback: revision 3 → 1"
        ), plan.stdout
        plan = warren(server, "deploy", "plan", "web", "--replicas", "5")
        assert "no new revision: only replicas change" in plan.stdout, plan.stdout
        history = warren(server, "deploy", "history", "web")
        assert "superseded" in history.stdout and "1 → 3" in history.stdout, history.stdout
        status = client.deployment_status("web")
        assert status.weights == {"1": 75, "3": 25}, status.weights
        active = [t for t in client.list_tasks("web") if t.state.active]
        assert {t.revision for t in active} == {1, 3}
        assert {t.id for t in active if t.revision == 1} == stable
        time.sleep(1.0)
        served = load.snapshot().since(after_v3).versions
        assert served.keys() <= {"v1", "v2", "v3"} and served.get("v3", 0) > 0, served

        # The stable spec again: a fast-track rollback — v3's canary gone at once, nothing new.
        before = {t.id for t in client.list_tasks("web")}
        back = warren(server, "service", "update", "web", "--env", "VERSION=v1")
        assert back.returncode == 0, back.stdout + back.stderr
        assert "FastRollback" in back.stdout, back.stdout
        back_at = load.snapshot()
        time.sleep(1.0)
        assert load.snapshot().since(back_at).versions.keys() == {"v1"}
        assert {t.id for t in client.list_tasks("web")} <= before  # no task started
        assert {t.id for t in client.list_tasks("web") if t.state.active} == stable
    result = load.stop()
    assert result.failed == 0, result.errors


def test_promote_is_refused_while_the_canary_is_unhealthy(
    server: ServerProcess, tmp_path: Path
) -> None:
    canary_service(server, tmp_path, free_port())
    update = warren(
        server, "service", "update", "web", "--env", "VERSION=v2", "--env", "UNHEALTHY=1",
        "--detach",
    )  # fmt: skip
    assert update.returncode == 0, update.stderr
    wait_for(
        lambda: len([t for t in server.client().list_tasks("web") if t.revision == 2]) == 2,
        20, "2 canary tasks",
    )  # fmt: skip
    before = server.client().deployment_status("web")
    promote = warren(server, "deploy", "promote", "web")
    assert promote.returncode == 1
    assert "0/2 canary tasks healthy" in promote.stderr, promote.stderr
    assert len(promote.stderr.strip().splitlines()) == 1
    after = server.client().deployment_status("web")
    assert (after.phase, after.step, after.weights) == (before.phase, before.step, before.weights)
    forced = warren(server, "deploy", "promote", "web", "--full", "--force")
    assert forced.returncode == 0, forced.stderr


def test_the_status_of_an_update_rolled_back_and_a_rollback_after_it(
    server: ServerProcess,
) -> None:
    port = free_port()
    created = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v1", "--replicas", "3", "--publish", str(port),
        "--health-http", "/healthz", "--health-interval", "200ms", "--health-retries", "2",
        "--monitor", "0s",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 3, 20, "3 ready")
    bad = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--env",
                 "UNHEALTHY=1", "--detach")  # fmt: skip
    assert bad.returncode == 0, bad.stderr
    watched = warren(server, "deploy", "status", "web", "--watch")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "rolled_back" in watched.stderr

    # The Python API of docs/python-api.md: the update's status, not its rollback's.
    status = Deployer(client).get_deployment_status("web")
    assert status.phase == Phase.ROLLED_BACK and not status.succeeded
    assert status.rollback_id is not None and status.rolled_back_to == 1
    wait_for(lambda: client.deployment_status("web").tasks == {"running": 3}, 10, "3 running")
    shown = warren(server, "deploy", "status", "web")
    lines = {line.split(maxsplit=1)[0]: line for line in shown.stdout.splitlines() if line}
    assert "3/3 ready" in lines["tasks"], shown.stdout
    assert lines["by"].split("state", 1)[1].strip() == "3 running", shown.stdout
    assert "to revision 1: succeeded" in lines["rollback"], shown.stdout

    # What the next update would do names the revision it would make (not "1 → 2").
    plan = warren(server, "deploy", "plan", "web", "--env", "VERSION=v3")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith(
        '+/- service "web" (revision 1 → 3, a rollout)\n'
        '  ~ env.VERSION: "v1" => "v3"\n\n'
        "rolling: revision 1 → 3"
    ), plan.stdout

    # A manual rollback now has no good revision before revision 1: refused, nothing changes.
    rollback = warren(server, "service", "rollback", "web")
    assert rollback.returncode == 1
    assert "no earlier good revision" in rollback.stderr, rollback.stderr
    assert client.get_service("web").revision == 1
