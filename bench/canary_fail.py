"""A failing canary: how long its traffic lasts once the analysis has the evidence.

One ``warren server``; a service of 4 demo-app tasks (``VERSION=v1``, HTTP health check, one
published port) under a steady paced load through that port (``bench.traffic``: 200 req/s over 8
keep-alive connections, every response logged with the monotonic time it was received and who
answered). Then an update to a bad version (``VERSION=v2 FAIL_RATE=1.0``: every ``/`` is a 500)
with ``strategy: canary``, steps ``[setWeight: 20, pause: 30s]``, analysis ``{interval: 2s,
successRate: 0.95, minRequests: 20}``. The canary's answers are recognised in the log by their
version (``v2``) or the demo app's ``injected failure`` body.

From the log and the deployment's decision log (wall-clock times, converted to monotonic):

- t0: the canary's first answer; the window the analysis judges closes at the ``WeightSet``
  decision + interval (``analysis_at`` is set there) and is judged at the ``AnalysisFailed``
  decision;
- **failure → weight 0**: the canary's last answer - the window's close;
- **first canary request → weight 0**: the canary's last answer - t0, against the goal of one
  interval + 100 ms;
- requests that failed outside the canary (goal 0).

5 runs on one server: a failed canary leaves the service on its stable spec, so each run starts
from v1 again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench.servers import free_port, running_server
from bench.traffic import TrafficLog, traffic
from warren.client import Client
from warren.domain.deployments import Deployment
from warren.domain.specs import ServiceSpec

RUNS = 5
REPLICAS = 4
RATE = 200.0
CONNECTIONS = 8
INTERVAL_S = 2.0
GOAL_S = INTERVAL_S + 0.1
CANARY = {
    "strategy": "canary",
    "canary": {
        "steps": [{"setWeight": 20}, {"pause": "30s"}],
        "analysis": {"interval": f"{INTERVAL_S:g}s", "successRate": 0.95, "minRequests": 20},
    },
}


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _wall_to_monotonic() -> float:
    """What to subtract from a ``time.time()`` of this machine to get ``time.monotonic()``."""
    return min((time.time() - time.monotonic() for _ in range(5)), key=abs)


def _stable(client: Client, n: int) -> bool:
    """``n`` ready tasks of the service's current revision, and no other task alive."""
    revision = client.get_service("web").revision
    tasks = [t for t in client.list_tasks("web") if t.wants_running or t.state.active]
    return len(tasks) == n and all(t.ready and t.revision == revision for t in tasks)


def run(
    runs: int, fail_rate: float, rate: float = RATE, data_plane: str = "builtin"
) -> list[dict[str, Any]]:
    with running_server("--data-plane", data_plane) as (client, _server, _data):
        port = free_port()
        spec = ServiceSpec.model_validate(
            {
                "name": "web",
                "command": [sys.executable, "-m", "warren.demo.app"],
                "replicas": REPLICAS,
                "env": {"VERSION": "v1"},
                "ports": [{"published": port}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "250ms"},
                "stopGrace": "2s",
                "drainTimeout": "2s",
            }
        )
        client.create_service(spec)
        _wait(lambda: _stable(client, REPLICAS), 60, "the first tasks")
        offset = _wall_to_monotonic()
        results = []
        with traffic(port, CONNECTIONS, rate) as load:
            time.sleep(1.0)
            deployments = []
            windows = []
            for _ in range(runs):
                start = time.monotonic()
                deployments.append(_fail_once(client, fail_rate))
                windows.append((start, time.monotonic()))
            log = load.stop()
        for d, (start, end) in zip(deployments, windows, strict=True):
            results.append(_judge(log, d, start, end, offset))
        return results


def _fail_once(client: Client, fail_rate: float) -> Deployment:
    changes = {"env": {"VERSION": "v2", "FAIL_RATE": f"{fail_rate:g}"}, "deploy": CANARY}
    _, _, deployment_id = client.patch_service("web", changes)
    assert deployment_id is not None
    d = _wait(
        lambda: (x := client.get_deployment("web", deployment_id)).phase.terminal and x,
        60,
        "the canary to fail",
    )
    # The canary's tasks gone and the stable ones all serving: the next run starts from the
    # same place.
    _wait(lambda: _stable(client, REPLICAS), 30, "the canary tasks to go")
    time.sleep(0.5)
    assert isinstance(d, Deployment)
    return d


