"""The ingress as a process of its own (``warren ingress``, started and supervised by ``warren
server``; two workers here, each a process): it outlives the server, so stopping the server
(SIGTERM) or killing it (kill -9) and starting it again under a steady load fails no request,
on a published port or on the shared port; and an ingress worker replaced by another (an
upgrade) hands its listening sockets over before it drains: no request fails either.

Real processes, a real load (``warren.demo.load``) of ~100 requests per second on each port;
and, in this process, the handover itself over the admin socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_ingress import Upstream
from tests.integration.test_ingress import web as web_route
from tests.servers import ServerProcess, free_port, pid_alive, wait_for
from warren.client import Client
from warren.demo.load import LoadGenerator, LoadSnapshot
from warren.domain.specs import ServiceSpec
from warren.ingress import Ingress
from warren.ingress.admin import AdminServer, take_over
from warren.ports import Route

pytestmark = pytest.mark.integration

RATE = 100.0
HOST = "web.test"
WORKERS = 2


def web_spec(port: int) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": 2,
            "env": {"VERSION": "v1"},
            "ports": [{"published": port}],
            "host": HOST,
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms"},
            "stopGrace": "2s",
            "drainTimeout": "1s",
        }
    )


def ready(client: Client, n: int) -> bool:
    return len([t for t in client.list_tasks("web") if t.ready and t.wants_running]) == n


@contextlib.contextmanager
def steady_load(server: ServerProcess, port: int) -> Iterator[list[LoadGenerator]]:
    """~100 requests per second on the published port, and as many on the shared port."""
    loads = [
        LoadGenerator(f"http://127.0.0.1:{port}/", rate=RATE, connections=4),
        LoadGenerator(f"http://127.0.0.1:{server.http_port}/", rate=RATE, connections=4, host=HOST),
    ]
    for load in loads:
        load.start()
    try:
        yield loads
    finally:
        for load in loads:
            load.stop()


def carry_on(loads: list[LoadGenerator], requests: int = 150) -> None:
    """Wait until each load has made ``requests`` more requests (~1.5 s of traffic)."""
    for load in loads:
        before = load.snapshot().requests
        wait_for(
            lambda load=load, before=before: load.snapshot().requests >= before + requests,  # type: ignore[misc]
            30,
            f"{requests} more requests to {load.host_header}",
        )


def outcome(loads: list[LoadGenerator]) -> list[LoadSnapshot]:
    return [load.snapshot() for load in loads]


def assert_none_failed(snapshots: list[LoadSnapshot], what: str) -> None:
    failures = [(s.failed, s.requests, s.errors[:5]) for s in snapshots]
    assert all(s.failed == 0 for s in snapshots), (
        f"{what}: failed/requests (published port, shared port): {failures}"
    )
    assert all(s.versions["v1"] >= 300 for s in snapshots), snapshots


@pytest.fixture
def web(server_factory: Callable[..., ServerProcess]) -> tuple[ServerProcess, int]:
    # Started from a shell where the CLI is used: WARREN_TOKEN is the admin token there, which
    # the ingress processes it starts must not take for their own.
    server = server_factory(
        extra=["--ingress-workers", str(WORKERS)], environ={"WARREN_TOKEN": "a-cli-admin-token"}
    ).start()
    port = free_port()
    client = server.client()
    client.create_service(web_spec(port))
    wait_for(lambda: ready(client, 2), 20, "2 ready tasks")
    return server, port


def restart(server: ServerProcess, sig: signal.Signals) -> None:
    server.stop(sig)
    assert server.proc is not None and server.proc.returncode is not None


def test_server_stopped_or_killed_and_started_again_fails_no_request(
    web: tuple[ServerProcess, int],
) -> None:
    server, port = web
    first = server.ingress_workers(WORKERS)
    with steady_load(server, port) as loads:
        carry_on(loads)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            restart(server, sig)
            carry_on(loads)  # traffic while no server runs
            server.start()
            wait_for(lambda: ready(server.client(), 2), 20, "the server to be back")
            carry_on(loads)
        snapshots = outcome(loads)
    assert_none_failed(snapshots, "restarts of the server")
    # The same workers all along: adopted by the restarted server, never started again.
    assert None not in first and server.ingress_workers(WORKERS) == first
    assert server.ingress_pids() == set(first)
    assert "Traceback" not in server.log()


def test_with_haproxy_restarts_of_the_server_and_of_its_ingress_fail_no_request(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(extra=["--data-plane", "haproxy"]).start()
    port = free_port()
    client = server.client()
    client.create_service(web_spec(port))
    wait_for(lambda: ready(client, 2), 20, "2 ready tasks")
    record = server.data_dir / "ingress" / "haproxy" / "haproxy.json"
    master = json.loads(record.read_text())["pid"]
    with steady_load(server, port) as loads:
        carry_on(loads)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            restart(server, sig)
            carry_on(loads)  # HAProxy serves while no server runs
            server.start()
            wait_for(lambda: ready(server.client(), 2), 20, "the server to be back")
            carry_on(loads)
        # The ingress that drives HAProxy dies: started again, it adopts the same HAProxy,
        # which served on meanwhile, and changes nothing in it.
        first = server.ingress_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: server.ingress_pid() not in (None, first), 20, "another ingress")
        carry_on(loads)
        snapshots = outcome(loads)
    assert_none_failed(snapshots, "restarts of the server and of its ingress")
    assert json.loads(record.read_text())["pid"] == master
    said = (server.data_dir / "ingress" / "ingress.log").read_text()
    adopted = said.rindex("adopted HAProxy")
    assert "HAProxy reloaded" not in said[adopted:], said[adopted:]
    assert "Traceback" not in server.log() + said


def _replace(server: ServerProcess) -> subprocess.Popen[bytes]:
    """``warren ingress --replace`` as an operator runs it: it takes the running ingress
    worker's settings, and its listening sockets (worker 0's: no ``--worker``)."""
    log = open(server.data_dir.parent / "replacement.log", "ab")  # noqa: SIM115
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "warren", "ingress", "--replace",
             "--data-dir", str(server.data_dir / "ingress")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def test_a_replaced_ingress_hands_over_without_a_failed_request(
    web: tuple[ServerProcess, int],
) -> None:
    server, port = web
    first = server.ingress_pid()
    other = server.ingress_pid(1)
    assert first is not None and other is not None, "no ingress process recorded"
    with steady_load(server, port) as loads:
        carry_on(loads)
        # An operator replaces worker 0: the new one takes its sockets, the old one drains
        # and exits, and the server adopts the new one; worker 1 serves on, untouched.
        replacement = _replace(server)
        try:
            wait_for(lambda: server.ingress_pid() == replacement.pid, 20, "the replacement")
            wait_for(lambda: not pid_alive(first), 20, "the old ingress to exit")
            carry_on(loads)
            assert replacement.poll() is None
            assert server.ingress_pid(1) == other
            # An upgrade: a server that finds workers of another version replaces each.
            before = server.ingress_workers(WORKERS)
            for worker in range(WORKERS):
                record = server.ingress_record(worker)
                assert record is not None
                name = "ingress.json" if worker == 0 else f"ingress-{worker}.json"
                path = server.data_dir / "ingress" / name
                path.write_text(json.dumps({**record, "version": "0.0.1"}))
            restart(server, signal.SIGTERM)
            carry_on(loads)
            server.start()
            wait_for(
                lambda: not set(server.ingress_workers(WORKERS)) & {None, *before}, 20, "upgrade"
            )
            wait_for(lambda: replacement.poll() is not None, 20, "the replaced one to exit")
            wait_for(lambda: not pid_alive(other), 20, "the old worker 1 to exit")
            carry_on(loads)
        finally:
            if replacement.poll() is None:
                replacement.kill()
            replacement.wait(5)
        snapshots = outcome(loads)
    assert_none_failed(snapshots, "replacements of the ingress")
    assert server.ingress_pids() == set(server.ingress_workers(WORKERS))
    assert len(server.ingress_pids()) == WORKERS
    assert "Traceback" not in server.log()


def test_a_killed_ingress_is_started_again(web: tuple[ServerProcess, int]) -> None:
    server, port = web
    first = server.ingress_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: server.ingress_pid() not in (None, first), 20, "another ingress")
    answered = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2), 10, "it")
    assert answered.json()["version"] == "v1"
    assert "exited; starting it again" in server.log()


class _Old:
    """The old ingress's side of a handover (``warren ingress`` does the same)."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.released = asyncio.Event()

    def offer(self) -> tuple[dict[str, Any], list[int]]:
        fds = self.ingress.listening_fds()
        routes = {name: route.to_wire() for name, route in self.ingress.routes.items()}
        message = {"ports": list(fds), "sharedPort": self.ingress.shared_port, "routes": routes}
        return message, list(fds.values())

    async def release(self) -> None:
        self.ingress.stop_accepting()
        self.released.set()


