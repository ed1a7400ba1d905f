"""External checks of a canary against real servers: webhooks on a loopback HTTP receiver (each
stage called in order, a failing pre-promotion webhook fails the release) and a PromQL metric
against a real Prometheus that scrapes the server's own /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus import running_prometheus
from tests.servers import ServerProcess, free_port, wait_for
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Phase, Reason

pytestmark = pytest.mark.integration


class Receiver:
    """Records every webhook call; answers each name with the status set in ``statuses``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.calls.append(body)
                status = receiver.statuses.get(body["name"], 200)
                payload = b"not approved" if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def types(self, deployment: str) -> list[str]:
        return [c["type"] for c in self.calls if c["deployment"] == deployment]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def canary_spec(port: int, analysis: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "warren.io/v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": 2,
            "env": {"VERSION": version},
            "ports": [{"published": port}],
            # Fast probes; a loaded machine may take longer than 3 of them to start the app.
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms", "startPeriod": "5s"},
            "deploy": {
                "strategy": "canary",
                "canary": {
                    "steps": [{"setWeight": 50}, {"pause": "3s"}],
                    "analysis": analysis,
                },
            },
        },
    }


def apply(server: ServerProcess, tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "web.json"  # JSON is YAML
    path.write_text(json.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-m", "warren", "apply", "-f", str(path), "--detach"],
        env=server.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def wait_ended(server: ServerProcess, timeout: float = 40) -> Any:
    client = server.client()
    return wait_for(
        lambda: (s := client.deployment_status("web")).done and s.deployment_id and s, timeout,
        "the deployment to end",
    )  # fmt: skip


def test_webhooks_run_in_order_and_a_failing_one_fails_the_canary(
    server: ServerProcess, receiver: Receiver, tmp_path: Path
) -> None:
    port = free_port()
    analysis = {
        "interval": "1s", "successRate": 0.95, "minRequests": 5,
        "webhooks": [
            {"name": "gate", "type": "pre-rollout", "url": f"{receiver.url}/gate"},
            {"name": "smoke", "type": "rollout", "url": f"{receiver.url}/smoke"},
            {"name": "approve", "type": "pre-promotion", "url": f"{receiver.url}/approve",
             "metadata": {"ticket": "OPS-1"}},
            {"name": "notify", "type": "post-rollout", "url": f"{receiver.url}/notify"},
        ],
    }  # fmt: skip
    apply(server, tmp_path, canary_spec(port, analysis))
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 2, 20, "2 ready")
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=120, connections=6) as load:
        apply(server, tmp_path, canary_spec(port, analysis, "v2"))
        good = wait_ended(server)
        assert good.phase == Phase.SUCCEEDED, good.message
        wait_for(lambda: "post-rollout" in receiver.types(good.deployment_id), 10, "notify")
        types = receiver.types(good.deployment_id)
        # Analysis windows (with their rollout webhook) go on while pre-promotion is asked.
        assert types[0] == "pre-rollout" and types[-1] == "post-rollout"
        assert types.count("pre-promotion") == 1 and types.count("rollout") >= 2
        assert set(types[1:-1]) == {"rollout", "pre-promotion"}
        approve = next(c for c in receiver.calls if c["name"] == "approve")
        assert approve["metadata"] == {"ticket": "OPS-1"} and approve["toRevision"] == 2
        notify = next(c for c in receiver.calls if c["name"] == "notify")
        assert notify["phase"] == "succeeded"

        receiver.statuses["approve"] = 503
        apply(server, tmp_path, canary_spec(port, analysis, "v3"))
        bad = wait_ended(server)
        assert bad.phase == Phase.FAILED and bad.revision == 2
        assert "pre-promotion webhook approve: HTTP 503 not approved" in bad.message
        # The post-rollout call is logged but leaves the reason the release failed.
        wait_for(
            lambda: client.deployment_status("web").decisions[-1].reason
            == Reason.WEBHOOKS_CALLED, 10, "the post-rollout webhook",
        )  # fmt: skip
        assert client.deployment_status("web").message == bad.message
        assert receiver.types(bad.deployment_id)[-1] == "post-rollout"
    result = load.stop()
    assert result.failed == 0, result.errors


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    with running_prometheus(tmp_path, [f"127.0.0.1:{server.api_port}"]) as url:
        yield url


ERROR_RATIO = (
    'sum(increase(warren_ingress_revision_errors_5xx_total{service="{{service}}",'
    'revision="{{revision}}"}[{{interval}}])) / sum(increase('
    'warren_ingress_revision_requests_total{service="{{service}}",revision="{{revision}}"}'
    "[{{interval}}]))"
)


def test_a_prometheus_metric_passes_a_good_canary_and_fails_a_bad_one(
    server: ServerProcess, prometheus: str, tmp_path: Path
) -> None:
    port = free_port()
    analysis = {
        "interval": "3s", "minRequests": 0,
        "metrics": [{
            "name": "error-ratio",
            "prometheus": {"address": prometheus, "query": ERROR_RATIO},
            "successCondition": "result < 0.1",
        }],
    }  # fmt: skip
    doc = canary_spec(port, analysis)
    doc["spec"]["deploy"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": "7s"}]
    apply(server, tmp_path, doc)
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 2, 20, "2 ready")
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=150, connections=6) as load:
        good_doc = canary_spec(port, analysis, "v2")
        good_doc["spec"]["deploy"] = doc["spec"]["deploy"]
        apply(server, tmp_path, good_doc)
        good = wait_ended(server)
        assert good.phase == Phase.SUCCEEDED, good.message
        passed = [d for d in good.decisions if d.reason == Reason.ANALYSIS_PASSED]
        assert passed and all("metric error-ratio = 0 meets" in d.message for d in passed)

        bad_doc = canary_spec(port, analysis, "v3")
        bad_doc["spec"]["deploy"] = doc["spec"]["deploy"]
        bad_doc["spec"]["env"]["FAIL_RATE"] = "0.5"
        apply(server, tmp_path, bad_doc)
        bad = wait_ended(server)
        assert bad.phase == Phase.FAILED and bad.revision == 2, bad.message
        assert "metric error-ratio = 0." in bad.message and "fails `result < 0.1`" in bad.message
    result = load.stop()
    assert all("injected failure" in e for e in result.errors), result.errors
