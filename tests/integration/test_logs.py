"""`warren service logs --follow`: the last lines, then new ones as the task writes them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.servers import ServerProcess, wait_for
from warren.domain.specs import ServiceSpec

pytestmark = pytest.mark.integration

TICK = "import time; [(print('tick', i, flush=True), time.sleep(0.2)) for i in range(10000)]"


def test_follow_prints_new_lines_as_they_come(server: ServerProcess) -> None:
    client = server.client()
    client.create_service(ServiceSpec(name="tick", command=[sys.executable, "-c", TICK]))
    wait_for(lambda: any(t.state == "running" for t in client.list_tasks("tick")), 20, "running")
    time.sleep(0.5)
    follower = subprocess.Popen(
        [sys.executable, "-m", "warren", "service", "logs", "tick", "--follow", "--tail", "1"],
        env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 15
        while len(seen) < 6 and time.monotonic() < deadline:
            seen.append(int(follower.stdout.readline().rsplit(" ", 1)[1]))
        # The tail's one line, then the new ones in order, none missed, none twice.
        assert len(seen) == 6 and seen[1] > seen[0], seen
        assert seen[1:] == list(range(seen[1], seen[1] + 5)), seen
    finally:
        follower.terminate()
        follower.wait(5)
