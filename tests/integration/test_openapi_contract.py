"""The API's OpenAPI document against what a real ``warren server`` answers: schemathesis runs
every operation of ``/openapi.json`` with all of its checks (status codes, content types,
headers and bodies as declared, bad data refused, good data taken, 405 with ``Allow`` for a
method a path does not take, auth not ignored …), with the admin token; and without a token,
every route but the open ones answers 401.

A bounded number of examples per operation and a fixed seed: the same requests every run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import events

from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

EXAMPLES = 6
"""Per operation and phase: enough for every declared answer to come up, and a run of about 80 s
on a two-core machine."""
SEED = 7070
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
"""schemathesis' own answers to schema-valid data: taken, or refused by the state of things."""

OPEN = {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""The routes anyone may read: the server's health, its metrics for Prometheus, and the API's
description (it describes the API, not the cluster)."""

LIGHT = ["--no-worker", "--store", "memory", "--ingress", "embedded"]


@pytest.fixture
def light_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that runs no tasks, keeps its store in memory and its ingress in-process."""
    return server_factory(extra=LIGHT).start()


def _failures(server: ServerProcess, token: str) -> tuple[list[str], int]:
    """Every distinct failure of a schemathesis run against ``server``, one line each, and how
    many operations it tested."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "checks": {
                "enabled": True,
                # 422 is how the API answers values each allowed but not together (a healthy
                # deadline past the progress deadline): what no schema can state.
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]},
            },
            "generation": {"max-examples": EXAMPLES},
            "request-timeout": 10,
            # The event stream never ends by itself: a few events, then the next case.
            "max-stream-events": 2,
            # A log that is followed never ends by itself (test_logs reads one as a user does).
            "operations": [
                {
                    "include-path": "/v1/services/{name}/logs",
                    "parameters": {"query.follow": "false"},
                },
                # An event stream waits for the next event: a second is enough to read the
                # backlog (the stream itself is tested in test_events).
                {"include-path": "/v1/events/stream", "request-timeout": 1},
                # Rotating the admin token would end the run's own token (tested in
                # test_admin_token, as an operator rotates it).
                {"include-path": "/v1/cluster/admin-token/rotate", "enabled": False},
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{server.addr}/openapi.json", config=config)

    found: set[str] = set()
    operations: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            operations.add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        f = check.failure_info.failure
                        found.add(
                            f"{f.operation}: {f.code} {f.title}: {f.message}\n"
                            f"    {check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.add(f"error: {event}")
        elif isinstance(event, events.EngineFinished):
            found.update(f"{f.operation}: {f.code} {f.title}: {f.message}" for f in event.failures)
    return sorted(found), len(operations)


def test_the_openapi_document_matches_what_the_server_answers(
    light_server: ServerProcess,
) -> None:
    token = (light_server.data_dir / "admin.token").read_text().strip()
    started = time.monotonic()
    failures, operations = _failures(light_server, token)
    took = time.monotonic() - started
    assert operations > 40, f"only {operations} operations tested"
    assert not failures, f"{len(failures)} failure(s) in {took:.0f}s:\n" + "\n".join(failures)


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
