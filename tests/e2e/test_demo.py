"""``warren demo`` as a new user runs it: it ends well, its releases and its two server restarts
(SIGTERM, kill -9) under load fail no request outside the bad canary, and it leaves nothing
running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def demo_processes() -> list[str]:
    """Command lines of processes that run in a demo's data dir (warren-demo-*)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "warren-demo-" in argv:
                found.append(argv.replace("\0", " "))
    return found


def test_the_demo_restarts_the_server_under_load_without_a_failed_request() -> None:
    before = demo_processes()
    run = subprocess.run(
        [sys.executable, "-m", "warren", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 5:
            rows[cells[0]] = cells
    for step in ("rolling v1 → v2", "good canary v4", "server Ctrl-C", "server kill -9"):
        _, _, requests, failed, _ = rows[step]
        assert int(requests) > 0 and failed == "0", rows[step]
    assert "ingress adopted" in rows["server kill -9"][4]
    assert demo_processes() == before
