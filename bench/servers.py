"""A ``warren server`` child process for benchmarks: free ports, a temporary data dir, cleaned up
by PID (the server, then every task process it recorded, then its ingress workers)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from warren.client import Client
from warren.haproxy.config import Files
from warren.haproxy.process import Haproxy
from warren.ingress.supervising import IngressRecord

__all__ = ["free_port", "kill_ingress", "running_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_ingress(data: Path) -> None:
    """SIGKILL the ingress workers of the server of ``data`` (they outlive the server), and
    stop its HAProxy (``--data-plane haproxy``: its master's SIGTERM stops its workers)."""
    for running in IngressRecord.all_running(data / "ingress").values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(running.pid, signal.SIGKILL)
    haproxy = Haproxy(Files(data / "ingress" / "haproxy"), "haproxy")
    if haproxy.adopt() and haproxy.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(haproxy.pid, signal.SIGTERM)


@contextlib.contextmanager
def running_server(*extra: str) -> Iterator[tuple[Client, subprocess.Popen[bytes], Path]]:
    data = Path(tempfile.mkdtemp(prefix="warren-bench-"))
    port = free_port()
    with open(data / "server.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "warren", "server", "--data-dir", str(data),
                "--api", f"127.0.0.1:{port}", "--http-port", "0", "--log-level", "warning",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
    client = Client(f"http://127.0.0.1:{port}", data_dir=data)
    try:
        deadline = time.monotonic() + 20
        while not (client.health() and (data / "admin.token").exists()):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start; see {data / 'server.log'}")
            time.sleep(0.05)
        yield client, server, data
    finally:
        client.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        for record in (data / "agent" / "tasks").glob("*.json"):
            with contextlib.suppress(Exception):
                os.killpg(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)
        kill_ingress(data)
        shutil.rmtree(data, ignore_errors=True)
