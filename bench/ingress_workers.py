"""Ingress workers: requests per second through 2 ingress processes on one port (SO_REUSEPORT,
as ``--ingress-workers 2`` runs them) against 1, on the same machine, in alternating rounds.

The same upstreams (two nginx answering a fixed body, weights 50/50), the same load (wrk, 2
threads, 64 keep-alive connections, 8 s after a 1 s warm-up). Nothing is pinned: the workers,
wrk and nginx share every core, as they would on a machine that runs its tasks beside its
ingress — so on a 2-core machine the load generator and the upstreams take part of the cores
the workers would need, and the figure is a floor for what 2 workers give on 2 cores of their
own. Each round also reports the CPU seconds the ingress processes used per second of load
(how many cores they had) and how the connections split between the workers.

Goal (issue 13): 2 workers on 2 cores >= 1.6x one worker's requests per second.
Needs ``wrk`` and ``nginx`` (Debian packages of those names).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.ingress import _nginx, _process, cpu_seconds
from bench.servers import free_port
from warren.ingress import COMPILED

SECONDS = 8
CONNECTIONS = 64
THREADS = 2
ROUNDS = 3


@contextlib.contextmanager
def _workers(n: int, port: int, upstreams: list[int]) -> Iterator[list[int]]:
    """``n`` ingress processes serving ``port``, each on its own SO_REUSEPORT socket."""
    args = [sys.executable, "-m", "bench.ingress_server", str(port)]
    args += [f"127.0.0.1:{p}" for p in upstreams]
    with contextlib.ExitStack() as stack:
        env = {"REUSE_PORT": "1"}
        workers = [_process(args, port, None, env, says_ready=True) for _ in range(n)]
        yield [stack.enter_context(worker).pid for worker in workers]


def _warm_up(url: str) -> None:
    args = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "-d1s", url]
    subprocess.run(args, capture_output=True, timeout=30, check=False)


def _connections(pid: int, port: int) -> int:
    """Established client connections of the process ``pid`` on ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def measure(n: int, upstreams: list[int]) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with _workers(n, port, upstreams) as pids:
        _warm_up(url)
        before = [cpu_seconds(p) for p in pids]
        split: list[int] = []
        began = time.monotonic()
        done = subprocess.Popen(  # the measured run; the split read while it runs
            ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(SECONDS / 2)
            split = [_connections(p, port) for p in pids]
            out, _ = done.communicate(timeout=SECONDS + 30)
        finally:
            if done.poll() is None:
                done.kill()
                done.wait()
        elapsed = time.monotonic() - began
        cpu = sum(cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))
    match = re.search(r"(\d+) requests in", out)
    if match is None:
        raise SystemExit(f"wrk said: {out[-500:]}")
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"failed responses through the ingress: {out[-500:]}")
    requests = int(match.group(1))
    return {
        "rps": requests / SECONDS,
        "cores": cpu / elapsed,
        "split": float(min(split) / max(max(split), 1)) if split else 0.0,
        "connections": float(sum(split)),
    }


def compare(rounds: int) -> dict[int, list[dict[str, float]]]:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")
    tmp = Path(tempfile.mkdtemp(prefix="warren-workers-bench-"))
    ups = [free_port(), free_port()]
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        with contextlib.ExitStack() as stack:
            for i, port in enumerate(ups):
                stack.enter_context(_process(_nginx(tmp, port, f"v{i + 1}"), port, None))
            for i in range(rounds):
                for n in (1, 2) if i % 2 == 0 else (2, 1):  # a drift in load falls on both
                    results[n].append(measure(n, ups))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    argv = sys.argv[1:]
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else ROUNDS
    load_before = os.getloadavg()[0]
    results = compare(rounds)
    build = "compiled by mypyc" if COMPILED else "not compiled"
    print(
        f"ingress workers ({build}): 1 vs 2 processes on one port (SO_REUSEPORT), "
        f"{os.cpu_count()} cores shared with wrk -t{THREADS} -c{CONNECTIONS} and 2 nginx, "
        f"{SECONDS}s, {rounds} alternating rounds; machine load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after"
    )
    for n, runs in results.items():
        for r in runs:
            print(
                f"  {n} worker(s): {r['rps']:8.0f} req/s, ingress on {r['cores']:.2f} cores, "
                f"connections {r['connections']:.0f} (fewest/most per worker {r['split']:.2f})"
            )
    one = statistics.median(r["rps"] for r in results[1])
    two = statistics.median(r["rps"] for r in results[2])
    per_round = [b["rps"] / a["rps"] for a, b in zip(results[1], results[2], strict=True)]
    # Requests per CPU-second of the ingress processes: what a core given to them yields.
    per_core = {
        n: statistics.median(r["rps"] / r["cores"] for r in runs) for n, runs in results.items()
    }
    print(
        f"  median: 1 worker {one:.0f} req/s, 2 workers {two:.0f} req/s: {two / one:.2f}x "
        f"(goal >= 1.6 on 2 cores of their own; per round "
        f"{', '.join(f'{x:.2f}' for x in per_round)}); per ingress CPU-second: "
        f"1 worker {per_core[1]:.0f}, 2 workers {per_core[2]:.0f} "
        f"({per_core[2] / per_core[1]:.2f}x)"
    )


if __name__ == "__main__":
    main()
