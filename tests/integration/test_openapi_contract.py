"""The API's OpenAPI document against what a real ``warren server`` answers: without a token,
every route the document lists but the open ones answers 401, before it reads the body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

OPEN = {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""The routes anyone may read: the server's health, its metrics for Prometheus, and the API's
description (it describes the API, not the cluster)."""

LIGHT = ["--no-worker", "--store", "memory", "--ingress", "embedded"]


@pytest.fixture
def light_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that runs no tasks, keeps its store in memory and its ingress in-process."""
    return server_factory(extra=LIGHT).start()


def _routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of the document, its path parameters filled in."""
    filled = {"name": "web", "number": "1", "task_id": "t1", "service": "web"}
    found = []
    for path, operations in document["paths"].items():
        concrete = path.format_map(filled | {"deployment_id": "d1"})
        found.extend((method.upper(), concrete) for method in operations)
    return found


def test_without_the_token_every_route_but_the_open_ones_answers_401(
    light_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=light_server.addr, timeout=10) as http:
        document = http.get("/openapi.json").json()
        assert http.get("/docs").status_code == 200
        routes = _routes(document)
        assert len(routes) > 40
        answers = {}
        for method, path in routes:
            # A body that would not validate: the token is checked before the body is read.
            answer = http.request(method, path, content=b"{not json")
            answers[f"{method} {path}"] = answer.status_code
            if path not in OPEN:
                assert answer.headers["www-authenticate"] == "Bearer", (method, path)
    closed = {route: status for route, status in answers.items() if route.split()[1] not in OPEN}
    assert set(closed.values()) == {401}, {r: s for r, s in closed.items() if s != 401}
    assert answers["GET /healthz"] == 200
    assert answers["GET /metrics"] == 200
