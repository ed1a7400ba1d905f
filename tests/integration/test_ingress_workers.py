"""Several ingress workers (``--ingress-workers 2``): processes of their own serving the same
ports on SO_REUSEPORT sockets, the kernel spreading the connections among them. Each runs its
own weighted round robin, so the weights must hold in the sum; a sticky cookie names a
revision, so it must hold on any worker; each reports its own traffic, so the analysis and
``/metrics`` must add them up; and each is supervised and adopted on its own.

Real processes: a server, its two ``warren ingress`` workers, demo tasks; clients from the
standard library (no cookie jar: a client without a cookie is a new client)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.test_ingress_process import carry_on, outcome, steady_load
from tests.servers import ServerProcess, free_port, pid_alive, wait_for, warren
from warren.domain.deployments import Phase
from warren.ingress.admin import AdminClient

pytestmark = pytest.mark.integration

WORKERS = 2
CANARY = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 2
  env: {VERSION: v1}
  ports: [{published: PORT}]
  host: web.test
  healthCheck: {http: {path: /healthz}, interval: 200ms}
  stopGrace: 2s
  drainTimeout: 1s
  deploy:
    strategy: canary
    canary:
      steps: STEPS
      stickySessions: true
ANALYSIS
"""


def worker_pids(server: ServerProcess) -> list[int | None]:
    """The pid each worker's record names (None: no record yet)."""
    return server.ingress_workers(WORKERS)


def served_by_worker(server: ServerProcess) -> list[Counter[int]]:
    """Per worker, the requests of ``web`` it sent to each revision (its admin socket)."""
    found = []
    for worker in range(WORKERS):
        name = "admin.sock" if worker == 0 else f"admin-{worker}.sock"
        answer = asyncio.run(AdminClient(server.data_dir / "ingress" / name).call("stats"))
        found.append(
            Counter({int(r): int(s["requests"]) for n, r, s in answer["revisions"] if n == "web"})
        )
    return found


def each_worker_served(before: list[Counter[int]], after: list[Counter[int]]) -> list[int]:
    return [sum((a - b).values()) for a, b in zip(after, before, strict=True)]


def version_of(conn: http.client.HTTPConnection, headers: dict[str, str]) -> str:
    conn.request("GET", "/", headers=headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (response.status, body[:200])
    return str(json.loads(body)["version"])


def keep_alive(port: int, connections: int, each: int) -> Counter[str]:
    """``connections`` keep-alive connections, ``each`` requests on every one."""

    def one(_: int) -> Counter[str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            return Counter(version_of(conn, {}) for _ in range(each))
        finally:
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, range(connections)), Counter())


def one_per_connection(port: int, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """``n`` requests, each on a connection of its own (``Connection: close``)."""

    def one(_: int) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            return version_of(conn, {"Connection": "close", **(headers or {})})
        finally:
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        return Counter(pool.map(one, range(n)))


def share(versions: Counter[str], version: str = "v2") -> float:
    return 100 * versions[version] / sum(versions.values())


def start_canary(server: ServerProcess, tmp_path: Path, steps: str, analysis: str = "") -> int:
    """Service ``web`` on revision 1, then an update to v2 that stands at its first step."""
    port = free_port()
    manifest = tmp_path / "web.yaml"
    manifest.write_text(
        CANARY.replace("PORT", str(port)).replace("STEPS", steps).replace("ANALYSIS", analysis)
    )
    assert warren(server, "apply", "-f", str(manifest)).returncode == 0
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 2, 20, "2 ready")
    update = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--detach")
    assert update.returncode == 0, update.stderr
    return port


