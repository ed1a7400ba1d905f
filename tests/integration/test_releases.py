"""Canary and blue/green releases of real processes under real load through the ingress, driven
through the CLI: measured shares match the weights, a bad canary is stopped at its first step,
a blue/green switch and an instant rollback — with no failed request but the bad canary's own.
On either data plane: Warren's own ingress, and HAProxy (``--data-plane haproxy``), whose own
figures the analysis then judges."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration


@pytest.fixture(params=["builtin", "haproxy"])
def server(
    request: pytest.FixtureRequest, server_factory: Callable[..., ServerProcess]
) -> ServerProcess:
    return server_factory(extra=["--data-plane", request.param]).start()


def create(server: ServerProcess, port: int, *extra: str) -> None:
    done = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v1", "--replicas", "4", "--publish", str(port),
        "--health-http", "/healthz", "--health-interval", "200ms", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 4, 20, "4 ready")


CANARY = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 4
  env: {VERSION: v1}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms}
  deploy:
    strategy: canary
    canary:
      steps: [{setWeight: 10}, {pause: 3s}, {setWeight: 50}, {pause: 3s}]
      analysis: {interval: 1s, successRate: 0.95, minRequests: 20}
"""


def test_canary_shares_and_a_bad_canary(server: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(CANARY.replace("PORT", str(port)))
    assert warren(server, "apply", "-f", str(manifest)).returncode == 0
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 4, 20, "4 ready")
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=300, connections=12) as load:
        update = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--detach")
        assert update.returncode == 0, update.stderr
        shares: dict[int, float] = {}
        for weight in (10, 50):
            wait_for(
                lambda w=weight: client.deployment_status("web").weights.get("2") == w,
                15, f"weight {weight}",
            )  # fmt: skip
            time.sleep(0.3)  # requests in flight at the change
            before = load.snapshot()
            time.sleep(2.0)
            window = load.snapshot().since(before)
            shares[weight] = 100 * window.versions["v2"] / max(1, sum(window.versions.values()))
        wait_for(lambda: client.deployment_status("web").phase == Phase.SUCCEEDED, 30, "promotion")
        good = load.snapshot()
        assert good.failed == 0, good.errors
        for weight, share in shares.items():
            assert abs(share - weight) <= 2, shares

        stable = {t.id for t in client.list_tasks("web") if t.state.active}
        bad = warren(
            server, "service", "update", "web", "--env", "VERSION=v3", "--env", "FAIL_RATE=0.3"
        )
        assert bad.returncode == 1
        status = client.deployment_status("web")
        assert status.phase == Phase.FAILED and status.revision == 2
        assert "success rate" in status.message and "< 95.00%" in status.message
        assert status.step == 1  # stopped at the first step
        time.sleep(1)
        assert {t.revision for t in client.list_tasks("web") if t.state.active} == {2}
        # The stable tasks were never touched: the same ones serve, none replaced.
        assert {t.id for t in client.list_tasks("web") if t.state.active} == stable
    result = load.stop()
    assert result.versions.keys() <= {"v1", "v2", "v3"}
    # Every failed request is one the bad canary itself answered with a 500.
    assert all("injected failure" in e for e in result.errors), result.errors
    assert result.failed < result.versions["v3"] + result.failed


def test_blue_green_preview_switch_and_instant_rollback(server: ServerProcess) -> None:
    port = free_port()
    create(server, port, "--strategy", "blue-green")
    client = server.client()
    # Wait for promotion by hand: no auto-promote.
    client.patch_service("web", {"deploy": {"blueGreen": {"autoPromote": False}}})
    url = f"http://127.0.0.1:{port}/"
    with LoadGenerator(url, rate=250, connections=10) as load, httpx.Client() as http:
        update = warren(server, "service", "update", "web", "--env", "VERSION=v2")
        assert update.returncode == 1 and "awaiting_promotion" in update.stderr
        assert {http.get(url).json()["version"] for _ in range(20)} == {"v1"}
        preview = {"X-Warren-Preview": "1"}
        assert {http.get(url, headers=preview).json()["version"] for _ in range(10)} == {"v2"}

        blue_rev = client.deployment_status("web").from_revision
        blue = {t.id for t in client.list_tasks("web") if t.revision == blue_rev and t.ready}
        assert warren(server, "deploy", "promote", "web").returncode == 0
        wait_for(lambda: {http.get(url).json()["version"] for _ in range(5)} == {"v2"}, 5, "switch")
        start = time.monotonic()
        back = warren(server, "service", "rollback", "web", "--detach")
        assert back.returncode == 0, back.stderr
        wait_for(lambda: {http.get(url).json()["version"] for _ in range(5)} == {"v1"}, 5, "back")
        assert time.monotonic() - start < 3  # the CLI's own start-up included
        history = client.list_deployments("web")
        assert any(d.reason == "InstantRollback" for d in history[-1].decisions)
        # The warm blue tasks themselves took the traffic back: none was replaced.
        serving = {t.id for t in client.list_tasks("web") if t.state == "running" and t.ready}
        assert blue and blue <= serving, (blue, serving)
    result = load.stop()
    assert result.failed == 0, result.errors
