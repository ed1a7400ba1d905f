"""Notifications of deployment events from a real server to a real receiver (an HTTP server of
the test's own, on loopback, recording every POST): the demo app's rolling updates told to the
server's receiver (``--notify``) and to a service's (``deploy.notify``, Slack's shape), a failed
update and its rollback, and a receiver that fails twice — told on the third try, while the
rollout went on without it."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_checks import apply
from tests.servers import ServerProcess, wait_for
from warren.domain.deployments import Phase

pytestmark = pytest.mark.integration


class Receiver:
    """Records every POST (time, path, body, status). A path answers the statuses scripted for
    it first, then 200; a path in ``held`` waits (at most 30 s) for ``release`` before
    answering."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict[str, Any], int]] = []
        self.script: dict[str, list[int]] = {}
        self.held: set[str] = set()
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                came = time.time()
                with receiver.lock:
                    statuses = receiver.script.get(self.path) or []
                    status = statuses.pop(0) if statuses else 200
                    hold = status == 200 and self.path in receiver.held
                if hold:
                    receiver.release.wait(30)
                with receiver.lock:
                    receiver.calls.append((came, self.path, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """What ``path`` was told (answered 2xx), in order."""
        with self.lock:
            return [body for _, p, body, status in self.calls if p == path and status < 300]

    def told(self, path: str, deployment: str | None = None) -> list[str]:
        """The events ``path`` was told (of ``deployment``), in order."""
        return [
            b["event"]
            for b in self.bodies(path)
            if deployment is None or b.get("deployment") == deployment
        ]

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def service(name: str, version: str, notify: list[dict[str, Any]] | None = None,
            **env: str) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "warren.io/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": 2,
            "env": {"VERSION": version, **env},
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms", "retries": 2},
            "stopGrace": "2s",
            "drainTimeout": "1s",
            "deploy": {
                "updateConfig": {"monitor": "0s", "parallelism": 2, "healthyDeadline": "10s"},
                "notify": notify or [],
            },
        },
    }


def ended(server: ServerProcess, name: str, sequence: int, timeout: float = 40) -> Phase:
    """The phase deployment ``NAME-SEQUENCE`` ended in."""
    client = server.client()

    def phase() -> Phase | None:
        found = [d for d in client.list_deployments(name) if d.id == f"{name}-{sequence}"]
        return found[0].phase if found and found[0].phase.terminal else None

    return wait_for(phase, timeout, f"{name}-{sequence} to end")


def ready(server: ServerProcess, name: str, count: int = 2) -> Callable[[], bool]:
    client = server.client()
    return lambda: len([t for t in client.list_tasks(name) if t.ready]) == count


def test_rolling_updates_are_told_to_the_servers_receiver_and_to_the_services(
    server_factory: Callable[..., ServerProcess], receiver: Receiver, tmp_path: Path
) -> None:
    server = server_factory(extra=["--notify", f"{receiver.url}/all"]).start()
    chat = [{"url": f"{receiver.url}/chat/T0/SECRET", "format": "slack", "on": ["succeeded"]}]
    apply(server, tmp_path, service("web", "v1", chat))
    apply(server, tmp_path, service("api", "v1"))
    wait_for(ready(server, "web"), 20, "web ready")
    wait_for(ready(server, "api"), 20, "api ready")
    assert receiver.calls == []  # a service created is no deployment

    apply(server, tmp_path, service("web", "v2", chat))
    apply(server, tmp_path, service("api", "v2"))
    assert ended(server, "web", 1) == ended(server, "api", 1) == Phase.SUCCEEDED
    both = ("web-1", "api-1")
    wait_for(
        lambda: all(receiver.told("/all", d) == ["started", "succeeded"] for d in both),
        10, "both told to the server's receiver",
    )  # fmt: skip
    body = next(
        b for b in receiver.bodies("/all") if b["service"] == "web" and b["event"] == "succeeded"
    )
    shown = ("service", "deployment", "kind", "strategy", "event", "phase")
    assert {k: body[k] for k in shown} == {
        "service": "web", "deployment": "web-1", "kind": "update", "strategy": "rolling",
        "event": "succeeded", "phase": "succeeded",
    }  # fmt: skip
    assert (body["fromRevision"], body["toRevision"], body["reason"]) == (1, 2, "RolloutComplete")
    assert body["figures"]["readyTasks"] == body["figures"]["desiredTasks"] == 2
    assert body["time"].endswith("Z") and datetime.fromisoformat(body["time"]).tzinfo is not None
    assert body["message"]

    # The service's own receiver: Slack's shape, succeeded only, one line; never api's.
    wait_for(lambda: receiver.bodies("/chat/T0/SECRET"), 10, "web-1 told to the chat")
    [slack] = receiver.bodies("/chat/T0/SECRET")
    assert list(slack) == ["text"] and "\n" not in slack["text"]
    assert slack["text"].startswith("web: rolling update web-1 (revision 1 → 2) succeeded — ")
    assert slack["text"].endswith("(2/2 tasks ready)")