@pytest.fixture
def two_workers(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    server = server_factory(extra=["--ingress-workers", str(WORKERS)]).start()
    wait_for(lambda: all(worker_pids(server)), 20, "both ingress workers")
    return server


@pytest.fixture
def canary_at_10(two_workers: ServerProcess, tmp_path: Path) -> tuple[ServerProcess, int]:
    port = start_canary(two_workers, tmp_path, "[{setWeight: 10}, {pause: {}}]")
    client = two_workers.client()
    wait_for(lambda: client.deployment_status("web").weights.get("2") == 10, 30, "weight 10")
    return two_workers, port


def test_weights_hold_in_the_sum_of_the_workers(canary_at_10: tuple[ServerProcess, int]) -> None:
    server, port = canary_at_10
    for way, send in (
        ("keep-alive", lambda: keep_alive(port, connections=20, each=50)),
        ("one request per connection", lambda: one_per_connection(port, 1000)),
    ):
        before = served_by_worker(server)
        versions = send()
        per_worker = each_worker_served(before, served_by_worker(server))
        print(f"{way}: {dict(versions)}, per worker {per_worker}")  # for the record (-s)
        assert sum(versions.values()) == 1000
        assert all(n > 0 for n in per_worker), f"{way}: one worker served all: {per_worker}"
        assert abs(share(versions) - 10) <= 1, f"{way}: {versions} (workers: {per_worker})"


def test_a_sticky_cookie_holds_on_every_worker(canary_at_10: tuple[ServerProcess, int]) -> None:
    server, port = canary_at_10
    for revision, version in ((2, "v2"), (1, "v1")):
        before = served_by_worker(server)
        cookie = {"Cookie": f"warren-revision={revision}"}
        versions = one_per_connection(port, 200, cookie)
        per_worker = each_worker_served(before, served_by_worker(server))
        assert versions == Counter({version: 200}), versions
        assert all(n > 0 for n in per_worker), f"one worker served all: {per_worker}"


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(part in line for part in want.split(",")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _judged(server: ServerProcess) -> list[dict[str, object]]:
    """The analysis windows the release judged so far (their measured figures)."""
    deployment = server.client().list_deployments("web")[-1]
    return [dict(d.measured) for d in deployment.decisions if "window" in d.measured]


def test_the_analysis_and_metrics_add_up_the_workers(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    server = two_workers
    analysis = "    analysis: {interval: 5s, minRequests: 0, successRate: 0.5}\n".replace(
        "    ", "      "
    )
    port = start_canary(server, tmp_path, "[{setWeight: 50}, {pause: 10m}]", analysis)
    client = server.client()
    wait_for(lambda: client.deployment_status("web").weights.get("2") == 50, 30, "weight 50")
    # Right after a window was judged, a burst well inside the next one.
    seen = len(wait_for(lambda: _judged(server) or None, 20, "a first window"))
    wait_for(lambda: len(_judged(server)) > seen, 10, "a new window")
    seen = len(_judged(server))
    began = time.monotonic()
    before = served_by_worker(server)
    versions = one_per_connection(port, 300)
    per_worker = each_worker_served(before, served_by_worker(server))
    assert time.monotonic() - began < 4, "the burst did not fit in the window"
    assert all(n > 0 for n in per_worker), per_worker
    windows = wait_for(lambda: _judged(server)[seen:] or None, 15, "the window of the burst")
    assert windows[0]["requests"] == versions["v2"], (windows[0], versions, per_worker)
    assert Phase(client.deployment_status("web").phase) == Phase.PROGRESSING
    # /metrics adds up the workers' counters too.
    metrics = httpx.get(f"{server.addr}/metrics", timeout=10).text
    for revision, version in (("1", "v1"), ("2", "v2")):
        counted = _metric(
            metrics,
            "warren_ingress_revision_requests_total",
            {"service": "web", "revision": revision},
        )
        assert counted == versions[version], (revision, counted, versions)


def _restart(server: ServerProcess, sig: signal.Signals) -> None:
    server.stop(sig)
    assert server.proc is not None and server.proc.returncode is not None


def test_restarts_fail_no_request_and_every_worker_is_adopted(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    server = two_workers
    port = start_canary(server, tmp_path, "[{setWeight: 50}, {pause: {}}]")
    client = server.client()
    wait_for(lambda: client.deployment_status("web").weights.get("2") == 50, 30, "weight 50")
    first = worker_pids(server)
    with steady_load(server, port) as loads:
        carry_on(loads)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _restart(server, sig)
            carry_on(loads)
            server.start()
            carry_on(loads)
        snapshots = outcome(loads)
    failures = [(s.failed, s.requests, s.errors[:5]) for s in snapshots]
    assert all(s.failed == 0 for s in snapshots), failures
    assert worker_pids(server) == first, "a worker was started again instead of adopted"
    assert client.info()["ingressPids"] == first
    assert server.ingress_pids() == set(_alive(first))
    assert "Traceback" not in server.log()


def _alive(pids: Iterable[int | None]) -> list[int]:
    return [p for p in pids if p is not None and pid_alive(p)]


def test_a_killed_worker_is_started_again_alone(two_workers: ServerProcess) -> None:
    server = two_workers
    first = worker_pids(server)
    assert first[1] is not None
    os.kill(first[1], signal.SIGKILL)
    wait_for(lambda: worker_pids(server)[1] not in (None, first[1]), 20, "worker 1 again")
    assert worker_pids(server)[0] == first[0], "worker 0 was touched"
    # Fewer workers on the next start: the extra one is stopped; more: one is started.
    after = worker_pids(server)
    server.stop(signal.SIGTERM)
    server.extra = ["--ingress-workers", "1"]
    server.start()
    wait_for(lambda: after[1] is not None and not pid_alive(after[1]), 40, "worker 1 to stop")
    assert worker_pids(server)[0] == first[0]
