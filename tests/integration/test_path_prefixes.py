"""Path prefixes on the shared port, end to end: a real ``warren server`` (its ingress a process
of its own, compiled when a build is there) and the demo app as two services on one host —
``/api`` to one, the rest to the other — the target forwarded as the client sent it; and a
third service claiming a prefix already held, reported in ``ingressProblems``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess, wait_for, warren
from warren.client import Client
from warren.domain.specs import ServiceSpec

pytestmark = pytest.mark.integration

HOST = "shop.test"
WAIT = 5.0


def demo(name: str, version: str, replicas: int = 1, **fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": name,
            "command": ["python", "-m", "warren.demo.app"],
            "replicas": replicas,
            "env": {"VERSION": version},
            "host": HOST,
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "200ms"},
            "stopGrace": "2s",
            **fields,
        }
    )


def ready(client: Client, name: str) -> bool:
    return any(t.ready and t.wants_running for t in client.list_tasks(name))


def answer(http: httpx.Client, target: str) -> tuple[int, str]:
    """(status, who answered: the demo's VERSION, or the ingress's own text)."""
    r = http.get(target)
    if r.headers.get("content-type") == "application/json":
        return r.status_code, str(r.json()["version"])
    return r.status_code, r.text.strip()


def test_two_services_on_one_host_by_path_prefix(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory().start()
    client = server.client()
    client.create_service(demo("api", "A", paths=["/api/"]))
    client.create_service(demo("site", "B"))
    wait_for(lambda: ready(client, "api") and ready(client, "site"), 30, "both services ready")
    base = f"http://127.0.0.1:{server.http_port}"
    with httpx.Client(base_url=base, headers={"Host": HOST}, trust_env=False, timeout=WAIT) as http:
        wait_for(lambda: answer(http, "/api") == (404, "A"), 10, "/api routed to api")
        wait_for(lambda: answer(http, "/") == (200, "B"), 10, "/ routed to site")
        # Not stripped: the demo app sees /api/users, which it does not serve, and says so.
        r = http.get("/api/users?page=2")
        assert r.status_code == 404
        assert r.json()["error"] == "no route /api/users"
        assert r.json()["version"] == "A"
        assert answer(http, "/api?q=1") == (404, "A")
        assert answer(http, "/apis") == (404, "B")  # not on a segment boundary: the catch-all
        assert answer(http, "/static/app.js") == (404, "B")

        client.create_service(demo("api-copy", "C", replicas=0, paths=["/api"]))
        problem = f"host {HOST} path /api is claimed by api-copy too; api has it"
        wait_for(
            lambda: problem in client.info()["ingressProblems"].get(str(server.http_port), ""),
            10,
            "the conflict reported",
        )
        assert answer(http, "/api") == (404, "A")  # the holder keeps it
        shown = warren(server, "cluster", "status")
        assert f"ingress   port {server.http_port}: {problem}" in shown.stdout, shown.stdout

        client.delete_service("site")
        wait_for(
            lambda: answer(http, "/") == (404, f"no service for host {HOST} and path /"),
            10,
            "/ without a service",
        )
        assert answer(http, "/api/x") == (404, "A")
    client.close()