async def test_a_handover_passes_the_listening_sockets_and_the_routes(tmp_path: Path) -> None:
    up = await Upstream("a").start()
    port = free_port()
    old = Ingress(shared_port=0)
    await old.start()
    await old.update(web_route(up, ports=(port,)))
    old_side = _Old(old)
    admin = AdminServer(tmp_path / "admin.sock", {}, handing=old_side)
    await admin.start()
    new: Ingress | None = None
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            # A keep-alive connection to the old ingress, open across the handover.
            kept = await http.get(f"http://127.0.0.1:{port}/before")
            assert kept.status_code == 200
            handover = await asyncio.to_thread(take_over, tmp_path / "admin.sock")
            assert handover is not None
            assert set(handover.sockets) == {port, old.shared_port}
            assert handover.shared_port == old.shared_port
            routes = {n: Route.from_wire(w) for n, w in handover.routes.items()}
            assert routes == old.routes
            new = Ingress(shared_port=handover.shared_port, listeners=handover.sockets)
            await new.start()
            await new.update(routes)
            await asyncio.to_thread(handover.release)
            assert old_side.released.is_set() and not old.listening
            # New connections reach the new ingress, on both ports; the old one still answers
            # on the connection it has.
            fresh = httpx.AsyncClient(trust_env=False, timeout=5)
            async with fresh:
                on_port = await fresh.get(f"http://127.0.0.1:{port}/after")
                shared = await fresh.get(
                    f"http://127.0.0.1:{new.shared_port}/after", headers={"Host": "web.test"}
                )
            assert on_port.status_code == shared.status_code == 200
            assert new.stats()["web"].requests == 2
            assert (await http.get(f"http://127.0.0.1:{port}/kept")).status_code == 200
            assert old.stats()["web"].requests == 2
    finally:
        await admin.close()
        await old.close()
        if new is not None:
            await new.close()
        await up.stop()
    # Nobody answers: nothing to take over.
    assert await asyncio.to_thread(take_over, tmp_path / "nobody.sock") is None


