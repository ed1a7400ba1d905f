"""Containers: Warren's docker driver on real engines (dockerd, and Podman's compatible service).

For each engine, started privately as the tests start it (``tests/engines.py``: its own socket,
storage and a bridge network for published ports; the offline test images of ``tests/images.py``
imported), in one run:

1. **Container lifecycle** (median and p90 of 20 per image, Warren and the floor alternating):
   with Warren's ``DockerDriver`` directly, ``start()`` → the first HTTP 200 from the task's
   endpoint (polled every 5 ms), and ``stop()`` + ``forget()`` → the container gone; the floor is
   the same container configuration through the engine API with the fewest calls (aiodocker:
   create, start; stop, delete). Then a batch of 5 demo-app containers at once (median of 5), as
   a rollout's batch: create+start → all answer 200; stop → every stop call returned.
2. **Rolling update of 20 container replicas** through a real ``warren server`` (``DOCKER_HOST``,
   ``--docker-network``, its own ``--node-name``): a service of ``localhost/warren-demo:v1``,
   published port, HTTP health check every 100 ms, ``updateConfig`` parallelism 5, monitor 0,
   delay 0, start-first, under a steady 100 req/s through the published port; updated to ``:v2``.
   The service is created with a 10 s ``startPeriod`` (20 Python containers starting at once
   on 2 vCPUs are not all listening 0.3 s after their start); the update first uses the
   check without a start period, and if that rolls back, a second update with the start period
   is the one measured. Reported: wall time from the update call to the deployment's success ÷
   the containers' own time from the task records (as ``bench/rolling.py``: per batch, from its
   first task created to its last ready, then its last old task stopped); ÷ (4 x one demo app's
   create+start → 200 of part 1); ÷ (4 x the batch of part 1); and ÷ **the same rollout done
   with the engine API alone** (``floor_rollouts``). Each rollout's batches are split along their
   critical path from the task records, the engine's events and the apps' own log lines (dockerd
   only: Podman's log times are whole seconds). Also the engine's CPU while 20 containers run
   with one open ``wait`` call each, as Warren's agent keeps.

The engines come from ``tests.engines``: its internals ``_Dockerd``/``_Podman``, ``_reap_stale``
and ``_pids_naming`` are reused as they are, so that the bench starts, networks and cleans up
the engines exactly as the tests do (``running_engine`` is ``tests.engines._run`` without the
pytest skip). Needs root, dockerd and Podman; about 4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker
from tests.engines import Engine, _Dockerd, _EngineProcess, _pids_naming, _Podman, _reap_stale
from tests.images import DEMO, HTTPD, api_request, ensure_images

from bench.servers import free_port, running_server
from warren.agent.drivers.docker import API_VERSION, ULIMIT, DockerDriver
from warren.client import Client
from warren.clocks import SystemClock
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Deployment
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task

RUNS = 20
WARMUP = 2
"""Lifecycles run and thrown away first, per image and side (cold caches of the engine)."""
GRACE = 10.0
"""``stopGrace`` (Warren's default); both images exit at once on SIGTERM."""
POLL_S = 0.005
"""Between two attempts at the first HTTP 200."""
IMAGES = (
    # (label, image, path)
    ("busybox httpd", f"{HTTPD}:v1", "/healthz"),
    ("Python demo app", f"{DEMO}:v1", "/healthz"),
)
REPLICAS = 20
PARALLELISM = 5
BATCHES = -(-REPLICAS // PARALLELISM)
LOAD_RATE = 100.0
GOAL_RATIO = 1.15
BATCH_RUNS = 5
BATCH_LABEL = f"demo app, {PARALLELISM} at once"
DUMP_DIR = os.environ.get("WARREN_BENCH_DUMP", "")
"""If set, a directory where each rollout's records (deployment, tasks, the engine's events, the
apps' listening times) are written as JSON, to look at where the time went."""


class Unavailable(Exception):
    """An engine cannot be started here."""


# ── the engines ────────────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def running_engine(kind: type[_EngineProcess]) -> Iterator[Engine]:
    """``tests.engines._run`` without pytest: the engine started, the test images imported; at
    the end, everything undone (containers, network, engine, mounts, bridge, Podman's leftovers
    on the host) and any leak reported."""
    if os.geteuid() != 0:
        raise Unavailable("container engines are started rootful: run as root")
    missing = sorted({pkg for name, pkg in kind.binaries.items() if not shutil.which(name)})
    if missing:
        raise Unavailable(f"missing binaries; apt-get install {' '.join(missing)}")
    if stale := _reap_stale(kind):
        print(f"  {kind.name}: a dead session had left behind: {', '.join(stale)}")
    process = kind()
    try:
        engine = process.start()
        ensure_images(engine.socket)
    except BaseException as exc:
        leaks = process.stop()
        if not isinstance(exc, Exception):
            raise
        message = f"{kind.name} did not start: {exc}" + (f" (left: {leaks})" if leaks else "")
        raise Unavailable(message) from exc
    try:
        yield engine
    finally:
        leaks = process.stop()
        if leaks:
            print(f"  {kind.name} LEFT BEHIND: {', '.join(leaks)}")


def _engine_version(engine: Engine) -> str:
    status, data = api_request(engine.socket, "GET", "/version", timeout=10)
    info = json.loads(data) if status == 200 else {}
    return str(info.get("Version", "?"))


def _node_containers(engine: Engine, node: str) -> list[dict[str, Any]]:
    query = urllib.parse.quote(json.dumps({"label": [f"warren.node={node}"]}))
    status, data = api_request(engine.socket, "GET", f"/containers/json?all=1&filters={query}")
    found: list[dict[str, Any]] = json.loads(data) if status == 200 else []
    return found


def _remove_node_containers(engine: Engine, node: str) -> None:
    for c in _node_containers(engine, node):
        api_request(engine.socket, "DELETE", f"/containers/{c['Id']}?force=1", timeout=30)


# ── part 1: one container's lifecycle ──────────────────────────────────────────────────────────


async def first_200(host: str, port: int, path: str, timeout: float = 15.0) -> None:
    """Poll ``GET path`` every 5 ms (a new connection each time) until a 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                async with asyncio.timeout(1.0):
                    line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            if line.split(b" ")[1:2] == [b"200"]:
                return
            last = line
        except (OSError, TimeoutError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 from {host}:{port}{path} in {timeout:g}s (last: {last!r})")
        await asyncio.sleep(POLL_S)


@dataclass
class Runs:
    """Seconds per run."""

    call: list[float] = field(default_factory=list)  # the start call(s) alone
    ready: list[float] = field(default_factory=list)  # create+start → first 200
    stop: list[float] = field(default_factory=list)  # stop + remove → gone

    def extend(self, other: Runs) -> None:
        self.call += other.call
        self.ready += other.ready
        self.stop += other.stop


async def _gone(docker: aiodocker.Docker, container_id: str) -> None:
    try:
        await docker.containers.container(container_id).show()
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return
        raise
    raise RuntimeError(f"container {container_id[:12]} still there after its removal")


class _Side:
    """One way of running containers: ``up`` (create and start, until the first 200), ``stop``,
    ``remove``."""

    async def up(self, image: str, path: str) -> tuple[str, float]:
        """(container id, seconds of the start call(s) alone)."""
        raise NotImplementedError

    async def stop(self, container_id: str) -> None:
        raise NotImplementedError

    async def remove(self, container_id: str) -> None:
        raise NotImplementedError


class _Warren(_Side):
    """Warren's ``DockerDriver``, as the agent calls it."""

    def __init__(self, driver: DockerDriver) -> None:
        self.driver = driver
        self.tasks: dict[str, str] = {}  # container id → task id

    async def up(self, image: str, path: str) -> tuple[str, float]:
        now = time.time()
        task = Task(
            id=f"bench.1.{uuid.uuid4().hex[:6]}", service="bench", revision=1, slot=1,
            created_at=now, updated_at=now,
        )  # fmt: skip
        spec = ServiceSpec(
            name="bench", image=image, driver="docker", stop_grace=GRACE,
            ports=[{"published": 18080, "target": 8080}],
        )  # fmt: skip
        t0 = time.perf_counter()
        handle = await self.driver.start(task, spec)
        call = time.perf_counter() - t0
        self.tasks[handle.runtime_id] = task.id
        assert handle.endpoint is not None
        host, port = handle.endpoint.rsplit(":", 1)
        await first_200(host, int(port), path)
        return handle.runtime_id, call

    async def stop(self, container_id: str) -> None:
        await self.driver.stop(self.tasks[container_id], GRACE)

    async def remove(self, container_id: str) -> None:
        await self.driver.forget(self.tasks.pop(container_id))


class _Floor(_Side):
    """The engine API with the fewest calls: create, start; stop, delete."""

    def __init__(
        self, docker: aiodocker.Docker, network: str, labels: dict[str, str] | None = None
    ) -> None:
        self.docker = docker
        self.network = network
        self.labels = labels or {}

    async def up(self, image: str, path: str) -> tuple[str, float]:
        port = free_port()
        config = {**floor_config(image, self.network, port), "Labels": self.labels}
        t0 = time.perf_counter()
        container = await self.docker.containers.create(
            config, name=f"bench-floor-{uuid.uuid4().hex[:8]}"
        )
        try:
            await container.start()
            call = time.perf_counter() - t0
            await first_200("127.0.0.1", port, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await container.delete(force=True)
            raise
        return container.id, call

    async def stop(self, container_id: str) -> None:
        await self.docker.containers.container(container_id).stop(t=int(GRACE))

    async def remove(self, container_id: str) -> None:
        await self.docker.containers.container(container_id).delete()


def floor_config(image: str, network: str, port: int) -> dict[str, Any]:
    """The container Warren's driver creates (init, ulimits, the bridge network, the published
    port, no restart policy), less its labels and ``WARREN_*`` variables."""
    limits = [{"Name": n, "Soft": ULIMIT, "Hard": ULIMIT} for n in ("nofile", "nproc")]
    return {
        "Image": image,
        "ExposedPorts": {"8080/tcp": {}},
        "StopTimeout": int(GRACE),
        "HostConfig": {
            "Init": True,
            "RestartPolicy": {"Name": "no"},
            "Ulimits": limits,
            "NetworkMode": network,
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
        },
    }


async def _once(side: _Side, docker: aiodocker.Docker, image: str, path: str) -> Runs:
    """One container: create+start → first 200; stop + remove → gone."""
    t0 = time.perf_counter()
    container_id, call = await side.up(image, path)
    t1 = time.perf_counter()
    await side.stop(container_id)
    await side.remove(container_id)
    t2 = time.perf_counter()
    await _gone(docker, container_id)
    return Runs([call], [t1 - t0], [t2 - t1])


async def _batch(side: _Side, docker: aiodocker.Docker, image: str, path: str) -> Runs:
    """``PARALLELISM`` containers at once, as a rollout's batch: create+start → all answer 200;
    stop → every stop returned (the removal after, not timed: off a rollout's path)."""
    t0 = time.perf_counter()
    ups = await asyncio.gather(*(side.up(image, path) for _ in range(PARALLELISM)))
    t1 = time.perf_counter()
    await asyncio.gather(*(side.stop(c) for c, _ in ups))
    t2 = time.perf_counter()
    await asyncio.gather(*(side.remove(c) for c, _ in ups))
    for c, _ in ups:
        await _gone(docker, c)
    return Runs([max(call for _, call in ups)], [t1 - t0], [t2 - t1])


async def _lifecycles(engine: Engine, runs: int, batch_runs: int) -> dict[str, dict[str, Runs]]:
    """Per image (and for a batch of the demo app): {"warren": Runs, "floor": Runs}, Warren and
    the floor alternating."""
    log_dir = Path(tempfile.mkdtemp(prefix="warren-bench-logs-"))
    node = f"bench-{uuid.uuid4().hex[:8]}"
    driver = DockerDriver(engine.socket, node, log_dir, SystemClock(), network=engine.network)
    docker = aiodocker.Docker(url=engine.url, api_version=API_VERSION)
    sides: dict[str, _Side] = {"warren": _Warren(driver), "floor": _Floor(docker, engine.network)}
    plan = [(label, image, path, _once, runs) for label, image, path in IMAGES]
    plan.append((BATCH_LABEL, f"{DEMO}:v1", "/healthz", _batch, batch_runs))
    results: dict[str, dict[str, Runs]] = {}
    try:
        for label, image, path, how, n in plan:
            results[label] = {name: Runs() for name in sides}
            for i in range(WARMUP + n):
                for name, side in sides.items():
                    run = await how(side, docker, image, path)
                    if i >= WARMUP:
                        results[label][name].extend(run)
    finally:
        await driver.close()
        await docker.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    return results


async def floor_rollouts(engine: Engine) -> dict[str, Any]:
    """The same rollout with the engine API alone, as fast as the engine allows: 20 demo-app
    containers (v1) running; then per batch of 5 slots, in each slot at once, a v2 container
    created and started, polled every 5 ms until a 200, then the slot's v1 container stopped
    (start-first); the next batch when every slot of this one is done; the old containers
    removed in the background (as Warren's agent does after reporting them stopped). Twice: v1 →
    v2 as is ("plain"), then v2 → v1 with one open ``wait`` call per running container, as
    Warren's agent keeps ("waits"). Each one's wall time is from its first create to its last
    stop; its records (as tasks: created = the create call, ready = the first 200, finished =
    the stop call returned) and the engine's events are split as Warren's are. Also, between
    the two, the engine's CPU with and without such waits (``_wait_cost``)."""
    node = f"floor-{uuid.uuid4().hex[:8]}"
    records: dict[str, Task] = {}
    made: list[str] = []
    waits: list[asyncio.Future[Any]] = []

    def record(task_id: str, slot: int, revision: int, **times: Any) -> None:
        now = time.time()
        base = records.get(task_id) or Task(
            id=task_id, service="floor", revision=revision, slot=slot,
            created_at=now, updated_at=now,
        )  # fmt: skip
        records[task_id] = base.model_copy(update=times)

    async with aiodocker.Docker(url=engine.url, api_version=API_VERSION) as docker:

        async def up(slot: int, generation: int, wait: bool) -> Task:
            task_id = f"floor.{slot}.g{generation}"
            revision = 1 + generation % 2
            labels = {"warren.node": node, "warren.task": task_id}
            record(task_id, slot, revision, created_at=time.time())
            container_id, _ = await _Floor(docker, engine.network, labels).up(
                f"{DEMO}:v{revision}", "/healthz"
            )
            made.append(container_id)
            if wait:
                container = docker.containers.container(container_id)
                waits.append(asyncio.ensure_future(container.wait(timeout=None)))
            record(task_id, slot, revision, ready_at=time.time(), runtime_id=container_id)
            return records[task_id]

        async def rollout(old: dict[int, Task], generation: int, wait: bool) -> dict[str, Any]:
            removals: list[asyncio.Task[None]] = []

            async def replace(slot: int) -> None:
                await up(slot, generation, wait)
                container = docker.containers.container(old[slot].runtime_id or "")
                await container.stop(t=int(GRACE))
                record(old[slot].id, slot, old[slot].revision, finished_at=time.time())
                removals.append(asyncio.create_task(container.delete()))

            called = time.time()
            starts = []
            for b in range(BATCHES):
                starts.append(time.time())
                slots = range(b * PARALLELISM + 1, min((b + 1) * PARALLELISM, REPLICAS) + 1)
                await asyncio.gather(*(replace(s) for s in slots))
            done = time.time()
            await asyncio.gather(*removals, return_exceptions=True)
            new = {s: records[f"floor.{s}.g{generation}"] for s in old}
            listening = await _listening_times(docker, list(new.values()))
            events = _event_times(_engine_events(engine, node, called, time.time()))
            batches: list[Batch] = []
            for b, start in enumerate(starts):
                slots = range(b * PARALLELISM + 1, min((b + 1) * PARALLELISM, REPLICAS) + 1)
                end = starts[b + 1] if b + 1 < len(starts) else done
                batch_new = [new[s] for s in slots]
                batch_old = [records[old[s].id] for s in slots]
                batches.append((start, end, batch_new, batch_old))
            split = _split(batches, events, listening)
            ratio = (done - called) / split["own_s"] if split["own_s"] else 0.0
            return {"wall_s": done - called, "ratio": ratio, "new": new, **split}

        try:
            first = {s: await up(s, 0, False) for s in range(1, REPLICAS + 1)}  # one by one
            plain = await rollout(first, 1, False)
            wait_cpu = await _wait_cost(
                engine, docker, [t.runtime_id or "" for t in plain["new"].values()]
            )
            with_waits = await rollout(plain["new"], 2, True)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            for container_id in made:
                with contextlib.suppress(aiodocker.DockerError):
                    await docker.containers.container(container_id).delete(force=True)
    plain.pop("new")
    with_waits.pop("new")
    return {"plain": plain, "waits": with_waits, "wait_cpu": wait_cpu}


WAIT_WINDOW_S = 2.0


async def _wait_cost(
    engine: Engine, docker: aiodocker.Docker, containers: list[str]
) -> dict[str, float]:
    """The engine's CPU (its processes: the engine, containerd or conmon, shims; seconds per
    second) while ``containers`` run: idle, then with one open ``POST /containers/{id}/wait``
    each — what Warren's agent keeps for every task (``DockerDriver.wait``) —, then with
    ``?condition=next-exit`` instead."""
    found = {}
    for name, condition in (("idle", None), ("wait", ""), ("wait next-exit", "next-exit")):
        waits = []
        if condition is not None:
            params = {"condition": condition} if condition else {}
            waits = [
                asyncio.ensure_future(docker.containers.container(c).wait(timeout=None, **params))
                for c in containers
            ]
        await asyncio.sleep(1.0)
        pids = _pids_naming(str(Path(engine.socket).parent))
        before, t0 = _cpu_seconds(pids), time.monotonic()
        await asyncio.sleep(WAIT_WINDOW_S)
        found[name] = (_cpu_seconds(pids) - before) / (time.monotonic() - t0)
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and their reaped children, in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


# ── part 2: a rolling update of 20 containers ──────────────────────────────────────────────────


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` (the server child inherits it), restored at the end."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _engine_events(engine: Engine, node: str, since: float, until: float) -> list[dict[str, Any]]:
    """The engine's container events of ``node``'s containers between two times (whole seconds
    around them: a stream the engine closes at ``until``)."""
    query = urllib.parse.urlencode(
        {
            "since": str(int(since) - 1),
            "until": str(int(until) + 1),
            "filters": json.dumps({"type": ["container"], "label": [f"warren.node={node}"]}),
        }
    )
    status, data = api_request(engine.socket, "GET", f"/events?{query}", timeout=30)
    events = []
    for line in data.decode(errors="replace").splitlines() if status == 200 else ():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _event_times(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{task id: {action: first time}} (seconds since the epoch)."""
    times: dict[str, dict[str, float]] = {}
    for e in events:
        attrs = (e.get("Actor") or {}).get("Attributes") or {}
        task = attrs.get("warren.task")
        action = str(e.get("Action") or e.get("status") or "").split(":")[0]
        stamp = e.get("timeNano")
        when = int(stamp) / 1e9 if stamp else float(e.get("time") or 0)
        if task and action:
            seen = times.setdefault(task, {})
            if action == "cleanup":  # Podman: twice, the network torn down by the last
                seen[action] = max(when, seen.get(action, 0.0))
            else:
                seen.setdefault(action, when)
    return times


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)\s")


async def _listening_times(docker: aiodocker.Docker, tasks: list[Task]) -> dict[str, float]:
    """When each (still running) container's demo app printed ``listening on``: the engine's
    timestamp of the log line."""
    found: dict[str, float] = {}
    for t in tasks:
        if not t.runtime_id:
            continue
        with contextlib.suppress(aiodocker.DockerError):
            lines = await docker.containers.container(t.runtime_id).log(
                stdout=True, stderr=True, timestamps=True
            )
            for line in "".join(lines).splitlines():
                m = _RFC3339.match(line)
                # Podman's log times are whole seconds: of no use here.
                if m and m.group(2) and "listening on" in line:
                    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
                    stamp = f"{m.group(1)}{m.group(2)[:7]}{zone}"
                    found[t.id] = datetime.fromisoformat(stamp).timestamp()
                    break
    return found


async def _listening_of(engine: Engine, tasks: list[Task]) -> dict[str, float]:
    async with aiodocker.Docker(url=engine.url, api_version=API_VERSION) as docker:
        return await _listening_times(docker, tasks)


def rolling_update(engine: Engine) -> dict[str, Any]:
    node = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    extra = ("--node-name", node, "--docker-network", engine.network)
    try:
        with _environ(DOCKER_HOST=engine.url), running_server(*extra) as (client, _srv, _data):
            return _rollout(engine, client, node, port)
    finally:
        _remove_node_containers(engine, node)


HEALTH = {"http": {"path": "/healthz"}, "interval": "100ms"}
"""The check as asked: ``--health-http /healthz --health-interval 100ms`` (3 retries, no start
period: a container not listening 0.3 s after its start is unhealthy)."""
START_PERIOD = "10s"
"""Failures before it do not count; the task is still ready at its first success."""


def _rollout(engine: Engine, client: Client, node: str, port: int) -> dict[str, Any]:
    """Create the service (with a start period, so that the first containers all come up), then
    update it to v2 with ``HEALTH`` as is (no start period); if that rolls back, update it again
    with the start period, which is then the rollout measured."""
    spec = ServiceSpec.model_validate(
        {
            "name": "web",
            "image": f"{DEMO}:v1",
            "replicas": REPLICAS,
            "ports": [{"published": port, "target": 8080}],
            "healthCheck": {**HEALTH, "startPeriod": START_PERIOD},
            "deploy": {
                "updateConfig": {
                    "parallelism": PARALLELISM, "monitor": "0s", "delay": "0s",
                    "order": "start-first",
                },
            },
        }
    )  # fmt: skip
    t0 = time.monotonic()
    client.create_service(spec)

    def ready() -> bool:
        tasks = client.list_tasks("web")
        return len([t for t in tasks if t.ready and t.wants_running]) >= REPLICAS

    _wait(ready, 120, f"{REPLICAS} ready containers")
    first_ready_s = time.monotonic() - t0

    def update(changes: dict[str, Any]) -> tuple[Deployment, float]:
        called = time.time()
        _, _, deployment_id = client.patch_service("web", changes)
        assert deployment_id is not None
        d: Deployment = _wait(
            lambda: (x := client.get_deployment("web", deployment_id)).phase.terminal and x,
            300,
            "the rollout",
        )
        if str(d.phase) != "succeeded":  # a rollback: its end
            _wait(
                lambda: not any(x.phase.active for x in client.list_deployments("web")),
                300,
                "the rollback",
            )
            _wait(ready, 120, f"{REPLICAS} ready containers after the rollback")
        return d, called

    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=LOAD_RATE, connections=8) as load:
        time.sleep(1.0)
        plain, called = update({"image": f"{DEMO}:v2", "healthCheck": HEALTH})
        plain_check_failure = ""
        if str(plain.phase) != "succeeded":
            failed = [x for x in plain.decisions if x.reason not in _PROGRESS]
            plain_check_failure = f"{plain.phase}: " + (failed[0].message if failed else "?")
            time.sleep(0.5)
            health = {**HEALTH, "startPeriod": START_PERIOD}
            measured, called = update({"image": f"{DEMO}:v2", "healthCheck": health})
        else:
            measured = plain
        time.sleep(1.0)  # the last old containers gone: still no failure after them
    total = load.snapshot()
    tasks = client.list_tasks("web")
    raw_events = _engine_events(engine, node, called, time.time())
    events = _event_times(raw_events)
    new = [t for t in tasks if t.revision == measured.to_revision and t.ready_at]
    listening = asyncio.run(_listening_of(engine, new))
    if DUMP_DIR:
        record = {
            "called": called,
            "deployment": measured.model_dump(mode="json"),
            "tasks": [t.model_dump(mode="json") for t in tasks],
            "events": raw_events,
            "listening": listening,
        }
        Path(DUMP_DIR, f"rollout-{engine.name}.json").write_text(json.dumps(record, indent=1))
    return {
        "phase": str(measured.phase),
        "plain_check_failure": plain_check_failure,
        "first_ready_s": first_ready_s,
        "requests": total.requests,
        "failed": total.failed,
        "errors": total.errors[:3],
        "versions": dict(total.versions),
        **timeline(measured, tasks, called, events, listening),
    }


_PROGRESS = {"NewRevision", "BatchStarted", "BatchReady", "RolloutComplete"}


STEPS = (
    ("decision → tasks created", "Warren: the reconciler creates the batch's tasks"),
    ("created → engine's create", "the agent starts the task: image check, create call"),
    ("engine's create → start", "the engine: network, mounts, the runtime"),
    ("start → ready", "the app boots, a probe succeeds, the agent reports it"),
    ("  start → app listening", "the app's own log line (dockerd only)"),
    ("  app listening → ready", "the probe cadence and the report (dockerd only)"),
    ("last ready → old exited", "reconciler, agent, drain, SIGTERM, the old app's exit"),
    ("  old SIGTERM → exited", "the old app's exit (dockerd only: its kill event)"),
    ("old exited → task stopped", "the engine's stop call returning, inspect, the report"),
    ("  old exited → network torn down", "Podman's cleanup event (CNI teardown)"),
    ("task stopped → next batch", "Warren: the deployment controller's decision"),
)
"""Along each batch's critical path (the new task ready last, the old task gone last): the
steps without an indent add up to the batch."""


Batch = tuple[float, float, list[Task], list[Task]]
"""A rollout's batch: its start, its end (the next batch's start), its new tasks and the old
tasks they replaced."""


def timeline(
    d: Deployment,
    tasks: list[Task],
    called: float,
    events: dict[str, dict[str, float]],
    listening: dict[str, float],
) -> dict[str, Any]:
    """The rollout's batches from its decisions and its task records, split by ``_split``."""
    new = {t.slot: t for t in tasks if t.revision == d.to_revision and t.ready_at}
    old: dict[int, Task] = {}  # per slot, the task this rollout replaced
    for t in sorted(tasks, key=lambda t: t.finished_at or 0):
        if t.revision == d.from_revision and (t.finished_at or 0) >= d.started_at:
            old[t.slot] = t
    starts = [x.time for x in d.decisions if x.reason == "BatchStarted"]
    readies = [x.time for x in d.decisions if x.reason == "BatchReady"]
    batches: list[Batch] = []
    for i, start in enumerate(starts):
        slots = range(i * PARALLELISM + 1, (i + 1) * PARALLELISM + 1)
        end = readies[i] if i < len(readies) else (d.finished_at or start)
        batches.append(
            (start, end, [new[s] for s in slots if s in new], [old[s] for s in slots if s in old])
        )
    split = _split(batches, events, listening)
    wall = (d.finished_at or 0) - called
    return {
        "wall_s": wall,
        "server_wall_s": (d.finished_at or 0) - d.started_at,
        "ratio": wall / split["own_s"] if split["own_s"] else float("nan"),
        **split,
    }


def _split(
    batches: list[Batch], events: dict[str, dict[str, float]], listening: dict[str, float]
) -> dict[str, Any]:
    """Each batch's time, split as ``bench/rolling.py`` does: the containers' own (from the
    batch's first task created to its last ready, then to its last old task gone) and the rest
    (the batch's start → its tasks created; the last old task gone → the next batch); and,
    finer, ``STEPS`` along its critical path, from the engine's events and the apps' logs."""
    own = rest = 0.0
    steps: dict[str, list[float]] = {}

    def step(name: str, begin: float | None, end: float | None) -> None:
        if begin is not None and end is not None:
            steps.setdefault(name, []).append(end - begin)

    for start, end, batch_new, batch_old in batches:
        if not batch_new:
            continue
        first_created = min(t.created_at for t in batch_new)
        last = max(batch_new, key=lambda t: t.ready_at or 0)  # the critical new task
        last_ready = last.ready_at or 0
        gone = max(batch_old, key=lambda t: t.finished_at or 0) if batch_old else None
        last_exit = (gone.finished_at or 0) if gone else last_ready
        own += (last_ready - first_created) + max(0.0, last_exit - last_ready)
        rest += (first_created - start) + max(0.0, end - max(last_ready, last_exit))
        e = events.get(last.id, {})
        step(STEPS[0][0], start, last.created_at)
        step(STEPS[1][0], last.created_at, e.get("create"))
        step(STEPS[2][0], e.get("create"), e.get("start"))
        step(STEPS[3][0], e.get("start"), last_ready)
        step(STEPS[4][0], e.get("start"), listening.get(last.id))
        step(STEPS[5][0], listening.get(last.id), last_ready)
        if gone is not None:
            g = events.get(gone.id, {})
            step(STEPS[6][0], last_ready, g.get("die"))
            step(STEPS[7][0], g.get("kill"), g.get("die"))
            step(STEPS[8][0], g.get("die"), last_exit)
            step(STEPS[9][0], g.get("die"), g.get("cleanup"))
        step(STEPS[10][0], max(last_ready, last_exit), end)
    n = max(len(batches), 1)
    return {
        "batches": len(batches),
        "own_s": own,
        "ratio_own": sum(b[1] - b[0] for b in batches) / own if own else float("nan"),
        "rest_ms_per_batch": rest / n * 1000,
        "steps_ms": {k: statistics.mean(v) * 1000 for k, v in steps.items()},
    }


# ── the report ─────────────────────────────────────────────────────────────────────────────────


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (p90 {_p(values, 0.9) * 1000:.0f})"


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def measure(kind: type[_EngineProcess], runs: int, batch_runs: int) -> dict[str, Any]:
    with running_engine(kind) as engine:
        version = _engine_version(engine)
        print(
            f"  {kind.name} {version}: lifecycles ({runs} per image and side, {batch_runs} "
            f"batches of {PARALLELISM}); load average {_load()}",
            flush=True,
        )
        life = asyncio.run(_lifecycles(engine, runs, batch_runs))
        for label, sides in life.items():
            w, f = sides["warren"], sides["floor"]
            print(
                f"    {label}: create+start → 200: Warren {_ms(w.ready)}, engine API "
                f"{_ms(f.ready)}; stop: Warren {_ms(w.stop)}, engine API {_ms(f.stop)}",
                flush=True,
            )
        print(
            f"  {kind.name}: rolling update of {REPLICAS} containers; load average {_load()}",
            flush=True,
        )
        roll = rolling_update(engine)
        print(
            f"    {roll['wall_s']:.2f} s [{roll['phase']}], ratio {roll['ratio']:.3f}, "
            f"{roll['failed']} of {roll['requests']} requests failed; load average {_load()}",
            flush=True,
        )
        floor = asyncio.run(floor_rollouts(engine))
        print(
            f"    the same rollout through the engine API: {floor['plain']['wall_s']:.2f} s, "
            f"with a wait per container {floor['waits']['wall_s']:.2f} s; "
            f"load average {_load()}",
            flush=True,
        )
        return {"version": version, "life": life, "roll": roll, "floor": floor}


def _row(name: str, goal: str, cells: list[str]) -> str:
    return f"| {name} | {goal} | " + " | ".join(cells) + " |"


def _median(runs: Runs, what: str) -> float:
    return statistics.median(getattr(runs, what))


def _ratio(sides: dict[str, Runs], what: str) -> float:
    return _median(sides["warren"], what) / _median(sides["floor"], what)


def report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    life = {n: results[n]["life"] for n in names}
    rolls = {n: results[n]["roll"] for n in names}
    print()
    print(_row("figure", "goal", [f"{n} {results[n]['version']}" for n in names]))
    print("|---|---|" + "---|" * len(names))
    labels = [label for label, _, _ in IMAGES] + [BATCH_LABEL]
    for label in labels:
        batch = label == BATCH_LABEL
        for what, title in (("ready", "create+start → first 200"), ("stop", "stop → gone")):
            if batch:
                title = "create+start → all 200" if what == "ready" else "stop → all stopped"
            for side, who in (("warren", "Warren"), ("floor", "engine API")):
                cells = [_ms(getattr(life[n][label][side], what)) for n in names]
                print(_row(f"{label}: {title}, {who}", "", cells))
            cells = [f"{_ratio(life[n][label], what):.2f}" for n in names]
            print(_row(f"{label}: {title}, Warren ÷ engine API", "", cells))
        cells = [
            f"{_median(life[n][label]['warren'], 'call') * 1000:.0f} / "
            f"{_median(life[n][label]['floor'], 'call') * 1000:.0f} ms"
            for n in names
        ]
        what = "the slowest of the 5 start calls" if batch else "the start call(s)"
        print(_row(f"{label}: {what}, Warren `start()` / engine API create+start", "", cells))
    print(_row("rolling: wall (update call → success)", "", [
        f"{rolls[n]['wall_s']:.2f} s [{rolls[n]['phase']}]" for n in names]))  # fmt: skip
    print(_row("rolling: wall ÷ the containers' own time (task records)", f"≤ {GOAL_RATIO}", [
        f"{rolls[n]['ratio']:.3f} ({rolls[n]['own_s']:.2f} s)" for n in names]))  # fmt: skip
    demo = IMAGES[1][0]
    cells = []
    for n in names:
        per = _median(life[n][demo]["warren"], "ready")
        cells.append(f"{rolls[n]['wall_s'] / (BATCHES * per):.2f} ({BATCHES} x {per:.3f} s)")
    print(_row(f"rolling: wall ÷ ({BATCHES} x one demo app's create+start → 200)", "", cells))
    cells = []
    for n in names:
        floor = life[n][BATCH_LABEL]["floor"]
        per = _median(floor, "ready") + _median(floor, "stop")
        cells.append(f"{rolls[n]['wall_s'] / (BATCHES * per):.2f} ({BATCHES} x {per:.3f} s)")
    print(_row(f"rolling: wall ÷ ({BATCHES} x a batch of {PARALLELISM}, engine API)", "", cells))
    floors = {n: results[n]["floor"]["plain"] for n in names}
    waited = {n: results[n]["floor"]["waits"] for n in names}
    print(_row("rolling: the same rollout through the engine API", "", [
        f"{floors[n]['wall_s']:.2f} s (its own ratio {floors[n]['ratio']:.3f})"
        for n in names]))  # fmt: skip
    print(_row("rolling: Warren's wall ÷ the engine API's", "", [
        f"{rolls[n]['wall_s'] / floors[n]['wall_s']:.2f}" for n in names]))  # fmt: skip
    print(_row("rolling: the engine API's, with a `wait` open per container", "", [
        f"{waited[n]['wall_s']:.2f} s ({waited[n]['wall_s'] / floors[n]['wall_s']:.2f}x)"
        for n in names]))  # fmt: skip
    for name in ("idle", "wait", "wait next-exit"):
        print(_row(f"engine CPU, {REPLICAS} containers running, {name}", "", [
            f"{results[n]['floor']['wait_cpu'][name]:.2f} s/s" for n in names]))  # fmt: skip
    print(_row("rolling: Warren's own decisions per batch", "", [
        f"{rolls[n]['rest_ms_per_batch']:.0f} ms" for n in names]))  # fmt: skip
    print(_row(f"rolling: failed requests at {LOAD_RATE:.0f} req/s", "0", [
        f"{rolls[n]['failed']} of {rolls[n]['requests']}" for n in names]))  # fmt: skip
    print(_row("rolling: with the check without a start period", "", [
        rolls[n]["plain_check_failure"] or "succeeded (the one above)"
        for n in names]))  # fmt: skip
    print(_row(f"first {REPLICAS} containers ready (service created)", "", [
        f"{rolls[n]['first_ready_s']:.2f} s" for n in names]))  # fmt: skip
    print()
    print(
        "Rolling update, per batch (mean of 4) along its critical path: Warren / engine API / "
        "engine API with a wait per container:"
    )
    print(_row("step", "what", names))
    print("|---|---|" + "---|" * len(names))
    for name, what in STEPS:
        cells = []
        for n in names:
            trio = [x["steps_ms"].get(name) for x in (rolls[n], floors[n], waited[n])]
            cells.append(" / ".join("—" if v is None else f"{v:.0f}" for v in trio) + " ms")
        print(_row(name, what, cells))
    for n in names:
        if rolls[n]["errors"]:
            print(f"{n}: first failed requests: {rolls[n]['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench containers")
    parser.add_argument("--runs", type=int, default=RUNS, help="lifecycles per image and side")
    parser.add_argument("--batches", type=int, default=BATCH_RUNS, help="batches per side")
    parser.add_argument("--engine", choices=["dockerd", "podman"], action="append")
    args, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "containers"])
    kinds = [k for k in (_Dockerd, _Podman) if k.name in (args.engine or [k.name])]
    print(
        f"containers: lifecycles ({args.runs} per image) and a rolling update of {REPLICAS} "
        f"containers (parallelism {PARALLELISM}), on {' and '.join(k.name for k in kinds)}"
    )
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        try:
            results[kind.name] = measure(kind, args.runs, args.batches)
        except Unavailable as exc:
            print(f"  {kind.name}: skipped: {exc}")
    if results:
        report(results)


if __name__ == "__main__":
    main()
