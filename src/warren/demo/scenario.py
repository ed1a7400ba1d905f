"""``warren demo``: start a server in a temporary directory, deploy the demo app with 3 replicas
behind a published port, show requests spread over the tasks, kill a task and show it replaced;
then, under a steady background load, a rolling update v1 → v2 and an update to a version that
fails its health check and rolls back on its own, canaries and blue/green, then the server
restarted (SIGTERM, then kill -9) while its ingress, a process of its own, keeps serving; print a
summary (per step: duration, requests served and failed) and shut everything down.

It drives Warren exactly as a user would: ``warren server`` as a separate process, the HTTP API
through ``warren.client``, and plain HTTP requests to the published port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from ..client import Client
from ..domain.deployments import Deployment
from ..domain.errors import WarrenError
from ..domain.specs import ServiceSpec
from ..ingress.supervising import stop_running
from .load import LoadGenerator

__all__ = ["run_demo"]

console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Step:
    name: str
    seconds: float
    requests: int = 0
    failed: int = 0
    note: str = ""


@dataclass
class Demo:
    data_dir: Path
    api_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    steps: list[Step] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[Step]:
        """``name`` for the summary table, ``title`` for the live output."""
        console.print(f"\n[bold cyan]▶ {title}[/bold cyan]")
        step = Step(name, 0.0)
        start = time.monotonic()
        try:
            yield step
        finally:
            step.seconds = time.monotonic() - start
            self.steps.append(step)

    def start_server(self) -> Client:
        log = open(self.data_dir / "server.log", "wb")  # noqa: SIM115 (closed with the process)
        self.server = subprocess.Popen(
            [
                sys.executable, "-m", "warren", "server",
                "--data-dir", str(self.data_dir),
                "--api", f"127.0.0.1:{self.api_port}",
                "--http-port", str(self.http_port),
                "--node-name", "demo-node",
                "--log-level", "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        client = Client(f"http://127.0.0.1:{self.api_port}", data_dir=self.data_dir)
        wait_until(
            lambda: client.health() and (self.data_dir / "admin.token").exists(),
            15,
            "the server did not start; see " + str(self.data_dir / "server.log"),
            proc=self.server,
        )
        return Client(f"http://127.0.0.1:{self.api_port}", data_dir=self.data_dir)

    def stop_server(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server (its ingress, a process of its own, keeps serving)."""
        if self.server is None or self.server.poll() is not None:
            return
        self.server.send_signal(sig)
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(5)

    def stop_ingress(self) -> None:
        """``warren ingress --stop``: what outlives the server."""
        stop_running(self.data_dir / "ingress")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    message: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise WarrenError(message)


def ready_tasks(client: Client, service: str) -> list[str]:
    return [t.id for t in client.list_tasks(service) if t.ready and t.wants_running]


def all_ready(client: Client, service: str, n: int) -> Callable[[], bool]:
    return lambda: len(ready_tasks(client, service)) == n


def run_demo(keep: bool = False) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="warren-demo-"))
    demo = Demo(data_dir)
    ok = False
    try:
        _scenario(demo)
        ok = True
    finally:
        if keep and ok:
            console.print(f"\nserver left running: WARREN_ADDR=http://127.0.0.1:{demo.api_port} "
                          f"WARREN_DATA_DIR={data_dir}")  # fmt: skip
        else:
            demo.stop_server()
            demo.stop_ingress()
            _reap_leftovers(data_dir)
            if ok:
                shutil.rmtree(data_dir, ignore_errors=True)
            else:
                console.print(f"[red]demo failed[/red]; server log kept in {data_dir}/server.log")


