"""Canary and blue/green releases of containers on each real engine (dockerd, Podman), under real
load through the ingress, driven through the CLI, by image tag: measured shares match the
weights, a bad canary (the same image, failing 30% of its requests) is stopped at its first
step, a blue/green preview, switch and rollback — with no failed request but the bad canary's.

The health checks have a ``startPeriod``: a container's Python takes from ~0.1 s to over 0.6 s
(a cold page cache, two cores under load) to listen, and three failed probes 200 ms apart
would otherwise fail a canary task that is merely slow to start."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.engines import Engine
from tests.images import DEMO
from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.client import Client
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration


CANARY = f"""
apiVersion: warren.io/v1
kind: Service
metadata: {{name: web}}
spec:
  image: {DEMO}:v1
  replicas: 4
  ports: [{{published: PORT, target: 8080}}]
  healthCheck: {{http: {{path: /healthz}}, interval: 200ms, startPeriod: 10s}}
  deploy:
    strategy: canary
    canary:
      steps: [{{setWeight: 20}}, {{pause: 3s}}, {{setWeight: 50}}, {{pause: 3s}}]
      analysis: {{interval: 1s, successRate: 0.95, minRequests: 10}}
"""

BLUE_GREEN = f"""
apiVersion: warren.io/v1
kind: Service
metadata: {{name: web}}
spec:
  image: {DEMO}:v1
  replicas: 2
  ports: [{{published: PORT, target: 8080}}]
  healthCheck: {{http: {{path: /healthz}}, interval: 200ms, startPeriod: 10s}}
  deploy: {{blueGreen: {{autoPromote: false}}}}  # promotion by hand; --strategy blue-green
"""


class CountingLoad(LoadGenerator):
    """Also counts every failure by its text (LoadSnapshot keeps only the first 20)."""

    def __init__(self, url: str, **kwargs: float) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        self.failures: Counter[str] = Counter()

    def _count(self, version: str | None, error: str | None) -> None:
        super()._count(version, error)
        if error is not None:
            with self._lock:
                self.failures[error] += 1


def ready(client: Client, n: int, revision: int | None = None) -> bool:
    tasks = [t for t in client.list_tasks("web") if t.ready]
    return len(tasks) == n and (revision is None or {t.revision for t in tasks} == {revision})


def versions(http: httpx.Client, url: str, n: int, **headers: str) -> set[str]:
    return {http.get(url, headers=headers).json()["version"] for _ in range(n)}


def test_canary_by_image_tag_and_a_bad_canary(
    container_server: tuple[ServerProcess, Engine, str], tmp_path: Path
) -> None:
    server, _, _ = container_server
    client = server.client()
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(CANARY.replace("PORT", str(port)))
    applied = warren(server, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    wait_for(lambda: ready(client, 4), 30, "4 ready")

    with CountingLoad(f"http://127.0.0.1:{port}/", rate=200, connections=8) as load:
        update = warren(server, "service", "update", "web", "--image", f"{DEMO}:v2", "--detach")
        assert update.returncode == 0, update.stderr
        shares: dict[int, float] = {}
        for weight in (20, 50):
            wait_for(
                lambda w=weight: client.deployment_status("web").weights.get("2") == w,
                30, f"weight {weight}",
            )  # fmt: skip
            time.sleep(0.3)  # requests in flight at the change
            before = load.snapshot()
            time.sleep(2.0)
            window = load.snapshot().since(before)
            # The window lay inside the step (a 3 s pause follows each weight).
            assert client.deployment_status("web").weights.get("2") == weight
            shares[weight] = 100 * window.versions["v2"] / max(1, sum(window.versions.values()))
        wait_for(lambda: client.deployment_status("web").phase == Phase.SUCCEEDED, 30, "promotion")
        good = load.snapshot()
        assert good.failed == 0, good.errors
        for weight, share in shares.items():
            assert abs(share - weight) <= 3, shares
        wait_for(lambda: ready(client, 4, revision=2), 15, "4 ready on revision 2")

        # A bad canary: the same image, failing 30% of its requests (an env change makes a
        # revision too).
        stable = {t.id for t in client.list_tasks("web") if t.state.active}
        bad = warren(server, "service", "update", "web", "--env", "FAIL_RATE=0.3")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        status = client.deployment_status("web")
        assert status.phase == Phase.FAILED, status
        assert "success rate" in status.message, status.message
        assert status.step == 1, status  # stopped at its first step
        # The stable revision is the service's again (a write of its own, just after the failure).
        wait_for(lambda: client.get_service("web").revision == 2, 5, "revision 2 current")
        stopped = load.snapshot()
        time.sleep(1.0)
        assert load.snapshot().since(stopped).failed == 0  # weight 0 for the canary at once
        wait_for(
            lambda: {t.revision for t in client.list_tasks("web") if t.state.active} == {2},
            20, "the canary's tasks gone",
        )  # fmt: skip
        # The stable tasks were never touched.
        assert {t.id for t in client.list_tasks("web") if t.state.active} == stable
    result = load.stop()
    assert result.versions.keys() == {"v1", "v2"}, result.versions
    # Every failed request is one the bad canary answered with the demo app's injected failure.
    assert result.failed > 0
    assert load.failures == {'HTTP 500: {"error": "injected failure"}': result.failed}


def test_blue_green_by_image_tag_preview_switch_and_rollback(
    container_server: tuple[ServerProcess, Engine, str], tmp_path: Path
) -> None:
    server, _, _ = container_server
    client = server.client()
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(BLUE_GREEN.replace("PORT", str(port)))
    created = warren(
        server, "service", "create", "-f", str(manifest), "--strategy", "blue-green"
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    wait_for(lambda: ready(client, 2), 30, "2 ready")
    url = f"http://127.0.0.1:{port}/"
    with LoadGenerator(url, rate=200, connections=8) as load, httpx.Client() as http:
        update = warren(server, "service", "update", "web", "--image", f"{DEMO}:v2")
        assert update.returncode == 1 and "awaiting_promotion" in update.stderr, update.stderr
        assert versions(http, url, 20) == {"v1"}
        assert versions(http, url, 10, **{"X-Warren-Preview": "1"}) == {"v2"}
        assert load.snapshot().versions.keys() == {"v1"}

        promoted = warren(server, "deploy", "promote", "web")
        assert promoted.returncode == 0, promoted.stderr
        assert versions(http, url, 20) == {"v2"}  # switched by the time promote answers
        time.sleep(0.3)  # requests in flight at the switch
        switched = load.snapshot()
        time.sleep(0.5)
        assert load.snapshot().since(switched).versions.keys() == {"v2"}

        blue = {t.id for t in client.list_tasks("web") if t.revision == 1 and t.ready}
        back = warren(server, "service", "rollback", "web", "--detach")
        assert back.returncode == 0, back.stderr
        # The blue containers are still warm: they take the traffic back at once.
        wait_for(lambda: versions(http, url, 5) == {"v1"}, 1, "back on v1")
        serving = {t.id for t in client.list_tasks("web") if t.ready and t.state == "running"}
        assert blue and blue <= serving, (blue, serving)
        history = client.list_deployments("web")
        assert any(d.reason == "InstantRollback" for d in history[-1].decisions)
        time.sleep(0.3)
        rolled = load.snapshot()
        time.sleep(0.5)
        assert load.snapshot().since(rolled).versions.keys() == {"v1"}
    result = load.stop()
    assert result.failed == 0, result.errors
    assert result.versions["v2"] > 0
