"""Rolling updates: how close to its theoretical minimum a rollout runs, and what it costs the
traffic.

1. 100 replicas, parallelism 10, the fake driver with a fixed ready time (each task takes 1 s to
   start and is ready at once): wall time ÷ (batches x ready time + delays), and the controller's
   overhead per batch. Goal: ratio ≤ 1.10, overhead < 20 ms per batch.
2. The same with the process driver and the demo app (health check over HTTP): the "ready time"
   of a batch is the time its slowest task took from creation to ready, measured from the tasks.
3. A rolling update of 10 demo-app replicas under ≥ 200 req/s through the ingress. Goal: 0 failed
   requests.

The peer, Warren (Go), needs at least 5 s per batch by design (a 5 s scheduler tick plus a 3 s
worker tick); its time for the same rollout is at least batches x 5 s.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.servers import free_port, running_server
from warren.client import Client
from warren.demo.load import LoadGenerator
from warren.domain.deployments import Deployment
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task

WARREN_MIN_BATCH_S = 5.0


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _ready(client: Client, name: str, n: int) -> bool:
    return len([t for t in client.list_tasks(name) if t.ready and t.wants_running]) >= n


def _rollout(client: Client, name: str, env: dict[str, str], timeout: float) -> Deployment:
    _, _, deployment_id = client.patch_service(name, {"env": env})
    assert deployment_id is not None
    return _wait(
        lambda: (d := client.get_deployment(name, deployment_id)).phase.terminal and d,
        timeout,
        "the rollout",
    )


def _batches(d: Deployment) -> list[tuple[float, float]]:
    """(started, ready) per batch, from the decision log."""
    starts = [x.time for x in d.decisions if x.reason == "BatchStarted"]
    readies = [x.time for x in d.decisions if x.reason == "BatchReady"]
    return list(zip(starts, readies, strict=False))


def fake_rollout(
    replicas: int = 100, parallelism: int = 10, ready_s: float = 1.0
) -> dict[str, Any]:
    with running_server() as (client, _server, _data):
        spec = ServiceSpec.model_validate(
            {
                "name": "fake",
                "command": ["app"],
                "driver": "fake",
                "replicas": replicas,
                "env": {"VERSION": "v1", "FAKE_START_DELAY": f"{ready_s}s"},
                "deploy": {"updateConfig": {"parallelism": parallelism, "monitor": "0s"}},
            }
        )
        client.create_service(spec)
        _wait(lambda: _ready(client, "fake", replicas), 60, "the first tasks")
        d = _rollout(client, "fake", {"VERSION": "v2", "FAKE_START_DELAY": f"{ready_s}s"}, 300)
        wall = (d.finished_at or 0) - d.started_at
        batches = -(-replicas // parallelism)
        minimum = batches * ready_s
        return {
            "phase": str(d.phase),
            "wall_s": wall,
            "minimum_s": minimum,
            "ratio": wall / minimum,
            "overhead_ms_per_batch": (wall - minimum) / batches * 1000,
            "warren_go_min_s": batches * WARREN_MIN_BATCH_S,
        }


def process_rollout(replicas: int = 100, parallelism: int = 10) -> dict[str, Any]:
    with running_server() as (client, _server, _data):
        spec = ServiceSpec.model_validate(
            {
                "name": "demo",
                "command": ["python", "-m", "warren.demo.app"],
                "replicas": replicas,
                "env": {"VERSION": "v1"},
                "ports": [{"published": free_port()}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "1s"},
                "stopGrace": "2s",
                "drainTimeout": "1s",
                "deploy": {"updateConfig": {"parallelism": parallelism, "monitor": "0s"}},
            }
        )
        client.create_service(spec)
        _wait(lambda: _ready(client, "demo", replicas), 120, "the first tasks")
        d = _rollout(client, "demo", {"VERSION": "v2"}, 600)
        tasks = client.list_tasks("demo")
        return {"phase": str(d.phase), **_timeline(d, tasks, parallelism)}


def _timeline(d: Deployment, tasks: list[Task], parallelism: int) -> dict[str, Any]:
    """Split each batch's time between the tasks' own work (start until ready; the old task's
    exit) and Warren's (creating the batch's tasks after the batch started; starting the next
    batch after the last old task ended)."""
    new = {t.slot: t for t in tasks if t.revision == d.to_revision and t.ready_at}
    old = {t.slot: t for t in tasks if t.revision != d.to_revision and t.finished_at}
    decisions = d.decisions
    starts = [x.time for x in decisions if x.reason == "BatchStarted"]
    readies = [x.time for x in decisions if x.reason == "BatchReady"]
    wall = (d.finished_at or 0) - d.started_at
    ready_s, exit_s, warren_s = 0.0, 0.0, 0.0
    for i, start in enumerate(starts):
        slots = [s for s in range(i * parallelism + 1, (i + 1) * parallelism + 1) if s in new]
        batch_new = [new[s] for s in slots]
        batch_old = [old[s] for s in slots if s in old]
        last_ready = max(t.ready_at or 0 for t in batch_new)
        last_exit = max((t.finished_at or 0 for t in batch_old), default=last_ready)
        first_created = min(t.created_at for t in batch_new)
        ready_s += last_ready - first_created
        exit_s += max(0.0, last_exit - last_ready)
        warren_s += first_created - start
        if i < len(readies):
            warren_s += max(0.0, readies[i] - max(last_ready, last_exit))
    batches = len(starts)
    ready_times = sorted((t.ready_at or 0) - t.created_at for t in new.values())
    return {
        "wall_s": wall,
        "batches": batches,
        "tasks_ready_s": ready_s,
        "ratio_vs_ready": wall / ready_s if ready_s else float("nan"),
        "old_exit_ms_per_batch": exit_s / batches * 1000,
        "warren_ms_per_batch": warren_s / batches * 1000,
        "task_ready_p50_s": statistics.median(ready_times) if ready_times else 0.0,
        "warren_go_min_s": batches * WARREN_MIN_BATCH_S,
    }


def load_test(replicas: int = 10, rate: float = 250.0) -> dict[str, Any]:
    with running_server() as (client, _server, _data):
        port = free_port()
        spec = ServiceSpec.model_validate(
            {
                "name": "web",
                "command": ["python", "-m", "warren.demo.app"],
                "replicas": replicas,
                "env": {"VERSION": "v1"},
                "ports": [{"published": port}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "500ms"},
                "stopGrace": "2s",
                "drainTimeout": "2s",
                "deploy": {"updateConfig": {"parallelism": 2, "monitor": "1s"}},
            }
        )
        client.create_service(spec)
        _wait(lambda: _ready(client, "web", replicas), 60, "the first tasks")
        with LoadGenerator(f"http://127.0.0.1:{port}/", rate=rate, connections=16) as load:
            time.sleep(1)
            start = load.snapshot()
            t0 = time.monotonic()
            d = _rollout(client, "web", {"VERSION": "v2"}, 300)
            during = load.snapshot().since(start)
            elapsed = time.monotonic() - t0
        return {
            "phase": str(d.phase),
            "requests": during.requests,
            "failed": during.failed,
            "rate": during.requests / elapsed,
            "versions": dict(during.versions),
            "errors": during.errors[:3],
        }


def main() -> None:
    print("rolling: update of 100 replicas, parallelism 10 (10 batches), monitor 0")
    f = fake_rollout()
    print(
        f"  fake driver, ready 1 s: {f['wall_s']:.2f} s vs minimum {f['minimum_s']:.1f} s — "
        f"ratio {f['ratio']:.3f} (goal ≤ 1.10), overhead {f['overhead_ms_per_batch']:.1f} ms/batch "
        f"(goal < 20 ms); Warren (Go) ≥ {f['warren_go_min_s']:.0f} s "
        f"({f['warren_go_min_s'] / f['wall_s']:.1f}x slower) [{f['phase']}]"
    )
    p = process_rollout()
    print(
        f"  process driver + demo app: {p['wall_s']:.2f} s; each batch's slowest task took "
        f"{p['tasks_ready_s']:.2f} s in all to be ready (ratio {p['ratio_vs_ready']:.3f}); per "
        f"batch, the old tasks' exit {p['old_exit_ms_per_batch']:.0f} ms, Warren's own "
        f"decisions {p['warren_ms_per_batch']:.1f} ms; task ready p50 "
        f"{p['task_ready_p50_s']:.2f} s; Warren (Go) ≥ {p['warren_go_min_s']:.0f} s [{p['phase']}]"
    )
    load = load_test()
    print(
        f"  load: rolling update of 10 demo-app replicas under {load['rate']:.0f} req/s: "
        f"{load['requests']} requests, {load['failed']} failed (goal 0), "
        f"versions {load['versions']} [{load['phase']}]"
    )
    if load["errors"]:
        print(f"    first errors: {load['errors']}")


if __name__ == "__main__":
    main()
