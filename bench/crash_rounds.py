"""``kill -9`` of the server during a rolling update: does a good release still succeed?

Per round, a fresh ``warren server`` (sqlite store, process driver, its own temporary data dir)
runs a service of 6 demo-app tasks (``python -m warren.demo.app``, HTTP check on ``/healthz``
every 200 ms, failures counted from 10 s after a start). ``warren service update NAME --env
VERSION=v2 --parallelism 2 --delay 1s --detach`` starts a rolling update of a good release; the
server is killed with SIGKILL at a random moment of the ``--within`` seconds (3) after that
command returned (seeded, different each round), started again on the same data dir, and the
update is followed to its end. A round counts against the goal when the update ended anything but
``succeeded`` (``rolled_back`` …): a crash of the control plane must never roll back a good
release. Goal: 0 of 20.

``--aim`` kills it instead the moment the agent starts the 1st to 6th new task (at random): when
the process driver's ``TASK.starting`` marker appears, a few milliseconds before the process is
forked and recorded — the window a random moment rarely finds.

Afterwards the server and every task process of the round are killed by PID (the tasks found by
their ``WARREN_SERVICE`` in ``/proc``, the service's name being unique to the round).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import free_port, kill_ingress
from warren.client import Client
from warren.domain.deployments import Phase

ROUNDS = 20
REPLICAS = 6
WITHIN_S = 3.0
SEED = 20261212
START_PERIOD = "10s"
"""Without one, a demo app not listening ~0.6 s after its start fails its check (3 probes, 200 ms
apart): on a loaded machine, a server restarting beside it is enough, and the rollback that
follows is no crash bug."""


class TimedOut(Exception):
    pass


@dataclass(frozen=True)
class Round:
    kill_after: float
    phase: Phase | None
    """None: the update had not ended 120 s after the restart."""
    message: str
    seconds: float
    """The round's wall time."""
    unrecorded: int
    """Server log lines of the restarted agent stopping a process "started but never
    recorded"."""
    restarted: int
    """Server log lines of the restarted agent starting a task again whose start the kill cut
    short (none before that was fixed: the task was reported failed)."""


def _wait(check: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(every)
    raise TimedOut(f"timed out waiting for {what}")


class Server:
    """One ``warren server`` on ``data``, started and SIGKILLed as often as asked."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "WARREN_ADDR": f"http://127.0.0.1:{self.port}",
            "WARREN_DATA_DIR": str(data),
        }

    def start(self) -> Client:
        with open(self.data.parent / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "warren", "server", "--data-dir", str(self.data),
                    "--api", f"127.0.0.1:{self.port}", "--http-port", "0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        client = Client(self.env["WARREN_ADDR"], data_dir=self.data)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited; see {self.data.parent / 'server.log'}")
            return client.health() and (self.data / "admin.token").exists()

        deadline = time.monotonic() + 20
        while not up():
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        return client

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "warren", *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def cli_started(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "warren", *args], env=self.env, stdout=subprocess.DEVNULL
        )

    def log(self) -> str:
        return (self.data.parent / "server.log").read_text(errors="replace")


def _processes_of(service: str) -> list[int]:
    """Every live process whose environment names ``service``."""
    marker = f"WARREN_SERVICE={service}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env:
                found.append(int(entry.name))
    return found


def _settled(client: Client, name: str, revision: int) -> bool:
    tasks = [t for t in client.list_tasks(name) if t.state.active]
    return len(tasks) == REPLICAS and all(t.ready and t.revision == revision for t in tasks)


def _kill_at_start(server: Server, update: subprocess.Popen[bytes], nth: int) -> float:
    """SIGKILL ``server`` the moment its agent starts the ``nth`` task of the update (its process
    driver's ``TASK.starting`` marker appears; the marker goes once the process is recorded).
    Returns the seconds from the update command's start to the kill."""
    t0 = time.monotonic()
    tasks = server.data / "agent" / "tasks"
    seen: set[str] = set()
    while time.monotonic() - t0 < 30:
        seen.update(n for n in os.listdir(tasks) if n.endswith(".starting"))
        if len(seen) >= nth:
            break
        time.sleep(0.0002)
    server.kill()
    killed = time.monotonic() - t0
    update.wait(30)
    return killed


def one_round(kill_after: float, aim: int = 0) -> Round:
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="warren-crash-"))
    name = f"crash-{secrets.token_hex(3)}"
    server = Server(base / "data")
    keep = False
    try:
        client = server.start()
        server.cli(
            "service", "create", name, "--command", "python -m warren.demo.app",
            "--replicas", str(REPLICAS), "--env", "VERSION=v1",
            "--health-http", "/healthz", "--health-interval", "200ms",
            "--health-start-period", START_PERIOD,
        )  # fmt: skip
        _wait(lambda: _settled(client, name, 1), 60, "the first tasks to be ready")
        update = [
            "service", "update", name, "--env", "VERSION=v2",
            "--parallelism", "2", "--delay", "1s", "--detach",
        ]  # fmt: skip
        if aim:
            kill_after = _kill_at_start(server, server.cli_started(*update), aim)
        else:
            server.cli(*update)
            time.sleep(kill_after)
            server.kill()
        client.close()
        client = server.start()
        deployment = next(d.id for d in client.list_deployments(name) if d.to_revision == 2)

        def ended() -> Any:
            found = client.get_deployment(name, deployment)
            return found if found.phase.terminal else None

        try:
            update = _wait(ended, 120, "the update to end", every=0.2)
            phase, message = update.phase, update.message
        except TimedOut as exc:
            phase, message = None, str(exc)
        client.close()
        log = server.log()
        unrecorded = log.count("started but never recorded")
        restarted = log.count("its start was cut short")
        if phase != Phase.SUCCEEDED:
            keep = True  # for a look at the server's log and the task records
        seconds = time.monotonic() - t0
        return Round(kill_after, phase, message, seconds, unrecorded, restarted)
    finally:
        server.kill()
        kill_ingress(server.data)
        for pid in _processes_of(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if keep:
            print(f"  (kept {base})", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench crash-rounds")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--within", type=float, default=WITHIN_S, help="kill in the first S s")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--aim",
        action="store_true",
        help="kill as the agent starts a new task (the 1st to 6th, at random), not at a time",
    )
    args, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "crash-rounds"])
    rng = random.Random(args.seed)
    when = "as the agent starts a new task" if args.aim else f"in the first {args.within:g} s"
    print(
        f"crash-rounds: {REPLICAS} demo-app replicas, update --parallelism 2 --delay 1s, "
        f"kill -9 of the server {when}, {args.rounds} rounds",
        flush=True,
    )
    bad = 0
    for n in range(1, args.rounds + 1):
        try:
            result = one_round(rng.uniform(0.0, args.within), rng.randint(1, REPLICAS) * args.aim)
        except TimedOut as exc:
            sys.exit(f"round {n}: {exc}")
        bad += result.phase != Phase.SUCCEEDED
        outcome = result.phase or "not ended"
        line = f"  round {n:2}: killed after {result.kill_after:.2f} s → {outcome}"
        line += f" ({result.seconds:.0f} s)"
        if result.unrecorded:
            line += f"; stopped {result.unrecorded} process(es) never recorded"
        if result.restarted:
            line += f"; started {result.restarted} task(s) again, their start cut short"
        if result.phase != Phase.SUCCEEDED:
            line += f": {result.message}"
        print(line, flush=True)
    verdict = "met" if not bad else "NOT met"
    print(f"  updates not succeeded: {bad} of {args.rounds} (goal 0: {verdict})")


if __name__ == "__main__":
    main()
