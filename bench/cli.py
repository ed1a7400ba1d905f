"""CLI start-up: the CPU seconds of ``warren --help`` and of ``warren service ls`` (against a
running server with 20 services), each run a new process as a user's shell starts it. Goal: under
0.3 s of CPU each. The peer, ``docker``'s CLI (a Go binary), is timed the same way where it is
installed (``docker --help``; ``docker ps`` needs a daemon and is not run).

CPU is user + system of the finished child (``os.wait4``), the median of RUNS runs after one
warm-up run that is not counted."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

from bench.servers import running_server
from warren.domain.specs import ServiceSpec

GOAL = 0.3
"""Seconds of CPU for one command to start, do its work and exit."""
SERVICES = 20


def cpu_seconds(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """The CPU seconds of each of ``runs`` runs of ``argv`` (after one not counted)."""
    found = []
    for i in range(runs + 1):
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited with {child.returncode}")
        if i:
            found.append(usage.ru_utime + usage.ru_stime)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cli")
    parser.add_argument("--runs", type=int, default=15)
    args, _ = parser.parse_known_args(sys.argv[2:])
    warren = [sys.executable, "-m", "warren"]
    with running_server("--no-worker", "--store", "memory", "--ingress", "embedded") as (
        client,
        _server,
        _data,
    ):
        for i in range(SERVICES):
            client.create_service(ServiceSpec(name=f"svc{i}", command=["sleep", "60"]))
        env = {**os.environ, "WARREN_ADDR": client.addr, "WARREN_TOKEN": client.token or ""}
        commands = {
            "warren --help": [*warren, "--help"],
            "warren service ls": [*warren, "service", "ls"],
        }
        docker = shutil.which("docker")
        if docker is not None:
            commands["docker --help (peer)"] = [docker, "--help"]
        print(f"CLI start-up, CPU seconds (median of {args.runs}; goal < {GOAL} s)")
        for label, argv in commands.items():
            times = cpu_seconds(argv, env, args.runs)
            median = statistics.median(times)
            verdict = "" if "peer" in label else ("  ok" if median < GOAL else "  OVER GOAL")
            print(
                f"  {label:24} {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}){verdict}"
            )
