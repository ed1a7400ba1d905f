"""Real servers for integration tests: ``python -m warren server`` as a child process on free
loopback ports and a temporary data dir; every process it (or its tasks) started is killed
afterwards, by PID — its tasks, and its ingress (``warren ingress``, a process of its own that
outlives the server on purpose)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from warren.client import Client

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last  # type: ignore[return-value]
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class ServerProcess:
    data_dir: Path
    api_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)
    """Set in the server's environment (DOCKER_HOST …)."""
    ca: Path | None = None
    """The API is served over https (``--api-tls-cert`` in ``extra``), verified with this CA
    bundle: by the readiness check, ``client()`` and ``warren()`` (``WARREN_CA``)."""

    @property
    def addr(self) -> str:
        scheme = "https" if self.ca is not None else "http"
        return f"{scheme}://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        ca = {"WARREN_CA": str(self.ca)} if self.ca is not None else {}
        return {
            **os.environ, "WARREN_ADDR": self.addr, "WARREN_DATA_DIR": str(self.data_dir), **ca
        }  # fmt: skip

    def start(self) -> ServerProcess:
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "warren", "server",
                "--data-dir", str(self.data_dir),
                "--api", f"127.0.0.1:{self.api_port}",
                "--http-port", str(self.http_port),
                "--node-name", "test-node",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.environ},
        )  # fmt: skip
        log.close()
        client = self.client()
        try:
            wait_for(lambda: client.health() and client.info(), 20, "the server to start")
        except AssertionError:
            raise AssertionError(f"server did not start:\n{self.log()}") from None
        finally:
            client.close()
        return self

    def client(self) -> Client:
        return Client(self.addr, data_dir=self.data_dir, ca=str(self.ca) if self.ca else None)

    def log(self) -> str:
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def task_pids(self) -> list[int]:
        pids = []
        for record in (self.data_dir / "agent" / "tasks").glob("*.json"):
            with contextlib.suppress(Exception):
                pids.append(int(json.loads(record.read_text())["pid"]))
        return pids

    def ingress_record(self, worker: int = 0) -> dict[str, object] | None:
        """What a running ingress worker wrote about itself (pid, version …), if any."""
        name = "ingress.json" if worker == 0 else f"ingress-{worker}.json"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads((self.data_dir / "ingress" / name).read_text()))
        return None

    def ingress_pid(self, worker: int = 0) -> int | None:
        record = self.ingress_record(worker)
        return int(str(record["pid"])) if record else None

    def ingress_workers(self, workers: int) -> list[int | None]:
        """The pid each of ``workers`` ingress workers' records names (None: no record)."""
        return [self.ingress_pid(w) for w in range(workers)]

    def ingress_pids(self) -> set[int]:
        """Every live ``warren ingress`` of this data dir: the workers in the records, and any
        other (one being replaced, or started by a server killed before it was recorded)."""
        found = set(ingress_processes(self.data_dir))
        for record in (self.data_dir / "ingress").glob("ingress*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = int(json.loads(record.read_text())["pid"])
                if pid_alive(pid):
                    found.add(pid)
        return found

    def kill_everything(self) -> None:
        self.stop(signal.SIGKILL)
        for pid in self.task_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in self.ingress_pids() | set(self.haproxy_pids()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def haproxy_pids(self) -> list[int]:
        """The HAProxy processes (master and workers) of ``--data-plane haproxy``."""
        return processes_with(self.data_dir, "haproxy")


def ingress_processes(data_dir: Path) -> list[int]:
    """The ``warren ingress`` processes whose data dir is in ``data_dir``, found by their
    command line."""
    return processes_with(data_dir, "ingress", "warren")


def processes_with(data_dir: Path, *words: str) -> list[int]:
    """The processes with a path in ``data_dir`` and each of ``words`` (or a path ending in
    it) on their command line."""
    pids = []
    root = str(data_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        mine = any(a == root or a.startswith(f"{root}/") for a in argv)
        named = all(any(a == w or a.endswith(f"/{w}") for a in argv) for w in words)
        if mine and named and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def warren(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``warren ARGS`` as a user types it, against ``server``."""
    return subprocess.run(
        [sys.executable, "-m", "warren", *args],
        env=server.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(
        name: str = "data", extra: list[str] | None = None, environ: dict[str, str] | None = None
    ) -> ServerProcess:
        srv = ServerProcess(tmp_path / name, extra=extra or [], environ=environ or {})
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.kill_everything()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory().start()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] not in ("Z", "X")