def _releases(demo: Demo, client: Client, load: LoadGenerator) -> None:
    """Under the background load, shown live: a rolling update v1 → v2; an update that fails its
    health check and rolls back; a canary the analysis rejects; a good canary promoted to 100%;
    a blue/green release with a preview request, the switch and an instant rollback."""
    with demo.step("rolling v1 → v2", "rolling update v1 → v2 under 150 req/s") as step:
        console.print("  $ warren service update web --env VERSION=v2 --parallelism 1 --monitor 1s")
        _, _, deployment = client.patch_service(
            "web",
            {
                "env": {"VERSION": "v2"},
                "deploy": {"updateConfig": {"parallelism": 1, "monitor": "1s"}},
            },
        )
        assert deployment is not None
        final = _watch(client, deployment, load, step)
        step.note = f"{final.phase}, 3/3 on v2"

    with demo.step("bad v3 rolls back", "update to v3, which fails its health check") as step:
        console.print("  $ warren service update web --env VERSION=v3 --env UNHEALTHY=1")
        _, _, deployment = client.patch_service("web", {"env": {"VERSION": "v3", "UNHEALTHY": "1"}})
        assert deployment is not None
        final = _watch(client, deployment, load, step)
        serving = client.get_service("web")
        step.note = (
            f"{final.phase}; revision {serving.revision} ({serving.spec.version_label}) serves"
        )
        console.print(f"  {step.note}")

    canary = {
        "strategy": "canary",
        "canary": {
            "steps": [{"setWeight": 10}, {"pause": "4s"}, {"setWeight": 50}, {"pause": "4s"}],
            "analysis": {"interval": "2s", "successRate": 0.95, "minRequests": 15},
        },
    }
    with demo.step(
        "bad canary v3", "canary of v3 with FAIL_RATE=0.2: the analysis stops it"
    ) as step:
        console.print(
            "  $ warren service update web --strategy canary --env VERSION=v3 --env FAIL_RATE=0.2"
        )
        _, _, deployment = client.patch_service(
            "web", {"env": {"VERSION": "v3", "FAIL_RATE": "0.2"}, "deploy": canary}
        )
        assert deployment is not None
        final = _watch(client, deployment, load, step)
        outside = [e for e in load.snapshot().errors if "injected failure" not in e]
        step.note = f"{final.phase} at step {final.step}; {len(outside)} failed outside the canary"
        console.print(f"  {final.phase}: {final.message}")

    with demo.step("good canary v4", "canary of v4: 10% → 50% → promoted") as step:
        # The failed canary left the service on its stable spec (rolling, v2): canary again.
        console.print("  $ warren service update web --strategy canary --env VERSION=v4")
        _, _, deployment = client.patch_service("web", {"env": {"VERSION": "v4"}, "deploy": canary})
        assert deployment is not None
        final = _watch(client, deployment, load, step)
        step.note = f"{final.phase}: 100% on v4"

    with demo.step("blue/green v5", "blue/green v5: preview, switch, instant rollback") as step:
        start = load.snapshot()
        blue_green = {"strategy": "blue-green", "blueGreen": {"autoPromote": False}}
        console.print("  $ warren service update web --strategy blue-green --env VERSION=v5")
        _, _, deployment = client.patch_service(
            "web", {"env": {"VERSION": "v5"}, "deploy": blue_green}
        )
        assert deployment is not None
        wait_until(
            lambda: client.get_deployment("web", deployment).phase == "awaiting_promotion",
            30,
            "green did not become ready",
        )
        url = f"http://127.0.0.1:{demo.web_port}/"
        with httpx.Client(timeout=5) as http:
            plain = http.get(url).json()["version"]
            preview = http.get(url, headers={"X-Warren-Preview": "1"}).json()["version"]
            console.print(
                f"  green ready: a request gets {plain}, a preview request gets {preview}"
            )
            console.print("  $ warren deploy promote web")
            t0 = time.monotonic()
            client.promote_deployment("web")
            wait_until(lambda: http.get(url).json()["version"] == "v5", 5, "no switch")
            console.print(
                f"  switched: every request gets v5 ({(time.monotonic() - t0) * 1000:.0f} ms)"
            )
            console.print("  $ warren service rollback web")
            t0 = time.monotonic()
            client.rollback_service("web")
            wait_until(lambda: http.get(url).json()["version"] == "v4", 5, "no switch back")
            took = (time.monotonic() - t0) * 1000
            console.print(f"  instant rollback: every request gets v4 again ({took:.0f} ms)")
        now = load.snapshot().since(start)
        step.requests, step.failed = now.requests, now.failed
        step.note = f"switch back in {took:.0f} ms"


def _restarts(demo: Demo, client: Client, load: LoadGenerator) -> Client:
    """Under the background load: the server stopped and started again, then killed (-9) and
    started again. The ingress is a process of its own: it keeps serving meanwhile, and the
    server adopts it. Returns a client of the server now running."""
    for sig, how in ((signal.SIGTERM, "Ctrl-C"), (signal.SIGKILL, "kill -9")):
        with demo.step(f"server {how}", f"restart the server ({how}) under load") as step:
            start = load.snapshot()
            console.print(f"  $ {how} the server; warren server ...   # started again")
            client.close()
            demo.stop_server(sig)
            t0 = time.monotonic()
            client = demo.start_server()
            wait_until(all_ready(client, "web", 3), 30, "tasks not re-adopted")
            took = time.monotonic() - t0
            now = load.snapshot().since(start)
            step.requests, step.failed = now.requests, now.failed
            step.note = f"back in {took:.1f}s, ingress adopted"
            console.print(
                f"  back in {took:.1f}s, 3/3 tasks and the ingress adopted: {now.requests} "
                f"requests meanwhile, {now.failed} failed"
            )
    return client


