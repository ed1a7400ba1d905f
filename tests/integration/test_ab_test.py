"""An A/B test through the real ingress, with the demo app: revision 1 answers 20 ms slower
than revision 2; new clients are split, each kept on its revision by the cookie; ``deploy
status`` shows both revisions' figures side by side; at the end the faster one wins, with
its confidence, and takes every slot — no request failed on the way."""

from __future__ import annotations

import threading
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
  env: {VERSION: v1, LATENCY_MS: "20"}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    strategy: ab-test
    abTest: {weight: 50, duration: 8s, interval: 2s, minRequests: 40}
"""


def test_the_faster_revision_wins_its_ab_test(server: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE.replace("PORT", str(port)))
    assert warren(server, "apply", "-f", str(manifest)).returncode == 0
    url = f"http://127.0.0.1:{port}/"
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answer = httpx.get(url, timeout=5)  # no cookie jar: a new client each time
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if answer.status_code != 200:
                failures.append(str(answer.status_code))
            else:
                seen[answer.json()["version"]] += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        update = warren(server, "service", "update", "web", "--env", "VERSION=v2",
                        "--env", "LATENCY_MS=0", "--detach")  # fmt: skip
        assert update.returncode == 0, update.stderr
        client = server.client()
        wait_for(lambda: bool(client.deployment_status("web").experiment), 30, "figures")
        shown = warren(server, "deploy", "status", "web")
        assert "A/B test" in shown.stdout and "revision 1:" in shown.stdout, shown.stdout
        assert "revision 2:" in shown.stdout
        with httpx.Client(timeout=5) as sticky:  # one client: one revision, whatever the split
            versions = {sticky.get(url).json()["version"] for _ in range(10)}
        assert len(versions) == 1
        wait_for(lambda: client.deployment_status("web").done, 60, "the end of the test")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    status = client.deployment_status("web")
    assert status.phase == Phase.SUCCEEDED, status.message
    won = [d for d in status.decisions if d.reason == "ExperimentWon"]
    assert won and "revision 2 won (median latency" in won[0].message, won
    assert won[0].measured["confidence"] > 0.95
    assert failures == []
    assert seen["v1"] > 40 and seen["v2"] > 40
    wait_for(
        lambda: {t.revision for t in client.list_tasks("web") if t.ready} == {2}, 30, "v2 alone"
    )
