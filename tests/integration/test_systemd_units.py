"""The systemd units of contrib/systemd: each one as ``systemd-analyze verify`` reads it (with
``ExecStart`` pointed at this install), and the server's run as systemd would run it — its
``Environment=`` and ``ExecStart``, then a stop as its ``KillMode=process`` does it, SIGTERM to
the main process alone: the server exits within ``TimeoutStopSec`` while the ingress and the
tasks keep running, and the server started again adopts them (the same task serves)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, wait_for
from warren.client import Client
from warren.domain.specs import ServiceSpec

UNITS = Path(__file__).parents[2] / "contrib" / "systemd"
WARREN = str(Path(sys.executable).with_name("warren"))


def _service_section(unit: Path) -> dict[str, list[str]]:
    """The ``[Service]`` settings of ``unit``: name → its values, in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            name, _, value = line.partition("=")
            settings.setdefault(name, []).append(value)
    return settings


def _here(unit: Path, tmp_path: Path) -> Path:
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/warren", WARREN))
    return copy


@pytest.mark.parametrize("name", ["warren-server", "warren-worker", "warren-ingress"])
def test_the_unit_is_one_systemd_takes_without_a_word(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd (.ci/run does)")
    unit = _here(UNITS / f"{name}.service", tmp_path)
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr
    service = _service_section(unit)
    assert service["ExecStart"] == [f"{WARREN} {name.removeprefix('warren-')}"]
    # Every unit's stop leaves room for the drain its SIGTERM starts.
    assert int(service["TimeoutStopSec"][0]) >= (60 if name != "warren-ingress" else 30) + 15


def test_the_server_unit_stops_the_server_alone_and_it_adopts_its_tasks_again(
    tmp_path: Path,
) -> None:
    service = _service_section(UNITS / "warren-server.service")
    assert service["KillMode"] == ["process"]
    env = {**os.environ}
    for assignment in service["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value
    api, http = free_port(), free_port()
    # What /etc/warren/server.env would say here, and a data dir of the test's own.
    env.update(
        WARREN_DATA_DIR=str(tmp_path / "data"),
        WARREN_API=f"127.0.0.1:{api}",
        WARREN_HTTP_PORT=str(http),
        WARREN_NODE_NAME="n1",
    )
    command = shlex.split(service["ExecStart"][0].replace("/usr/local/bin/warren", WARREN))
    timeout = int(service["TimeoutStopSec"][0])
    addr = f"http://127.0.0.1:{api}"

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "server.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _healthy(addr), 30, "the server's API")
        return proc

    server = start()
    client = Client(addr, data_dir=tmp_path / "data")
    pids: list[int] = []
    try:
        spec = {
            "name": "web", "command": ["python", "-m", "warren.demo.app"],
            "env": {"VERSION": "v1"}, "healthCheck": {"http": {"path": "/healthz"}},
        }  # fmt: skip
        client.create_service(ServiceSpec.model_validate(spec))
        (task,) = wait_for(lambda: [t for t in client.list_tasks("web") if t.ready], 30, "ready")
        assert task.runtime_id is not None
        pids = [int(task.runtime_id), *client.info().get("ingressPids", [])]
        server.send_signal(signal.SIGTERM)  # KillMode=process: the main process alone
        assert server.wait(timeout) == 0
        for pid in pids:
            os.kill(pid, 0)  # still running: raises if gone
        server = start()
        again = wait_for(lambda: [t for t in client.list_tasks("web") if t.ready], 30, "adopted")
        assert [t.id for t in again] == [task.id]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout)
        subprocess.run(
            [WARREN, "ingress", "--stop", "--data-dir", str(tmp_path / "data" / "ingress")],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        for pid in pids:  # what the test started and the stops above left: none, normally
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _healthy(addr: str) -> bool:
    try:
        return httpx.get(f"{addr}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
