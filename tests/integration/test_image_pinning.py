"""A revision runs the image it first ran, on each real engine: the digest the docker driver
resolved for its first task is kept with the revision, and the revision's later tasks — a scale
up, a rollback to it — run that image even after its tag was moved to another one."""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest

from tests.containers import containers
from tests.engines import Engine
from tests.images import HTTPD, api_request
from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.client import Client

pytestmark = pytest.mark.integration


def tag(engine: Engine, image: str, as_: str) -> None:
    """``docker tag IMAGE AS_``: moves the tag ``as_`` when it names another image."""
    repo, _, name = as_.rpartition(":")
    query = urllib.parse.urlencode({"repo": repo, "tag": name})
    status, body = api_request(engine.socket, "POST", f"/images/{image}/tag?{query}")
    assert status in (200, 201), body


def served(client: Client, revision: int, n: int) -> set[str]:
    """What the ``n`` ready tasks of ``revision`` answer on ``/`` (waiting for them)."""
    wait_for(
        lambda: (
            len([t for t in client.list_tasks("web") if t.ready and t.revision == revision]) == n
        ),
        60,
        f"{n} ready tasks of revision {revision}",
    )
    ready = [t for t in client.list_tasks("web") if t.ready and t.revision == revision]
    return {httpx.get(f"http://{t.endpoint}/", timeout=5).text.strip() for t in ready}


def test_a_revision_keeps_running_its_first_image_when_its_tag_moves(
    container_server: tuple[ServerProcess, Engine, str],
) -> None:
    server, engine, node = container_server
    client = server.client()
    moving = f"{HTTPD}:moving-{node}"
    tag(engine, f"{HTTPD}:v1", moving)
    try:
        created = warren(
            server, "service", "create", "web", "--image", moving, "--publish",
            f"{free_port()}:8080", "--health-http", "/healthz", "--health-interval", "200ms",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr + created.stdout
        assert served(client, 1, 1) == {"warren-httpd v1"}

        tag(engine, f"{HTTPD}:v2", moving)  # the tag moves on: revision 1 must not
        assert warren(server, "service", "scale", "web", "2").returncode == 0
        assert served(client, 1, 2) == {"warren-httpd v1"}

        # A new revision resolves the tag again; a rollback to revision 1 runs its image.
        updated = warren(server, "service", "update", "web", "--env", "X=1")
        assert updated.returncode == 0, updated.stderr + updated.stdout
        assert served(client, 2, 2) == {"warren-httpd v2"}
        rolled = warren(server, "service", "rollback", "web")
        assert rolled.returncode == 0, rolled.stderr + rolled.stdout
        assert served(client, 1, 2) == {"warren-httpd v1"}

        answer = warren(server, "service", "revisions", "web", "-o", "json")
        assert answer.returncode == 0, answer.stderr
        listed = json.loads(answer.stdout)
        digests = {r["number"]: r["imageDigest"] for r in listed}
        assert digests[1] and digests[2] and digests[1] != digests[2], digests
        assert all(r["imageNodes"] == [node] for r in listed), listed
        table = warren(server, "service", "revisions", "web")
        assert "DIGEST" in table.stdout.splitlines()[0], table.stdout
        assert warren(server, "service", "rm", "web").returncode == 0
        wait_for(lambda: not containers(engine, node), 30, "the containers removed")
    finally:
        api_request(engine.socket, "DELETE", f"/images/{moving}")
