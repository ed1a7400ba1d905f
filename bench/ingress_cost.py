"""What one proxied request costs the ingress itself, without the kernel or the machine's noise:
``python -m bench ingress-cost``.

In one process, a request (``GET /`` with a Host, as wrk sends it) and its response (nginx's, a
17-byte JSON body) go through a client connection and a pooled upstream connection of a real
``Ingress`` (routing, weights 50/50, counters), their transports replaced by objects that take
the bytes and do nothing (``bench.ingress_cost_run``). Reported for the build ``make`` made
and for the source (``WARREN_PURE=1``):

- CPU microseconds per request (the best of 5 runs of 100,000): the user-space cost, no system
  calls — still subject to the machine's speed of the moment;
- with valgrind installed, instructions per request (callgrind, the difference between a run of
  1,000 requests and one of 4,000, so that start-up cancels out): the same on every run, the
  figure to compare two versions of the code by.

What it leaves out, the kernel's share (reading and writing the sockets, waking the processes
on their other end), ``python -m bench ingress`` measures against HAProxy's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(env: dict[str, str], requests: int, runs: int, valgrind: bool = False) -> str:
    args = [sys.executable, "-m", "bench.ingress_cost_run", str(requests), str(runs)]
    if valgrind:
        out = Path(tempfile.mkdtemp(prefix="warren-cost-")) / "callgrind.out"
        args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args]
    proc = subprocess.run(
        args, env=os.environ | env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"ingress-cost: the run failed: {proc.stderr[-500:]}")
    if valgrind:
        shutil.rmtree(out.parent, ignore_errors=True)
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            raise SystemExit(f"ingress-cost: no count from valgrind: {proc.stderr[-500:]}")
        return m.group(1)
    return proc.stdout.strip()


def instructions(env: dict[str, str]) -> int:
    """User-space instructions per request (callgrind)."""
    few, many = (int(_run(env, n, 1, valgrind=True)) for n in (1000, 4000))
    return (many - few) // 3000


def main() -> None:
    print("ingress-cost (one request and its response through the ingress, in process)")
    for name, env in (("warren", {"WARREN_PURE": ""}), ("warren-python", {"WARREN_PURE": "1"})):
        line = f"  {name:13} {_run(env, 100_000 if name == 'warren' else 20_000, 5)}"
        if shutil.which("valgrind"):
            line += f", {instructions(env):,} instructions per request"
        print(line)
    if not shutil.which("valgrind"):
        print("  (instructions per request: install valgrind)")


if __name__ == "__main__":
    main()
