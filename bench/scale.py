"""Scale: create 1,000 services x 10 replicas (fake driver, 50 simulated nodes) through the API
until all 10,000 tasks run; report the wall time, API latency (p50/p99) during it, and the
server's peak RSS.

Goal: 10,000 tasks running in under 20 s, API p99 under 50 ms, RSS under 200 MB. (Warren, the Go
original, reports 1.57 services/s and 184 MB in its own load test.)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.servers import kill_ingress
from warren.client import Client


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _p50_p99(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}/{percentile(values, 0.99) * 1e3:.1f}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


async def run(services: int, replicas: int, nodes: int, concurrency: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="warren-bench-"))
    port = free_port()
    server = subprocess.Popen(  # noqa: ASYNC220 (started once, before measuring)
        [
            sys.executable, "-m", "warren", "server", "--data-dir", str(data),
            "--api", f"127.0.0.1:{port}", "--http-port", "0", "--no-worker",
            "--simulate-nodes", str(nodes), "--log-level", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(data / "server.log", "wb"),  # noqa: SIM115, ASYNC230
    )  # fmt: skip
    try:
        addr = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            with Client(addr, data_dir=data) as probe:
                if probe.health() and (data / "admin.token").exists():
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            await asyncio.sleep(0.1)
        token = (data / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        latencies: list[float] = []
        by_kind: dict[str, list[float]] = {}
        async with httpx.AsyncClient(base_url=addr, headers=headers, timeout=30) as http:

            async def call(method: str, path: str, **kw: object) -> httpx.Response:
                t0 = time.perf_counter()
                response = await http.request(method, path, **kw)  # type: ignore[arg-type]
                elapsed = time.perf_counter() - t0
                latencies.append(elapsed)
                route = path if path == "/v1/services" else path.rsplit("/", 1)[0] + "/NAME"
                kind = f"{method} {route}"
                by_kind.setdefault(kind, []).append(elapsed)
                response.raise_for_status()
                return response

            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(services):
                queue.put_nowait(i)

            async def creator() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = {
                        "name": f"svc-{i:04d}",
                        "command": ["app"],
                        "driver": "fake",
                        "replicas": replicas,
                        "env": {"VERSION": "v1"},
                    }
                    await call("POST", "/v1/services", json=body)
                    await call("GET", f"/v1/services/svc-{i:04d}")

            start = time.monotonic()
            await asyncio.gather(*(creator() for _ in range(concurrency)))
            created = time.monotonic() - start
            want = services * replicas
            running = 0
            while running < want:
                response = await call("GET", "/v1/services")
                running = sum(s["running"] for s in response.json())
                if time.monotonic() - start > 300:
                    raise SystemExit(f"only {running}/{want} tasks running after 300 s")
                await asyncio.sleep(0.25)
            total = time.monotonic() - start
        return {
            "services": services,
            "tasks": want,
            "create_s": created,
            "all_running_s": total,
            "services_per_s": services / total,
            "api_p50_ms": statistics.median(latencies) * 1000,
            "api_p99_ms": percentile(latencies, 0.99) * 1000,
            "api_calls": len(latencies),
            "rss_peak_mb": peak_rss_mb(server.pid),
            **{f"{kind} p50/p99 ms": _p50_p99(v) for kind, v in by_kind.items()},
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        kill_ingress(data)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "scale"])
    result = asyncio.run(run(args.services, args.replicas, args.nodes, args.concurrency))
    print("scale: 1 server, fake driver, simulated nodes, sqlite store")
    print(
        f"  {result['tasks']:.0f} tasks ({result['services']:.0f} services) running in "
        f"{result['all_running_s']:.1f} s (goal < 20 s) — {result['services_per_s']:.1f} "
        f"services/s (Warren: 1.57/s, ratio {result['services_per_s'] / 1.57:.0f}x)"
    )
    print(
        f"  API during it: p50 {result['api_p50_ms']:.1f} ms, p99 {result['api_p99_ms']:.1f} ms "
        f"over {result['api_calls']:.0f} calls (goal p99 < 50 ms)"
    )
    print(f"  server peak RSS {result['rss_peak_mb']:.0f} MB (goal < 200 MB; Warren: 184 MB)")
    for key, value in result.items():
        if "p50/p99" in key:
            print(f"    {key}: {value}")


if __name__ == "__main__":
    main()
