"""Rolling updates of real processes under real load through the ingress: zero failed requests
for a good update, an unhealthy one that rolls back on its own, and a manual rollback — driven
through the CLI as a user would."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration


def test_rolling_update_rollback_and_manual_rollback_under_load(server: ServerProcess) -> None:
    port = free_port()
    created = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v1", "--replicas", "6", "--publish", str(port),
        "--health-http", "/healthz", "--health-interval", "200ms", "--monitor", "0s",
        "--drain-timeout", "2s", "--stop-grace", "2s",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    client = server.client()
    wait_for(
        lambda: len([t for t in client.list_tasks("web") if t.ready]) == 6, 20, "6 ready tasks"
    )
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=250, connections=10) as load:
        wait_for(lambda: load.snapshot().requests > 100, 10, "load to flow")

        # A good update: every task moves to v2, nothing fails.
        good = warren(
            server, "service", "update", "web", "--env", "VERSION=v2", "--parallelism", "2"
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert "succeeded" in good.stdout
        tasks = [t for t in client.list_tasks("web") if t.state.active]
        assert len(tasks) == 6 and {t.revision for t in tasks} == {2}
        before = load.snapshot()
        wait_for(lambda: load.snapshot().since(before).versions.keys() == {"v2"}, 5, "v2 only")

        # An unhealthy version rolls back on its own; v2 keeps serving.
        bad = warren(
            server, "service", "update", "web", "--env", "VERSION=v3", "--env", "UNHEALTHY=1"
        )
        assert bad.returncode == 1, bad.stdout
        assert "rolled_back" in bad.stderr
        status = client.deployment_status("web")
        assert status.revision == 2
        history = client.list_deployments("web")
        assert [d.phase for d in history[-2:]] == [Phase.ROLLED_BACK, Phase.SUCCEEDED]
        assert history[-2].decisions[-1].reason == "RollbackComplete"
        assert any(d.reason == "HealthCheckFailed" for d in history[-2].decisions)
        service = client.get_service("web")
        assert service.spec.env == {"VERSION": "v2"}  # the spec is revision 2's again

        # Back to revision 1 by hand.
        back = warren(server, "service", "rollback", "web", "--to-revision", "1")
        assert back.returncode == 0, back.stdout + back.stderr
        before = load.snapshot()
        wait_for(lambda: load.snapshot().since(before).versions.keys() == {"v1"}, 5, "v1 only")
    result = load.stop()
    assert result.requests > 500
    assert result.failed == 0, result.errors
    assert {"v1", "v2"} <= set(result.versions)
    assert "v3" not in result.versions  # the unhealthy version never got a request

    # The seed's deploy metrics.
    metrics = httpx.get(f"{server.addr}/metrics").text
    labels = '{service="web",strategy="rolling"}'
    for line in (
        f"warren_deploy_success_total{labels} 1.0",
        f"warren_deploy_failed_total{labels} 1.0",
        f"warren_deploy_rollback_total{labels} 2.0",
        f"warren_deploy_tasks_ready{labels} 6.0",
        f"warren_deploy_progress_percent{labels} 100.0",
        f"warren_deploy_duration_seconds_count{labels} 2.0",
    ):
        assert line in metrics, line
    assert f"warren_deploy_batch_duration_seconds_count{labels}" in metrics
    assert f"warren_deploy_delay_seconds_total{labels}" in metrics

    # The operator commands.
    status_json = warren(server, "deploy", "status", "web", "-o", "json")
    assert status_json.returncode == 0 and '"phase": "succeeded"' in status_json.stdout
    shown = warren(server, "deploy", "history", "web")
    assert shown.returncode == 0 and "rolled_back" in shown.stdout
    nothing = warren(server, "deploy", "pause", "web")
    assert nothing.returncode == 1 and "not progressing" in nothing.stderr


def test_pause_resume_and_abort(server: ServerProcess) -> None:
    port = free_port()
    client = server.client()
    assert warren(
        server, "service", "create", "api", "--command", "python -m warren.demo.app",
        "--replicas", "3", "--publish", str(port), "--health-http", "/healthz",
        "--health-interval", "200ms", "--monitor", "2s",
    ).returncode == 0  # fmt: skip
    wait_for(lambda: len([t for t in client.list_tasks("api") if t.ready]) == 3, 20, "ready")
    update = warren(server, "service", "update", "api", "--env", "VERSION=v2", "--detach")
    assert update.returncode == 0, update.stderr
    assert warren(server, "deploy", "pause", "api").returncode == 0
    assert client.deployment_status("api").phase == Phase.PAUSED
    assert warren(server, "deploy", "resume", "api").returncode == 0
    assert client.deployment_status("api").phase == Phase.PROGRESSING
    aborted = warren(server, "deploy", "abort", "api")
    assert aborted.returncode == 0, aborted.stderr
    wait_for(
        lambda: (
            [d.phase for d in client.list_deployments("api")[-2:]]
            == [Phase.ROLLED_BACK, Phase.SUCCEEDED]
        ),
        20,
        "the abort's rollback to finish",
    )
    history = client.list_deployments("api")
    assert history[-2].phase == Phase.ROLLED_BACK
    assert client.get_service("api").revision == 1
    tasks = [t for t in client.list_tasks("api") if t.state.active]
    assert {t.revision for t in tasks} == {1} and len(tasks) == 3