def test_a_failed_update_tells_rolling_back_then_rolled_back(
    server: ServerProcess, receiver: Receiver, tmp_path: Path
) -> None:
    notify = [{"url": f"{receiver.url}/web"}]
    apply(server, tmp_path, service("web", "v1", notify))
    wait_for(ready(server, "web"), 20, "web ready")
    apply(server, tmp_path, service("web", "v2", notify, UNHEALTHY="1"))
    assert ended(server, "web", 1) == Phase.ROLLED_BACK
    assert ended(server, "web", 2) == Phase.SUCCEEDED
    wait_for(
        lambda: receiver.told("/web", "web-1") == ["started", "rolling_back", "rolled_back"]
        and receiver.told("/web", "web-2") == ["started", "succeeded"],
        10, "the release and its rollback told",
    )  # fmt: skip
    failed = receiver.bodies("/web")
    rolling_back = next(b for b in failed if b["event"] == "rolling_back")
    assert rolling_back["reason"] == "HealthCheckFailed" and rolling_back["phase"] == "rolling_back"
    rollback = next(b for b in failed if b["deployment"] == "web-2")
    assert (rollback["kind"], rollback["fromRevision"], rollback["toRevision"]) == (
        "rollback", 2, 1,
    )  # fmt: skip


def test_a_receiver_failing_twice_is_told_on_the_third_try_and_the_rollout_does_not_wait(
    server_factory: Callable[..., ServerProcess], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script["/flaky"] = [500, 500]
    receiver.held.add("/flaky")  # the third answer (a 200) waits for the test's word
    server = server_factory(extra=["--notify", f"{receiver.url}/flaky"]).start()
    apply(server, tmp_path, service("web", "v1"))
    wait_for(ready(server, "web"), 20, "web ready")
    apply(server, tmp_path, service("web", "v2"))

    # Succeeded while its first notification has had no 2xx answer: it did not wait.
    assert ended(server, "web", 1) == Phase.SUCCEEDED
    assert receiver.bodies("/flaky") == []
    receiver.release.set()
    wait_for(lambda: receiver.told("/flaky") == ["started", "succeeded"], 15, "told at last")
    with receiver.lock:
        started = [(t, status) for t, _, b, status in receiver.calls if b["event"] == "started"]
    assert [status for _, status in started] == [500, 500, 200]
    # Back-off: 1 s, then 2 s (the third was timed when it came, before it was held).
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(started)]
    assert 0.9 < gaps[0] < 1.9 and 1.9 < gaps[1] < 3.5, gaps


def test_a_restarted_server_does_not_tell_again_what_was_told(
    server_factory: Callable[..., ServerProcess], receiver: Receiver, tmp_path: Path
) -> None:
    server = server_factory(extra=["--notify", f"{receiver.url}/all"]).start()
    apply(server, tmp_path, service("web", "v1"))
    wait_for(ready(server, "web"), 20, "web ready")
    apply(server, tmp_path, service("web", "v2"))
    assert ended(server, "web", 1) == Phase.SUCCEEDED
    # The log says "told" once the store has it that the receiver was told.
    wait_for(lambda: "web-1 succeeded: told http://127.0.0.1:" in server.log(), 10, "recorded")
    server.stop()
    server.start()
    apply(server, tmp_path, service("web", "v3"))
    assert ended(server, "web", 2) == Phase.SUCCEEDED
    wait_for(lambda: receiver.told("/all", "web-2") == ["started", "succeeded"], 10, "web-2 told")
    assert [(b["deployment"], b["event"]) for b in receiver.bodies("/all")] == [
        ("web-1", "started"), ("web-1", "succeeded"), ("web-2", "started"), ("web-2", "succeeded"),
    ]  # fmt: skip
