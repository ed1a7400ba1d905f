"""What the container tests share: a real ``warren server`` on a real engine (``container_server``,
one per test, its containers labelled with a node name of its own and removed by that label at
the end), the CLI, and the engine's containers of that node."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.engines import Engine
from tests.images import api_request
from tests.servers import ServerProcess

__all__ = ["container_server", "containers"]


def containers(engine: Engine, node: str) -> list[dict[str, object]]:
    query = urllib.parse.quote(json.dumps({"label": [f"warren.node={node}"]}))
    status, body = api_request(engine.socket, "GET", f"/containers/json?all=1&filters={query}")
    assert status == 200, body
    found: list[dict[str, object]] = json.loads(body)
    return found


@pytest.fixture
def container_server(
    engine: Engine, server_factory: Callable[..., ServerProcess]
) -> Iterator[tuple[ServerProcess, Engine, str]]:
    node = f"ct-{uuid.uuid4().hex[:8]}"
    extra = ["--node-name", node, "--docker-network", engine.network]
    server = server_factory(extra=extra, environ={"DOCKER_HOST": engine.url}).start()
    try:
        yield server, engine, node
    finally:
        server.kill_everything()
        for c in containers(engine, node):
            api_request(engine.socket, "DELETE", f"/containers/{c['Id']}?force=1", timeout=30)