def _watch(client: Client, deployment_id: str, load: LoadGenerator, step: Step) -> Deployment:
    """Print a deployment's decisions and the load's figures live until it (and the rollback
    it may start) has ended."""
    start = load.snapshot()
    shown: set[tuple[str, float, str]] = set()
    while True:
        d = client.get_deployment("web", deployment_id)
        chain = [d]
        if d.rolled_back_by:
            chain.append(client.get_deployment("web", d.rolled_back_by))
        now = load.snapshot().since(start)
        for item in chain:
            for decision in item.decisions:
                key = (item.id, decision.time, decision.reason)
                if key not in shown:
                    shown.add(key)
                    console.print(
                        f"  [dim]{item.id}[/dim] {decision.reason}: {decision.message}  "
                        f"[dim]({now.requests} requests, {now.failed} failed, "
                        f"{dict(now.versions)})[/dim]"
                    )
        if d.phase.terminal and chain[-1].phase.terminal:
            break
        time.sleep(0.2)
    step.requests, step.failed = now.requests, now.failed
    return d


def _reap_leftovers(data_dir: Path) -> None:
    """Stop any task process still recorded (only if the demo failed half-way)."""
    for record in (data_dir / "agent" / "tasks").glob("*.json"):
        with contextlib.suppress(Exception):
            os.killpg(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)


def _scenario(demo: Demo) -> None:
    url = f"http://127.0.0.1:{demo.web_port}/"
    with demo.step("start server", "start an embedded Warren server") as step:
        client = demo.start_server()
        step.note = f"API on :{demo.api_port}"
        console.print(f"  server up: API http://127.0.0.1:{demo.api_port}, data {demo.data_dir}")

    with demo.step(
        "deploy 3 replicas", "deploy the demo app: 3 replicas, published port, HTTP health check"
    ) as step:
        spec = ServiceSpec.model_validate(
            {
                "name": "web",
                "command": [sys.executable, "-m", "warren.demo.app"],
                "replicas": 3,
                "env": {"VERSION": "v1"},
                "ports": [{"published": demo.web_port}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "500ms"},
            }
        )
        console.print(
            f"  $ warren service create web --command 'python -m warren.demo.app' "
            f"--env VERSION=v1 --replicas 3 --publish {demo.web_port} --health-http /healthz"
        )
        t0 = time.monotonic()
        client.create_service(spec)
        wait_until(lambda: len(ready_tasks(client, "web")) == 3, 30, "tasks did not become ready")
        step.note = "3/3 ready"
        console.print(f"  3/3 tasks ready in {time.monotonic() - t0:.1f}s")

    with demo.step("30 requests", f"send 30 requests to {url}") as step:
        counts = Counter[str]()
        with httpx.Client(timeout=5) as http:
            for _ in range(30):
                step.requests += 1
                try:
                    response = http.get(url)
                    response.raise_for_status()
                    counts[response.json()["task"]] += 1
                except httpx.HTTPError:
                    step.failed += 1
        table = Table("task", "requests", box=None, header_style="bold")
        for task, n in sorted(counts.items()):
            table.add_row(task, str(n))
        console.print(table)
        step.note = f"spread over {len(counts)} tasks"

    with demo.step("kill -9 a task", "kill -9 one task's process; Warren replaces it") as step:
        victim = next(t for t in client.list_tasks("web") if t.ready and t.runtime_id)
        console.print(f"  $ kill -9 {victim.runtime_id}   # task {victim.id}")
        os.kill(int(victim.runtime_id or 0), signal.SIGKILL)
        with httpx.Client(timeout=5) as http:

            def replaced() -> bool:
                step.requests += 1
                try:
                    http.get(url).raise_for_status()
                except httpx.HTTPError:
                    step.failed += 1
                ids = ready_tasks(client, "web")
                return len(ids) == 3 and victim.id not in ids

            wait_until(replaced, 30, "the killed task was not replaced")
        new = next(t for t in client.list_tasks("web") if t.slot == victim.slot and t.ready)
        console.print(f"  {victim.id} failed → replaced by {new.id}, ready again")
        step.note = f"replaced by {new.id}"

    load = LoadGenerator(url, rate=150, connections=6).start()
    try:
        _releases(demo, client, load)
        client = _restarts(demo, client, load)
    finally:
        total = load.stop()
    console.print(
        f"\n  background load: {total.requests} requests, {total.failed} failed, "
        f"versions {dict(total.versions)}"
    )

    with demo.step("remove, stop", "remove the service and stop the server") as step:
        client.delete_service("web")
        wait_until(
            lambda: not [t for t in client.list_tasks() if t.service == "web"],
            30,
            "tasks did not stop",
        )
        client.close()
        demo.stop_server()
        console.print("  $ warren ingress --stop")
        demo.stop_ingress()
        step.note = "all tasks stopped, ingress too"

    table = Table(title="Summary", header_style="bold")
    for col in ("step", "seconds", "requests", "failed", "note"):
        table.add_column(col)
    for s in demo.steps:
        table.add_row(s.name, f"{s.seconds:.2f}", str(s.requests or "-"), str(s.failed), s.note)
    console.print()
    console.print(table)
