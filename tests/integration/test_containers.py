"""Services of containers through a real `warren server` on each real engine (dockerd, and
Podman's compatible service), as a new user would run them: served through the ingress, a
rolling update by image tag with no failed request, an image that does not exist failing its
deployment in seconds while the previous version keeps serving, and a server restart that adopts
the running containers instead of replacing them."""

from __future__ import annotations

import time

import pytest

from tests.containers import containers
from tests.engines import Engine
from tests.images import DEMO
from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.demo.load import LoadGenerator

pytestmark = pytest.mark.integration


def test_containers_serve_roll_fail_cleanly_and_survive_a_restart(
    container_server: tuple[ServerProcess, Engine, str],
) -> None:
    server, engine, node = container_server
    client = server.client()
    port = free_port()
    created = warren(
        server, "service", "create", "web", "--image", f"{DEMO}:v1", "--replicas", "3",
        "--publish", f"{port}:8080", "--health-http", "/healthz", "--health-interval", "500ms",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 3, 30, "3 ready")
    assert len([c for c in containers(engine, node) if c["State"] == "running"]) == 3

    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=100, connections=6) as load:
        rolled = warren(server, "service", "update", "web", "--image", f"{DEMO}:v2")
        assert rolled.returncode == 0, rolled.stderr + rolled.stdout
        t0 = time.monotonic()
        missing = warren(server, "service", "update", "web", "--image", "localhost/nope:v9")
        took = time.monotonic() - t0
        assert missing.returncode == 1
        status = client.deployment_status("web")
        assert status.revision == 2, status
        failures = " ".join(t.message for t in client.list_tasks("web"))
        assert "image not found: localhost/nope:v9" in failures + missing.stderr + missing.stdout
        assert took < 30, took
        time.sleep(1)
    result = load.stop()
    assert result.failed == 0, result.errors
    assert result.versions.keys() == {"v1", "v2"} and result.versions["v2"] > 0
    assert {t.revision for t in client.list_tasks("web") if t.ready} == {2}

    # A restart adopts the running containers: the same ones keep serving.
    before = {t.id: t.runtime_id for t in client.list_tasks("web") if t.state == "running"}
    server.stop()
    server.start()
    client = server.client()
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 3, 30, "3 ready")
    after = {t.id: t.runtime_id for t in client.list_tasks("web") if t.state == "running"}
    assert after == before
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=50, connections=2) as load:
        time.sleep(1)
    served = load.stop()
    assert served.failed == 0 and set(served.versions) == {"v2"}

    assert warren(server, "service", "rm", "web").returncode == 0
    wait_for(lambda: not containers(engine, node), 30, "the containers removed")
