"""Warren's own image (``localhost/warren:VERSION``, built offline by ``tests/images.py``) run on
each engine as docs/production.md's ``docker run`` line runs it: its default command (``warren
server`` on 0.0.0.0:7070, data in ``/data``), the API and the ingress's shared port published on
127.0.0.1, ``/data`` a directory of the host. The CLI of this host reaches the API with the admin
token read from that directory, creates a process service of the demo app inside the container
and reaches it through the published shared port, again after a restart of the container;
``warren --version`` in a second container prints the version, and a third finds ``sh``, ``cat``
and the ``warren`` script; stopping the server's container is quick, and nothing is left."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engines import Engine
from tests.images import WARREN_IMAGE, WARREN_VERSION, api_request, ensure_images
from tests.servers import free_port, wait_for
from warren.ingress import native

pytestmark = pytest.mark.integration

START = 60.0
"""Bound on the server's start in its container, to /healthz answering (~2 s here)."""

COMPILED = "import warren.ingress as i; print(i.COMPILED)"

STOP = 30.0
"""``docker stop``'s grace period: SIGTERM, then SIGKILL after it."""


def _call(engine: Engine, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
    status, data = api_request(
        engine.socket,
        method,
        path,
        body=None if body is None else json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )
    assert 200 <= status < 300, f"{method} {path}: HTTP {status}: {data[:500]!r}"
    return json.loads(data) if data.strip() else None


def _logs(engine: Engine, container: str) -> str:
    """The container's output, stdout and stderr as they came (the API multiplexes them:
    frames of an 8-byte header — stream, 3 zero bytes, big-endian length — and the bytes)."""
    status, data = api_request(
        engine.socket, "GET", f"/containers/{container}/logs?stdout=1&stderr=1", timeout=30
    )
    if status != 200:
        return f"(no logs: HTTP {status})"
    out, i = bytearray(), 0
    while i + 8 <= len(data):
        (size,) = struct.unpack(">I", data[i + 4 : i + 8])
        out += data[i + 8 : i + 8 + size]
        i += 8 + size
    return out.decode(errors="replace")


def _run(engine: Engine, config: dict[str, Any], started: list[str]) -> str:
    """Create and start a container (``docker run -d``); its id."""
    name = f"warren-image-{uuid.uuid4().hex[:8]}"
    created = _call(engine, "POST", f"/containers/create?name={name}", config)
    started.append(created["Id"])
    _call(engine, "POST", f"/containers/{created['Id']}/start")
    return str(created["Id"])


def _cli(addr: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``warren --addr ADDR ARGS`` of this host, with ``WARREN_TOKEN``, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    return subprocess.run(
        [sys.executable, "-m", "warren", "--addr", addr, *args],
        env={**env, "WARREN_TOKEN": token}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_image_runs_a_server_that_runs_a_service_and_knows_its_version(
    engine: Engine, tmp_path: Path
) -> None:
    ensure_images(engine.socket, images=(WARREN_IMAGE,))
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    api_port, http_port = free_port(), free_port()
    started: list[str] = []
    try:
        # docker run -d --init -p 127.0.0.1:API:7070 -p 127.0.0.1:HTTP:8000 -v DATA:/data IMAGE
        server = _run(
            engine,
            {
                "Image": WARREN_IMAGE.ref,
                "ExposedPorts": {"7070/tcp": {}, "8000/tcp": {}},
                "HostConfig": {
                    "Init": True,
                    "NetworkMode": engine.network,
                    "PortBindings": {
                        "7070/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(api_port)}],
                        "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(http_port)}],
                    },
                    "Binds": [f"{data}:/data"],
                },
            },
            started,
        )
        addr = f"http://127.0.0.1:{api_port}"
        t0 = time.monotonic()
        try:
            wait_for(lambda: httpx.get(f"{addr}/healthz", timeout=2).status_code == 200, START,
                     "the API's /healthz through the published port")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs(engine, server)}") from None
        healthy = time.monotonic() - t0

        # The token is in the data directory, on the host; the API wants it off loopback too.
        token = (data / "admin.token").read_text().strip()
        assert httpx.get(f"{addr}/v1/services", timeout=10).status_code == 401

        created = _cli(addr, token, "service", "create", "web",
                       "--command", "python3 -m warren.demo.app", "-r", "1",
                       "--host", "web.test", "--health-http", "/healthz")  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr + _logs(engine, server)
        assert "service web: 1/1 tasks ready" in created.stdout

        # Served by the ingress in the container, through the published shared port.
        def through_the_ingress() -> dict[str, Any] | None:
            resp = httpx.get(f"http://127.0.0.1:{http_port}/", headers={"Host": "web.test"})
            return resp.json() if resp.status_code == 200 else None

        answer = wait_for(through_the_ingress, 30, "the demo app through the ingress")
        assert "version" in answer, answer
        listed = _cli(addr, token, "service", "ls")
        assert listed.returncode == 0 and "web" in listed.stdout, listed.stdout + listed.stderr

        # docker run --rm IMAGE --version: the entrypoint is `python3 -m warren`.
        version = _run(engine, {"Image": WARREN_IMAGE.ref, "Cmd": ["--version"]}, started)
        waited = _call(engine, "POST", f"/containers/{version}/wait", timeout=60)
        assert waited["StatusCode"] == 0, _logs(engine, version)
        assert _logs(engine, version).strip() == f"warren {WARREN_VERSION}"
        # What `docker exec` finds on the image's PATH: a shell, cat, and the console script;
        # and the ingress runs compiled in the image when it is compiled here.
        shell = ["cat /data/admin.token && warren -V && python3 -c " + repr(COMPILED)]
        config = {"Image": WARREN_IMAGE.ref, "Entrypoint": ["sh", "-c"], "Cmd": shell,
                  "HostConfig": {"Binds": [f"{data}:/data"]}}  # fmt: skip
        execs = _run(engine, config, started)
        assert _call(engine, "POST", f"/containers/{execs}/wait", timeout=60)["StatusCode"] == 0
        compiled = native.compiled(native.sources()) and native.fresh(
            native.sources(), native.STAMP
        )
        expected = [token, "warren", WARREN_VERSION, str(compiled)]
        assert _logs(engine, execs).split() == expected

        # docker restart: the tasks ended with the container; the server starts them anew.
        _call(engine, "POST", f"/containers/{server}/restart?t={int(STOP)}", timeout=STOP + 30)
        wait_for(lambda: httpx.get(f"{addr}/healthz", timeout=2).status_code == 200, START,
                 "the API after a restart")  # fmt: skip
        wait_for(through_the_ingress, 30, "the demo app through the ingress after a restart")

        # docker stop: SIGTERM to the init, passed on to the server, which exits within it.
        t0 = time.monotonic()
        _call(engine, "POST", f"/containers/{server}/stop?t={int(STOP)}", timeout=STOP + 30)
        stopped = time.monotonic() - t0
        state = _call(engine, "GET", f"/containers/{server}/json")["State"]
        assert state["Status"] == "exited", state
        assert stopped < STOP, f"stop took {stopped:.1f}s: killed, not stopped\n" + _logs(
            engine, server
        )
        print(f"\n  {engine.name}: /healthz after {healthy:.2f}s, stopped in {stopped:.2f}s")
    finally:
        for container in started:
            api_request(engine.socket, "DELETE", f"/containers/{container}?force=1&v=1", timeout=30)
    remaining = _call(engine, "GET", "/containers/json?all=1")
    assert not [c for c in remaining if c["Id"] in started], remaining
