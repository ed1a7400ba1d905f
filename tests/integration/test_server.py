"""The real server with the process driver and the demo app, through the real ingress: requests
spread over the tasks, a killed task is replaced, a restarted (even SIGKILLed) server re-adopts
the running processes, and removing the service stops them all."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.servers import ServerProcess, free_port, pid_alive, wait_for
from warren.client import Client
from warren.domain.errors import AuthError, NotFoundError, ValidationError
from warren.domain.specs import ServiceSpec

pytestmark = pytest.mark.integration


def demo_spec(port: int, replicas: int = 3, **env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": replicas,
            "env": {"VERSION": "v1", **env},
            "ports": [{"published": port}],
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms"},
            "stopGrace": "2s",
            "drainTimeout": "1s",
        }
    )


def ready(client: Client, n: int) -> bool:
    tasks = [t for t in client.list_tasks("web") if t.ready and t.wants_running]
    return len(tasks) == n


def answers(port: int, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5) as http:
        for _ in range(count):
            response = http.get(f"http://127.0.0.1:{port}/")
            assert response.status_code == 200, response.text
            seen[response.json()["task"]] += 1
    return seen


def test_serves_replaces_readopts_and_removes(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory().start()
    port = free_port()
    client = server.client()
    client.create_service(demo_spec(port))
    wait_for(lambda: ready(client, 3), 20, "3 ready tasks")

    seen = answers(port, 30)
    assert len(seen) == 3 and set(seen.values()) == {10}, seen  # round robin

    # kill -9 one task's process: it is replaced in its slot.
    victim = client.list_tasks("web")[0]
    os.kill(int(victim.runtime_id or 0), signal.SIGKILL)

    def replaced() -> dict[str, int] | None:
        now_ready = {t.id: int(t.runtime_id or 0) for t in client.list_tasks("web") if t.ready}
        return now_ready if len(now_ready) == 3 and victim.id not in now_ready else None

    running = wait_for(replaced, 20, "the killed task to be replaced")
    failed = client.get_task(victim.id)
    assert failed.state == "failed" and "SIGKILL" in failed.message

    # Stop the server (SIGTERM), start it again: the same processes keep serving.
    server.stop(signal.SIGTERM)
    assert all(pid_alive(pid) for pid in running.values())
    server.start()
    client = server.client()
    wait_for(lambda: ready(client, 3), 20, "re-adopted tasks to be ready")
    after = {t.id: int(t.runtime_id or 0) for t in client.list_tasks("web") if t.ready}
    assert after == running, "tasks were restarted instead of re-adopted"
    assert set(answers(port, 9)) == set(running)

    # The same after kill -9 of the server.
    server.stop(signal.SIGKILL)
    server.start()
    client = server.client()
    wait_for(lambda: ready(client, 3), 20, "re-adopted tasks after SIGKILL")
    after = {t.id: int(t.runtime_id or 0) for t in client.list_tasks("web") if t.ready}
    assert after == running

    # Remove: every process stops, every record goes.
    client.delete_service("web")
    wait_for(lambda: not [t for t in client.list_tasks() if t.service == "web"], 20, "cleanup")
    assert not any(pid_alive(pid) for pid in running.values())
    with pytest.raises(NotFoundError):
        client.get_service("web")


def test_a_request_that_outlives_the_drain_gets_504(server: ServerProcess) -> None:
    # The task answers in 10 s; scaled to 0, it is drained for 300 ms, then stopped. The
    # request in flight must get the ingress's 504 at the end of the drain, never the 502 of a
    # connection that dies with the process.
    port = free_port()
    client = server.client()
    spec = demo_spec(port, replicas=1, LATENCY_MS="10000")
    client.create_service(spec.model_copy(update={"drain_timeout": 0.3, "stop_grace": 1.0}))
    wait_for(lambda: ready(client, 1), 20, "1 ready task")
    task = client.list_tasks("web")[0]
    answered: list[httpx.Response] = []

    def ask() -> None:
        with httpx.Client(timeout=15) as http:
            answered.append(http.get(f"http://127.0.0.1:{port}/"))

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    in_flight = 'warren_ingress_in_flight{service="web"} 1.0'
    wait_for(lambda: in_flight in httpx.get(f"{server.addr}/metrics").text, 10, "the request")
    began = time.monotonic()
    client.scale_service("web", 0)
    asking.join(15)
    took = time.monotonic() - began
    assert answered, "no answer"
    assert answered[0].status_code == 504, answered[0].text
    assert took < 5.0, took  # at the drain timeout, long before the task would have answered
    wait_for(lambda: not pid_alive(int(task.runtime_id or 0)), 10, "the task to stop")


def test_update_scale_and_logs(server: ServerProcess) -> None:
    port = free_port()
    client = server.client()
    client.create_service(demo_spec(port, replicas=2))
    wait_for(lambda: ready(client, 2), 20, "2 ready tasks")

    service, changed = client.patch_service("web", {"env": {"VERSION": "v2"}})[:2]
    assert changed and service.revision == 2
    assert service.spec.env == {"VERSION": "v2"}
    wait_for(
        lambda: (
            {r["version"] for r in _bodies(port, 6)} == {"v2"}
            and not [t for t in client.list_tasks("web") if t.revision == 1 and t.state.active]
        ),
        20,
        "every task on revision 2",
    )
    client.scale_service("web", 4)
    wait_for(lambda: ready(client, 4), 20, "4 ready tasks")
    assert client.get_service("web").revision == 2  # scaling makes no revision

    lines = client.logs("web", tail=5)
    assert any("listening on" in entry["line"] for entry in lines)
    events = client.list_events("web")
    assert {"service.created", "service.updated", "service.scaled"} <= {e.kind for e in events}
    metrics = httpx.get(f"{server.addr}/metrics").text
    assert 'warren_tasks{service="web",state="running"} 4.0' in metrics
    assert "warren_ingress_requests" in metrics


def _bodies(port: int, n: int) -> list[dict[str, str]]:
    with httpx.Client(timeout=5) as http:
        return [http.get(f"http://127.0.0.1:{port}/").json() for _ in range(n)]


def test_api_needs_the_token_and_names_bad_fields(server: ServerProcess) -> None:
    assert httpx.get(f"{server.addr}/healthz").status_code == 200
    assert httpx.get(f"{server.addr}/docs").status_code == 200
    assert httpx.get(f"{server.addr}/v1/services").status_code == 401
    with Client(server.addr, token="wrong") as bad, pytest.raises(AuthError, match="invalid"):
        bad.list_services()
    token = (server.data_dir / "admin.token").read_text().strip()
    assert oct((server.data_dir / "admin.token").stat().st_mode & 0o777) == "0o600"
    response = httpx.post(
        f"{server.addr}/v1/services",
        json={"name": "web", "command": ["x"], "replicas": -1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("replicas:")
    response = httpx.post(
        f"{server.addr}/v1/services",
        content=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    client = server.client()
    with pytest.raises(NotFoundError, match="nosuch"):
        client.patch_service("nosuch", {"replicas": 1})
    client.create_service(demo_spec(free_port(), replicas=0))
    with pytest.raises(ValidationError, match=r"spec\.replicas"):
        client.patch_service("web", {"replicas": -1})


def test_a_second_server_on_the_same_data_dir_is_refused(
    server: ServerProcess, server_factory: Callable[..., ServerProcess]
) -> None:
    twin = server_factory(server.data_dir.name)
    with pytest.raises(AssertionError, match="another warren process is using"):
        twin.start()


def test_events_stream_over_sse(server: ServerProcess) -> None:
    client = server.client()
    seen: list[str] = []
    connected = threading.Event()
    done = threading.Event()

    def follow() -> None:
        with server.client() as watcher:
            for event in watcher.stream_events(on_connect=connected.set):
                seen.append(event.kind)
                if event.kind == "service.removed":
                    done.set()
                    return

    threading.Thread(target=follow, daemon=True).start()
    assert connected.wait(10), "the event stream did not connect"
    client.create_service(demo_spec(free_port(), replicas=1))
    client.delete_service("web")
    assert done.wait(15), seen
    assert seen[:1] == ["service.created"] and "service.removed" in seen


def test_a_service_created_again_runs_its_new_spec(server: ServerProcess) -> None:
    """Removed, then created again under the same name: its revision 1 is a new one, so its
    tasks serve the new spec — at once, after a restart, and nothing of the old one is left."""
    port = free_port()
    client = server.client()
    client.create_service(demo_spec(port, replicas=2))
    wait_for(lambda: ready(client, 2), 20, "2 ready tasks of v1")
    assert {r["version"] for r in _bodies(port, 4)} == {"v1"}
    old_pids = set(server.task_pids())

    client.delete_service("web")
    # Refused while the old tasks are still stopping: created again as soon as they are gone.
    wait_for(lambda: client.create_service(demo_spec(port, replicas=2, VERSION="v2")), 20, "v2")
    wait_for(lambda: ready(client, 2), 20, "2 ready tasks of v2")
    assert {r["version"] for r in _bodies(port, 6)} == {"v2"}
    assert not any(pid_alive(pid) for pid in old_pids)

    # A restarted server re-adopts the new tasks, and only them.
    server.stop(signal.SIGTERM)
    server.start()
    client = server.client()
    wait_for(lambda: ready(client, 2), 20, "the re-adopted tasks to be ready")
    assert {r["version"] for r in _bodies(port, 6)} == {"v2"}
    running = {int(t.runtime_id or 0) for t in client.list_tasks("web") if t.state.active}
    assert {pid for pid in server.task_pids() if pid_alive(pid)} == running
    assert not any(pid_alive(pid) for pid in old_pids)
    assert "Traceback" not in server.log()


def test_the_ingress_limits_are_server_flags(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory(
        extra=[
            "--no-worker",
            "--ingress-head-timeout",
            "300ms",
            "--ingress-max-request-line",
            "100",
        ]
    ).start()

    def ask(request: bytes) -> tuple[bytes, float]:
        # From before the connection opens: the head timeout counts from its opening.
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer, time.monotonic() - began

    answer, _ = ask(b"GET /%s HTTP/1.1\r\nHost: web\r\n\r\n" % (b"a" * 100))
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert answer.endswith(b"\r\n\r\nrequest line longer than 100 bytes\n")
    answer, took = ask(b"GET / HTTP/1.1\r\nHost: web\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b"\r\n\r\nrequest head not received within 0.3s\n")
    assert 0.3 <= took < 2.0, took
