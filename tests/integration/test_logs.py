"""`warren service logs` against a real server and real processes: the last lines of every task
merged by time, --since, --timestamps, --follow through a rolling update, and log files rotated
under their cap."""

from __future__ import annotations

import itertools
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.servers import ServerProcess, wait_for, warren
from warren.domain.specs import ServiceSpec

pytestmark = pytest.mark.integration

WAIT = 20.0
"""Bound of every wait here (each takes a second or two when all is well)."""


def ticking(every: float = 0.1) -> list[str]:
    """A task that prints ``VERSION tick N`` every ``every`` seconds."""
    code = (
        "import os, time\n"
        "for i in range(1_000_000):\n"
        f"    print(os.environ.get('VERSION', 'v1'), 'tick', i, flush=True); time.sleep({every})"
    )
    return [sys.executable, "-c", code]


def running(server: ServerProcess, service: str, count: int) -> None:
    client = server.client()
    wait_for(
        lambda: sum(t.state == "running" for t in client.list_tasks(service)) == count,
        WAIT,
        f"{count} running tasks of {service}",
    )


def lines_of(server: ServerProcess, *args: str) -> list[str]:
    result = warren(server, "service", "logs", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


STAMPED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (\S+) +\| (.*)")


def stamped(line: str) -> tuple[str, str, str]:
    """``TIME TASK | TEXT`` (``--timestamps``) → its three parts."""
    m = STAMPED.fullmatch(line)
    assert m is not None, f"not TIME TASK | TEXT: {line!r}"
    return m.group(1), m.group(2), m.group(3)


class Follower:
    """``warren service logs --follow`` as a user runs it; its lines read by a thread, so that
    every wait for a line is bounded."""

    def __init__(self, server: ServerProcess, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warren", "service", "logs", *args, "--follow"],
            env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def until(self, done: Callable[[list[str]], bool], what: str) -> list[str]:
        deadline = time.monotonic() + WAIT
        while not done(self.lines):
            left = deadline - time.monotonic()
            try:
                self.lines.append(self._queue.get(timeout=max(left, 0)))
            except queue.Empty:
                raise AssertionError(f"no {what} within {WAIT}s; seen: {self.lines}") from None
        return self.lines

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def test_follow_prints_new_lines_as_they_come(server: ServerProcess) -> None:
    server.client().create_service(ServiceSpec(name="tick", command=ticking(0.2)))
    running(server, "tick", 1)
    follower = Follower(server, "tick", "--tail", "1")
    try:
        seen = follower.until(lambda lines: len(lines) >= 6, "6 lines")
        numbers = [int(line.rsplit(" ", 1)[1]) for line in seen[:6]]
        # The tail's one line, then the new ones in order, none missed, none twice.
        assert numbers == list(range(numbers[0], numbers[0] + 6)), seen
    finally:
        follower.stop()


def test_follow_picks_up_the_tasks_of_an_update_and_says_when_tasks_end(
    server: ServerProcess,
) -> None:
    client = server.client()
    client.create_service(ServiceSpec(name="tick", command=ticking(), env={"VERSION": "v1"}))
    running(server, "tick", 1)
    (old,) = [t.id for t in client.list_tasks("tick")]
    follower = Follower(server, "tick", "--tail", "1")
    try:
        follower.until(lambda lines: len(lines) >= 3, "lines of the first task")
        update = warren(server, "service", "update", "tick", "--env", "VERSION=v2", "--detach")
        assert update.returncode == 0, update.stderr

        seen = follower.until(
            lambda lines: (
                any(f"{old} | [warren] ended" in x for x in lines)
                and sum(" | v2 tick " in x for x in lines) >= 3
            ),
            "the old task's end and the new task's lines",
        )
    finally:
        follower.stop()
    (new,) = [t.id for t in client.list_tasks("tick") if t.revision == 2]
    started = seen.index(f"{new} | [warren] started: revision 2 on node test-node")
    ended = next(i for i, x in enumerate(seen) if x.startswith(f"{old} | [warren] ended: "))
    assert "replaced by revision 2" in seen[ended] or "exited" in seen[ended], seen[ended]
    new_lines = [i for i, x in enumerate(seen) if x.startswith(f"{new} | v2 tick ")]
    old_lines = [i for i, x in enumerate(seen) if x.startswith(f"{old} | v1 tick ")]
    # The new task's output from its first line on, after it is said to start; nothing of
    # the old one after it is said to end.
    assert started < new_lines[0] and seen[new_lines[0]].endswith(" tick 0"), seen
    assert max(old_lines) < ended, seen


def test_timestamps_prefix_each_line_with_its_time(server: ServerProcess) -> None:
    server.client().create_service(ServiceSpec(name="tick", command=ticking()))
    running(server, "tick", 1)
    wait_for(lambda: len(lines_of(server, "tick")) >= 5, WAIT, "5 lines")
    before = datetime.now(UTC)

    lines = lines_of(server, "tick", "--timestamps", "--tail", "5")

    assert len(lines) == 5
    times = [stamped(line)[0] for line in lines]
    assert times == sorted(times)
    newest = datetime.fromisoformat(times[-1][:26] + "+00:00")  # µs: what datetime takes
    assert abs((newest - before).total_seconds()) < 5
    assert all(stamped(line)[2].startswith("v1 tick ") for line in lines)
    assert lines_of(server, "tick", "-t", "--tail", "5")[0][:4] == times[0][:4]


def test_since_leaves_out_the_older_lines(server: ServerProcess) -> None:
    server.client().create_service(ServiceSpec(name="tick", command=ticking()))
    running(server, "tick", 1)
    wait_for(lambda: len(lines_of(server, "tick")) >= 12, WAIT, "12 lines")
    everything = lines_of(server, "tick", "-t", "--tail", "12")
    cut, _, text = stamped(everything[5])

    since = lines_of(server, "tick", "-t", "--since", cut)

    # Every line from the cut on (with --since, not only the last 100), none before it.
    assert stamped(since[0])[2] == text
    assert since[: len(everything) - 5] == everything[5:]
    assert all(stamped(line)[0] >= cut for line in since)
    recent = lines_of(server, "tick", "--since", "1s")
    assert 0 < len(recent) < len(lines_of(server, "tick", "--since", "1m"))
    far = lines_of(server, "tick", "--since", "2999-01-01T00:00:00Z")
    assert far == []
    assert lines_of(server, "tick", "--since", "2999-12-31T00:00:00Z") == []  # any day of a month
    bad = warren(server, "service", "logs", "tick", "--since", "2999-02-30T00:00:00Z")
    assert bad.returncode == 2
    assert "expected a duration like 10m or a time like" in bad.stderr, bad.stderr


def test_the_lines_of_several_tasks_interleave_by_time(server: ServerProcess) -> None:
    server.client().create_service(ServiceSpec(name="tick", command=ticking(), replicas=2))
    running(server, "tick", 2)
    wait_for(lambda: len(lines_of(server, "tick")) >= 30, WAIT, "15 lines of each task")

    lines = [stamped(line) for line in lines_of(server, "tick", "-t", "--tail", "15")]

    assert len(lines) == 30
    assert [t for t, _, _ in lines] == sorted(t for t, _, _ in lines)
    tasks = [task for _, task, _ in lines]
    assert len(set(tasks)) == 2
    # Both tick every 0.1 s: their lines take turns, not one task's after the other's.
    turns = sum(a != b for a, b in itertools.pairwise(tasks))
    assert turns >= 10, tasks
    for task in set(tasks):  # each task's own lines in their order
        numbers = [int(text.rsplit(" ", 1)[1]) for _, t, text in lines if t == task]
        assert numbers == sorted(numbers)


CHATTY = (
    "import time\n"
    "for i in range(5000): print(f'line {i:05d}')\n"
    "print('done', flush=True)\n"
    "time.sleep(3600)"
)


@pytest.fixture
def small_logs(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(extra=["--log-max-size", "4k", "--log-max-files", "3"]).start()


def test_log_files_rotate_under_their_cap_and_tail_reads_across_them(
    small_logs: ServerProcess,
) -> None:
    server = small_logs
    client = server.client()
    client.create_service(ServiceSpec(name="chatty", command=[sys.executable, "-c", CHATTY]))
    wait_for(
        lambda: lines_of(server, "chatty", "--tail", "1")[0].endswith(" | done"),
        WAIT,
        "the task to print its 5000 lines",
    )
    (task,) = [t.id for t in client.list_tasks("chatty")]
    logs: Path = server.data_dir / "logs"

    files = sorted(p.name for p in logs.glob(f"{task}.log*") if not p.name.endswith(".lock"))

    assert files == [f"{task}.log", f"{task}.log.1", f"{task}.log.2"]
    assert all((logs / name).stat().st_size <= 4096 for name in files)
    newest = len((logs / f"{task}.log").read_text().splitlines())
    count = newest + 10  # past the newest file, into the one before
    shown = [line.split(" | ", 1)[1] for line in lines_of(server, "chatty", "--tail", str(count))]
    assert len(shown) == count and shown[-1] == "done"
    numbers = [int(text.split()[1]) for text in shown[:-1]]
    assert numbers == list(range(5000 - len(numbers), 5000))
    kept = lines_of(server, "chatty", "--tail", "100000")
    # Three files of at most 4 KiB, lines of 42 bytes: about 290 of the 5001 lines are kept.
    assert 250 < len(kept) < 300