def test_an_ingress_on_another_address_is_stopped_then_started_anew(
    web: tuple[ServerProcess, int],
) -> None:
    server, port = web
    first = server.ingress_workers(WORKERS)
    assert None not in first
    server.stop(signal.SIGTERM)
    server.extra = [*server.extra, "--ingress-host", "127.0.0.2"]
    server.start()
    assert not any(pid_alive(pid) for pid in first if pid is not None)
    record = server.ingress_record()
    assert record is not None and record["host"] == "127.0.0.2"
    answered = wait_for(lambda: httpx.get(f"http://127.0.0.2:{port}/", timeout=2), 10, "it")
    assert answered.json()["version"] == "v1"


def test_ingress_stop_finishes_it_and_says_so(web: tuple[ServerProcess, int]) -> None:
    server, port = web
    server.stop(signal.SIGTERM)  # the ingress outlives it, and still serves
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    pids = sorted(server.ingress_pids())
    assert len(pids) == WORKERS, pids
    where = str(server.data_dir / "ingress")
    stopped = subprocess.run(
        [sys.executable, "-m", "warren", "ingress", "--stop", "--data-dir", where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"ingress stopped (pid {', '.join(map(str, pids))})"
    assert not any(pid_alive(pid) for pid in pids)
    assert not server.ingress_pids()
    again = subprocess.run(
        [sys.executable, "-m", "warren", "ingress", "--stop", "--data-dir", where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (again.returncode, again.stdout.strip()) == (0, f"no ingress runs on {where}")
