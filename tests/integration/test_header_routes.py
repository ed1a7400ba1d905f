"""A canary's header route through the real ingress, with the demo app: at weight 0, requests
that carry ``X-Beta: 1`` (and only they) reach the canary; an abort takes the route away with
the canary. ``deploy plan`` shows the step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.domain.deployments import Phase

SERVICE = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 2
  env: {VERSION: v1}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    strategy: canary
    canary:
      steps:
        - setHeaderRoute:
            name: beta
            match: [{headerName: X-Beta, headerValue: {exact: "1"}}]
        - pause: {}
"""


def _versions(port: int, n: int = 20, **headers: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5) as http:
        for _ in range(n):
            seen[http.get(f"http://127.0.0.1:{port}/", headers=headers).json()["version"]] += 1
    return seen


def test_at_weight_0_only_requests_with_the_header_see_the_canary(
    server: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE.replace("PORT", str(port)))
    applied = warren(server, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    plan = warren(server, "deploy", "plan", "web", "--env", "VERSION=v2")
    assert "header route beta (X-Beta = '1') to revision 2" in plan.stdout, plan.stdout

    update = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--detach")
    assert update.returncode == 0, update.stderr
    client = server.client()
    wait_for(
        lambda: client.deployment_status("web").phase == Phase.AWAITING_PROMOTION, 30,
        "the canary at its pause",
    )  # fmt: skip
    status = client.deployment_status("web")
    assert status.weights.get("2", 0) == 0
    assert any(d.reason == "HeaderRouteSet" for d in status.decisions)
    wait_for(lambda: _versions(port, 5, **{"X-Beta": "1"}) == {"v2": 5}, 10, "the route")
    assert _versions(port, **{"X-Beta": "1"}) == {"v2": 20}
    assert _versions(port, **{"X-Beta": "0"}) == {"v1": 20}
    assert _versions(port) == {"v1": 20}

    aborted = warren(server, "deploy", "abort", "web")
    assert aborted.returncode == 0, aborted.stderr
    wait_for(lambda: _versions(port, 5, **{"X-Beta": "1"}) == {"v1": 5}, 20, "the route gone")