def _judge(
    log: TrafficLog, d: Deployment, start: float, end: float, offset: float
) -> dict[str, Any]:
    canary_labels = {code for code, label in enumerate(log.labels) if label in ("v2", "injected")}
    rows = sorted(
        (log.sent[i], log.received[i], log.label[i] in canary_labels, log.failed(i))
        for i in range(len(log))
        if start <= log.sent[i] < end
    )
    canary = [received for _, received, is_canary, _ in rows if is_canary]
    outside = sum(1 for _, _, is_canary, failed in rows if failed and not is_canary)
    # The last request the canary got, by sending order, and the 5th after it: at 20% the
    # weighted round-robin gives the canary exactly one of every 5 consecutive requests, so weight
    # 0 was in effect between the two sends.
    last_canary = max((k for k, row in enumerate(rows) if row[2]), default=None)

    def decided(reason: str) -> float | None:
        times = [x.time - offset for x in d.decisions if x.reason == reason]
        return times[0] if times else None

    weight_set = decided("WeightSet")
    judged = decided("AnalysisFailed")
    result: dict[str, Any] = {
        "id": d.id,
        "phase": str(d.phase),
        "message": d.message,
        "requests": len(rows),
        "canary_requests": len(canary),
        "failed_outside": outside,
    }
    if not canary or weight_set is None or judged is None or last_canary is None:
        return result
    t0, last = min(canary), max(canary)
    closed = weight_set + INTERVAL_S
    result.update(
        {
            "weight_set_to_first_ms": (t0 - weight_set) * 1000,
            "judged_after_close_ms": (judged - closed) * 1000,
            "judged_to_last_ms": (last - judged) * 1000,
            "failure_to_zero_ms": (last - closed) * 1000,
            "first_to_zero_s": last - t0,
            "zero_after_ms": (rows[last_canary][0] - closed) * 1000,
            "zero_by_ms": (rows[min(last_canary + 5, len(rows) - 1)][0] - closed) * 1000,
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench canary-fail")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--fail-rate", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=RATE, help="requests/s of the load")
    parser.add_argument("--data-plane", default="builtin", choices=["builtin", "haproxy"])
    args, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "canary-fail"])
    rows = run(args.runs, args.fail_rate, args.rate, args.data_plane)
    print(
        f"canary-fail ({args.data_plane} data plane): {REPLICAS} demo-app tasks under "
        f"{args.rate:.0f} req/s; a canary with "
        f"FAIL_RATE={args.fail_rate:g} at 20%, analysis every {INTERVAL_S:g}s "
        f"(successRate 0.95, minRequests 20); medians of {args.runs} runs"
    )
    done = [r for r in rows if "failure_to_zero_ms" in r]
    for r in rows:
        if r not in done:
            print(f"  {r['id']}: {r['phase']} ({r['message']}) — no failing window measured")
    if done:

        def med(key: str) -> float:
            return float(statistics.median(r[key] for r in done))

        def span(key: str, scale: float = 1.0) -> str:
            values = [r[key] * scale for r in done]
            return f"{min(values):.0f}-{max(values):.0f}"

        print(
            f"  failure → weight 0 (the canary's last answer - the window's close): "
            f"{med('failure_to_zero_ms'):.1f} ms [{span('failure_to_zero_ms')}]"
        )
        print(
            f"    window closed → judged (the AnalysisFailed decision) "
            f"{med('judged_after_close_ms'):.1f} ms; weight 0 in effect between "
            f"{med('zero_after_ms'):.1f} and {med('zero_by_ms'):.1f} ms after the close (the "
            "canary's last request sent, and the 5th request after it)"
        )
        print(
            f"  first canary request → weight 0: {med('first_to_zero_s') * 1000:.0f} ms "
            f"[{span('first_to_zero_s', 1000)}] (goal < {GOAL_S * 1000:.0f} ms); WeightSet → the "
            f"canary's first answer {med('weight_set_to_first_ms'):.1f} ms"
        )
    print(
        f"  failed outside the canary: {sum(r['failed_outside'] for r in rows)} of "
        f"{sum(r['requests'] for r in rows)} requests (goal 0); canary answers "
        f"{sum(r['canary_requests'] for r in rows)}; phases {[r['phase'] for r in rows]}"
    )


if __name__ == "__main__":
    main()
