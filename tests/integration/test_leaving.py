"""A node that leaves cleanly, with real processes: ``warren server`` (node test-node, on
127.0.0.1) and ``warren worker`` (node w, on 127.0.0.2), a service of 2 replicas on the worker,
published on a port both ingresses serve, and a steady load through the server's ingress.

SIGTERM to the worker: it drains its node, each task's replacement comes up on the server's
node before the old task stops, no request fails, and the worker exits 0 — saying how far it
came — well within its drain timeout; started again, the node is active. The server's own node
leaves the same way. A second SIGTERM during the drain stops the tasks at once and exits
non-zero. A server alone, whose tasks no
other node can take, says so in one line and exits at once, its tasks left running for its
restart to adopt."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import (
    ServerProcess,
    free_port,
    ingress_processes,
    pid_alive,
    wait_for,
    warren,
)
from warren.client import Client
from warren.demo.load import LoadGenerator
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task

pytestmark = pytest.mark.integration

WORKER_ADDRESS = "127.0.0.2"
DRAIN_TIMEOUT = 30.0


def web_spec(port: int, **env: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": 2,
            "env": {"VERSION": "v1", **env},
            "ports": [{"published": port}],
            "healthCheck": {
                "http": {"path": "/healthz"},
                "interval": "200ms",
                "startPeriod": "10s",  # STARTUP_DELAY_S: not a failure
            },
            "stopGrace": "2s",
            "drainTimeout": "1s",
        }
    )


@dataclass
class WorkerProcess:
    """``python -m warren worker`` as node w, on 127.0.0.2; killed at teardown with its tasks
    and its ingress, by PID."""

    data_dir: Path
    manager: str
    token: str
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "worker.log"

    def start(self, drain_timeout: float = DRAIN_TIMEOUT) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "warren", "worker",
                    "--manager", self.manager, "--token", self.token,
                    "--node-name", "w", "--advertise", WORKER_ADDRESS,
                    "--data-dir", str(self.data_dir),
                    "--http-port", str(self.http_port),
                    "--api", f"{WORKER_ADDRESS}:{self.api_port}",
                    "--ingress-workers", "1", "--heartbeat-ttl", "5s",
                    "--drain-timeout", f"{drain_timeout:g}s",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exited(self, within: float) -> int:
        """The exit status, once it exits within ``within`` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit in {within}s:\n{self.log()}") from None

    def task_pids(self) -> list[int]:
        pids = []
        for record in (self.data_dir / "agent" / "tasks").glob("*.json"):
            with contextlib.suppress(Exception):
                pids.append(int(json.loads(record.read_text())["pid"]))
        return pids

    def kill_everything(self, pids: list[int]) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pid in [*pids, *self.task_pids()]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in ingress_processes(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class TwoNodes:
    server: ServerProcess
    worker: WorkerProcess
    client: Client
    port: int
    task_pids: list[int] = field(default_factory=list)
    """Every task process seen on the worker, killed at teardown."""

    def web(self) -> list[Task]:
        return [t for t in self.client.list_tasks("web") if t.wants_running and t.state.active]

    def ready_on(self, node: str) -> int:
        return sum(1 for t in self.web() if t.ready and t.node == node)


@pytest.fixture
def nodes(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> Iterator[TwoNodes]:
    server = server_factory(extra=["--ingress-workers", "1"]).start()
    client = server.client()
    worker = WorkerProcess(tmp_path / "w", server.addr, client.join_token())
    nodes = TwoNodes(server, worker, client, free_port())
    try:
        worker.start()
        wait_for(lambda: {n.name: n.status for n, _ in client.list_nodes()}.get("w") == "ready",
                 30, "node w to be ready")  # fmt: skip
        yield nodes
    finally:
        worker.kill_everything(nodes.task_pids)
        client.close()


def place_on_worker(nodes: TwoNodes, **env: str) -> list[Task]:
    """The service's 2 tasks, both on w: the server's node is drained while they are placed,
    then active again (and empty)."""
    client = nodes.client
    client.drain_node("test-node")
    client.create_service(web_spec(nodes.port, **env))
    wait_for(lambda: nodes.ready_on("w") == 2, 60, "2 ready tasks on w")
    client.activate_node("test-node")
    tasks = nodes.web()
    nodes.task_pids.extend(int(t.runtime_id or 0) for t in tasks)
    return tasks


def said(log: str) -> list[str]:
    """The lines of the drain (on stderr), in order."""
    words = ("draining:", "moved ", "left the cluster", "interrupted:", "drain timeout")
    return [line.strip() for line in log.splitlines() if line.strip().startswith(words)]


def test_a_worker_stopped_moves_its_tasks_first_and_fails_no_request(nodes: TwoNodes) -> None:
    old = place_on_worker(nodes)
    with LoadGenerator(f"http://127.0.0.1:{nodes.port}/", rate=100, connections=4) as load:
        wait_for(lambda: load.snapshot().requests >= 100, 30, "the load to run")
        assert nodes.worker.proc is not None
        sent = time.monotonic()
        nodes.worker.proc.send_signal(signal.SIGTERM)
        status = nodes.worker.exited(DRAIN_TIMEOUT + 10)
        took = time.monotonic() - sent
        before = load.snapshot().requests
        wait_for(lambda: load.snapshot().requests >= before + 100, 30, "more requests")
        outcome = load.snapshot()
    log = nodes.worker.log()
    assert status == 0, log
    assert took < DRAIN_TIMEOUT, f"{took:.1f}s: it waited for the timeout\n{log}"
    assert outcome.failed == 0, (outcome.failed, outcome.requests, outcome.errors[:5])
    assert said(log) == ["draining: 2 tasks to move", "moved 1/2", "moved 2/2", "left the cluster"]
    assert "Traceback" not in log

    # Each replacement was ready on the server's node before the old task on w stopped.
    tasks = {t.id: t for t in nodes.client.list_tasks("web")}
    new = [t for t in tasks.values() if t.wants_running and t.state.active]
    assert len(new) == 2 and all(t.ready and t.node == "test-node" for t in new)
    for gone in old:
        stopped = tasks[gone.id]
        assert stopped.state == "stopped" and "drained: moved to test-node" in stopped.message
        replacement = next(t for t in new if t.slot == gone.slot)
        assert replacement.ready_at is not None and stopped.finished_at is not None
        assert replacement.ready_at < stopped.finished_at
        assert not pid_alive(int(gone.runtime_id or 0))
    summary = nodes.client.get_node("w")
    assert summary.node.leaving and summary.tasks == 0
    listed = warren(nodes.server, "node", "ls")
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["w"])
    assert "drain (shutdown)" in row, listed.stdout

    # Started again: the drain was its own, so the node is active again.
    nodes.worker.start()
    wait_for(lambda: nodes.client.get_node("w").node.availability == "active", 30, "w active")
    assert nodes.client.get_node("w").node.drained_by is None


def test_a_server_stopped_moves_its_own_tasks_to_the_worker(nodes: TwoNodes) -> None:
    # The server's node drains itself, and its own controllers move the tasks before it exits.
    client, server = nodes.client, nodes.server
    client.drain_node("w")
    client.create_service(web_spec(nodes.port))
    wait_for(lambda: nodes.ready_on("test-node") == 2, 60, "2 ready tasks on the server's node")
    client.activate_node("w")
    old = nodes.web()
    url = f"http://{WORKER_ADDRESS}:{nodes.port}/"  # the worker's ingress: it outlives the server
    with LoadGenerator(url, rate=100, connections=4) as load:
        wait_for(lambda: load.snapshot().requests >= 100, 30, "the load to run")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:
            status = server.proc.wait(DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit:\n{server.log()}") from None
        before = load.snapshot().requests
        wait_for(lambda: load.snapshot().requests >= before + 100, 30, "more requests")
        outcome = load.snapshot()
    assert status == 0, server.log()
    assert outcome.failed == 0, (outcome.failed, outcome.requests, outcome.errors[:5])
    lines = said(server.log())
    assert lines[0] == "draining: 2 tasks to move" and lines[-1] == "left the cluster", lines
    assert not any(pid_alive(int(t.runtime_id or 0)) for t in old)
    nodes.task_pids.extend(nodes.worker.task_pids())


def test_a_second_signal_stops_the_tasks_at_once(nodes: TwoNodes) -> None:
    # Tasks that take 4 s to start: the replacements keep the drain going while we interrupt.
    old = place_on_worker(nodes, STARTUP_DELAY_S="4")
    assert nodes.worker.proc is not None
    nodes.worker.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining: 2 tasks to move" in said(nodes.worker.log()), 20, "the drain")
    sent = time.monotonic()
    nodes.worker.proc.send_signal(signal.SIGTERM)
    status = nodes.worker.exited(10)
    took = time.monotonic() - sent
    log = nodes.worker.log()
    assert status == 1, log
    assert took < 3, f"{took:.1f}s to stop at once"
    assert said(log)[-1] == "interrupted: stopping 2 tasks at once, without moving them", log
    assert not any(pid_alive(int(t.runtime_id or 0)) for t in old)
    for gone in old:
        assert nodes.client.get_task(gone.id).state == "stopped"


def test_a_server_alone_says_its_tasks_cannot_move_and_exits_at_once(
    server: ServerProcess,
) -> None:
    port = free_port()
    client = server.client()
    client.create_service(web_spec(port))
    wait_for(lambda: sum(t.ready for t in client.list_tasks("web")) == 2, 30, "2 ready tasks")
    pids = server.task_pids()
    assert server.proc is not None
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        status = server.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not exit:\n{server.log()}") from None
    took = time.monotonic() - sent
    assert status == 0 and took < 5, (status, took, server.log())
    assert said(server.log()) == [
        "draining: 2 tasks to move",
        "draining: 2 tasks cannot move: no node is ready (all down or drained); "
        "they keep running here (a restarted node adopts them)",
    ]
    assert all(pid_alive(pid) for pid in pids)

    server.start()  # back: active again, its tasks adopted, not started again
    client = server.client()
    wait_for(lambda: sum(t.ready for t in client.list_tasks("web") if t.wants_running) == 2,
             30, "the tasks adopted")  # fmt: skip
    assert client.get_node("test-node").node.availability == "active"
    assert sorted(server.task_pids()) == sorted(pids)
    running = [t for t in client.list_tasks("web") if t.state.active]
    assert len(running) == 2, running  # the replacements no node could take are gone
