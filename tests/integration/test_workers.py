"""Remote workers against a real server: the join, what a node's token may and may not do, and a
worker (in this process) running a service's tasks, reporting them, and fencing itself when no
manager answers for its lease's ttl."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import wait_for
from warren.api.serving import MAX_BODY
from warren.domain.errors import ValidationError
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import DesiredState, Task
from warren.reporting import TrafficReporter
from warren.server import EmbeddedServer, ServerConfig
from warren.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[EmbeddedServer]:
    config = ServerConfig(data_dir=tmp_path / "m", api="127.0.0.1:0", http_port=0, worker=False)
    with EmbeddedServer(config) as embedded:
        yield embedded


def api(embedded: EmbeddedServer) -> str:
    assert embedded.server is not None
    return embedded.server.api_url


def call(
    embedded: EmbeddedServer, method: str, path: str, token: str, body: Any = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, api(embedded) + path, json=body, headers=headers, timeout=10)


def join(embedded: EmbeddedServer, node: str) -> str:
    with embedded.client() as c:
        token = c.join_token()
    answer = call(embedded, "POST", "/v1/worker/join", token, {"node": node})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["nodeToken"])


def node_body(name: str) -> dict[str, Any]:
    return {
        "node": {
            "name": name, "address": "127.0.0.1", "cpus": 2, "memory": 2**30,
            "drivers": ["process"], "registeredAt": 0, "updatedAt": 0,
        },
        "ttl": 10,
    }  # fmt: skip


def fake_service(name: str = "web", replicas: int = 2) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": name, "image": "web:1", "driver": "fake", "replicas": replicas}
    )


def test_joining_needs_the_join_token(manager: EmbeddedServer) -> None:
    wrong = call(manager, "POST", "/v1/worker/join", "wrn-join-nope", {"node": "w1"})
    assert wrong.status_code == 401
    assert "invalid join token" in wrong.json()["error"]["message"]
    token = join(manager, "w1")
    assert token.startswith("wrn-node.w1.")
    with manager.client() as c:
        bad_name = call(manager, "POST", "/v1/worker/join", c.join_token(), {"node": "-x y"})
    assert bad_name.status_code == 400 and bad_name.json()["error"]["field"] == "node"


def test_a_node_token_is_for_its_own_node_and_its_workers_calls_only(
    manager: EmbeddedServer,
) -> None:
    token = join(manager, "w1")
    # The admin API: forbidden, with a word on why.
    for method, path in (("GET", "/v1/services"), ("GET", "/v1/cluster/join-token")):
        answer = call(manager, method, path, token)
        assert answer.status_code == 403, path
        assert "worker's calls only" in answer.json()["error"]["message"]
    # A tampered token is no token. (Its last two characters changed: to "00", unless they
    # are that already — one token in 256 ends so, and would pass unchanged.)
    tampered = token[:-2] + ("11" if token.endswith("00") else "00")
    assert call(manager, "PUT", "/v1/worker/node", tampered, node_body("w1")).status_code == 401
    # Its own node only.
    assert call(manager, "PUT", "/v1/worker/node", token, node_body("w2")).status_code == 403
    registered = call(manager, "PUT", "/v1/worker/node", token, node_body("w1"))
    assert registered.status_code == 200
    lease = registered.json()["lease"]
    beat = call(manager, "POST", "/v1/worker/heartbeat", token, {"lease": lease, "ttl": 10})
    assert beat.json() == {"lease": lease, "renewed": True}
    # Another lease (the leader's, say) is never kept alive on a node's behalf; while the
    # node's heartbeat is bound to a live lease, another lease is a second worker: refused.
    body = {"lease": 987654321, "ttl": 10}
    other = call(manager, "POST", "/v1/worker/heartbeat", token, body)
    assert other.status_code == 409 and "second worker" in other.json()["error"]["message"]
    beat = call(manager, "POST", "/v1/worker/heartbeat", token, {"lease": lease, "ttl": 10})
    assert beat.json() == {"lease": lease, "renewed": True}
    # A machine joining under the name of a live node is refused.
    with manager.client() as c:
        again = call(manager, "POST", "/v1/worker/join", c.join_token(), {"node": "w1"})
    assert again.status_code == 409 and "--node-name" in again.json()["error"]["message"]

    with manager.client() as c:
        c.create_service(fake_service())
    # No task of w1: the service's revisions and tasks are not its business.
    assert call(manager, "GET", "/v1/worker/revisions/web/1", token).status_code == 403


def test_the_assignment_stream_starts_with_the_nodes_tasks_and_where_they_stand(
    manager: EmbeddedServer,
) -> None:
    token = join(manager, "w1")
    body = node_body("w1")
    body["node"]["drivers"] = ["fake"]
    assert call(manager, "PUT", "/v1/worker/node", token, body).status_code == 200
    with manager.client() as c:
        c.create_service(fake_service())
        wait_for(lambda: sum(t.node == "w1" for t in c.list_tasks("web")) == 2, 10, "placed")
    headers = {"Authorization": f"Bearer {token}"}
    url = api(manager) + "/v1/worker/assignments"
    messages: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=headers, timeout=10) as stream:
        for line in stream.iter_lines():
            messages.append(json.loads(line))
            if messages[-1]["type"] == "synced":
                break
    tasks = [m for m in messages if m["type"] == "task"]
    assert len(tasks) == 2 and all(m["task"]["node"] == "w1" for m in tasks)
    assert messages[-1]["revision"] >= max(m["modRevision"] for m in tasks)


def test_bodies_are_bounded_before_any_token_is_read(manager: EmbeddedServer) -> None:
    url = api(manager) + "/v1/worker/traffic"
    big = b"[" + b"0," * (MAX_BODY // 2) + b"0]"
    assert httpx.post(url, content=big, timeout=30).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    chunked = httpx.post(url, content=chunks(), timeout=30)
    assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]["message"]
    # A small chunked body still reaches the route (and its token check).
    assert httpx.post(url, content=iter([b"{}"]), timeout=10).status_code == 401


def test_a_traffic_report_from_the_future_is_refused(manager: EmbeddedServer) -> None:
    token = join(manager, "w1")
    with manager.client() as c:
        c.create_service(fake_service())
    batch = {"service": "web", "revision": 1, "samples": [[-5.0, 0.01, False]]}
    answer = call(manager, "POST", "/v1/worker/traffic", token, {"batches": [batch]})
    assert answer.status_code == 400, answer.text
    batch["samples"] = [[0.5, 0.01, False]]
    answer = call(manager, "POST", "/v1/worker/traffic", token, {"batches": [batch]})
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "dropped": []}


def sent(service: str, revision: int, n: int = 1) -> dict[str, Any]:
    return {"service": service, "revision": revision, "samples": [[0.1, 0.01, False]] * n}


def test_a_traffic_report_drops_what_names_no_revision_of_a_service(
    manager: EmbeddedServer,
) -> None:
    """Traffic of an unknown service or revision is dropped and named in the answer — kept, it
    would only take the managers' memory — and the rest is taken: a report that mentions a
    service just removed is still a report (a worker sends it once, not again and again)."""
    token = join(manager, "w1")
    with manager.client() as c:
        c.create_service(fake_service())
    batches = [sent("web", 1, 2), sent("web", 7), sent("gone", 1)]
    answer = call(manager, "POST", "/v1/worker/traffic", token, {"batches": batches})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accepted": 1,
        "dropped": [
            {"service": "web", "revision": 7, "reason": "service web has no revision 7"},
            {"service": "gone", "revision": 1, "reason": "no service gone"},
        ],
    }
    assert manager.server is not None
    traffic = manager.server.traffic
    assert traffic.window("web", 1, 60).requests == 2
    assert traffic.window("web", 7, 60).requests == 0
    assert traffic.window("gone", 1, 60).requests == 0
    # Nothing known at all: still an answer the worker takes as received, not an error it
    # would send the same samples again for.
    answer = call(manager, "POST", "/v1/worker/traffic", token, {"batches": [sent("gone", 1)]})
    assert answer.status_code == 200 and answer.json()["accepted"] == 0


class RemovedServiceIngress:
    """An ingress whose traffic names a service that no longer exists, and one that does."""

    def samples_since(self, since: float) -> list[tuple[str, int, list[tuple[float, float, bool]]]]:
        now = time.monotonic()
        return [(name, 1, [(now, 0.01, False)]) for name in ("gone", "web") if now > since]


def test_a_worker_keeps_reporting_when_a_service_was_just_removed(
    manager: EmbeddedServer,
) -> None:
    token = join(manager, "w1")
    with manager.client() as c:
        c.create_service(fake_service())

    async def scenario() -> tuple[bool, int]:
        async def node_token() -> str:
            return token

        reporter = TrafficReporter(
            RemovedServiceIngress(),  # type: ignore[arg-type]
            lambda: [api(manager)],
            node_token,
        )
        try:
            return await reporter.send(), reporter.failed_sends
        finally:
            await reporter.close()

    assert asyncio.run(scenario()) == (True, 0)
    assert manager.server is not None
    assert manager.server.traffic.window("web", 1, 60).requests == 1


def test_a_worker_reports_observed_state_of_its_own_tasks_only(
    manager: EmbeddedServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with serving_worker(manager, tmp_path):
            pass

    asyncio.run(scenario())
    token = (tmp_path / "w1" / "node.token").read_text().strip()
    task = running(manager)[0]
    current = call(manager, "GET", f"/v1/worker/tasks/{task.id}", token).json()
    revision = current["modRevision"]
    path = f"/v1/worker/tasks/{task.id}"

    def report(changed: Task, rev: int = revision, tok: str = token) -> httpx.Response:
        body = {"task": changed.to_wire(), "modRevision": rev}
        return call(manager, "PUT", path, tok, body)

    desired = task.model_copy(update={"desired_state": DesiredState.SHUTDOWN})
    answer = report(desired)
    assert answer.status_code == 403 and "desired_state" in answer.json()["error"]["message"]
    assert report(task.model_copy(update={"message": "x"}), revision - 1).status_code == 409
    stranger = join(manager, "w2")
    assert report(task.model_copy(update={"message": "x"}), tok=stranger).status_code == 403
    assert call(manager, "GET", path, stranger).status_code == 403
    ok = report(task.model_copy(update={"message": "seen"}))
    assert ok.status_code == 200 and ok.json()["modRevision"] > revision


def worker_config(embedded: EmbeddedServer, tmp_path: Path, name: str, **kw: Any) -> WorkerConfig:
    with embedded.client() as c:
        token = c.join_token()
    return WorkerConfig(
        managers=(api(embedded),), token=token, data_dir=tmp_path / name, node_name=name,
        http_port=0, **kw,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serving_worker(
    embedded: EmbeddedServer, tmp_path: Path, **config: Any
) -> AsyncIterator[Worker]:
    """A worker joined to ``embedded``, running the 2 tasks of a fake service."""
    worker = Worker(worker_config(embedded, tmp_path, "w1", **config))
    await worker.start()
    try:
        async with asyncio.timeout(10):
            await worker.connected.wait()
        with embedded.client() as c:
            c.create_service(fake_service())
        async with asyncio.timeout(10):
            while len(running(embedded)) < 2:
                await asyncio.sleep(0.05)
        yield worker
    finally:
        await worker.stop()


def test_a_removed_nodes_token_stops_working_and_it_joins_again(
    manager: EmbeddedServer,
) -> None:
    token = join(manager, "w1")
    body = node_body("w1")
    body["ttl"] = 1  # and no heartbeat: down in about a second
    assert call(manager, "PUT", "/v1/worker/node", token, body).status_code == 200
    with manager.client() as c:

        def down() -> bool:
            return {n.name: n.status for n, _ in c.list_nodes()}.get("w1") == "down"

        wait_for(down, 10, "w1 down")
        c.remove_node("w1")
    refused = call(manager, "PUT", "/v1/worker/node", token, node_body("w1"))
    assert refused.status_code == 401 and "join again" in refused.json()["error"]["message"]
    again = join(manager, "w1")
    assert again != token
    assert call(manager, "PUT", "/v1/worker/node", again, node_body("w1")).status_code == 200


def test_a_worker_refuses_another_nodes_token(manager: EmbeddedServer, tmp_path: Path) -> None:
    token = join(manager, "w2")
    config = worker_config(manager, tmp_path, "w1")
    worker = Worker(dataclasses.replace(config, token=token))
    with pytest.raises(ValidationError) as info:
        asyncio.run(worker.start())
    assert info.value.field == "--token" and "--node-name w2" in info.value.message


def running(embedded: EmbeddedServer) -> list[Task]:
    with embedded.client() as c:
        return [t for t in c.list_tasks("web") if t.state == "running" and t.wants_running]


def test_a_worker_runs_its_tasks_and_fences_them_when_no_manager_answers(
    tmp_path: Path,
) -> None:
    config = ServerConfig(data_dir=tmp_path / "m", api="127.0.0.1:0", http_port=0, worker=False)
    embedded = EmbeddedServer(config).__enter__()
    stopped = False

    def stop_manager() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            embedded.__exit__(None, None, None)

    async def scenario() -> None:
        async with serving_worker(embedded, tmp_path, heartbeat_ttl=1.0) as worker:
            assert worker.agent is not None
            fake = worker.agent.drivers["fake"][0]
            assert len(fake.running()) == 2  # type: ignore[attr-defined]
            # Every manager gone: after the lease's ttl, the worker stops its tasks itself.
            await asyncio.to_thread(stop_manager)
            async with asyncio.timeout(3):
                while fake.running():  # type: ignore[attr-defined]
                    await asyncio.sleep(0.05)
            assert not worker.connected.is_set()

    try:
        asyncio.run(scenario())
    finally:
        stop_manager()


def test_a_worker_serves_its_api_over_https_and_the_manager_reads_its_logs(
    tmp_path: Path,
) -> None:
    """``warren worker --api-tls-cert/--api-tls-key``: the node says ``https://``, and a
    manager given the CA (``--manager-ca``) reads its tasks' logs over TLS."""
    import trustme

    from tests.integration.test_tls import write_pair

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "tls").mkdir()
    chain, key = write_pair(ca, tmp_path / "tls")
    config = ServerConfig(
        data_dir=tmp_path / "m", api="127.0.0.1:0", http_port=0, worker=False,
        manager_ca=str(ca_file),
    )  # fmt: skip
    with EmbeddedServer(config) as embedded:

        async def scenario() -> list[dict[str, str]]:
            tls = {"api": "127.0.0.1:0", "api_tls_cert": str(chain), "api_tls_key": str(key)}
            async with serving_worker(embedded, tmp_path, **tls):
                with embedded.client() as c:
                    (node,) = [n for n, _ in c.list_nodes() if n.name == "w1"]
                    assert node.api is not None and node.api.startswith("https://127.0.0.1:")
                    return await asyncio.to_thread(c.logs, "web")

        lines = asyncio.run(scenario())
    assert any(x["line"].startswith("started web.") for x in lines), lines
    assert not any("cannot read the logs" in x["line"] for x in lines), lines


def test_a_worker_refuses_half_of_its_api_tls_flags(tmp_path: Path) -> None:
    config = WorkerConfig(
        managers=("http://127.0.0.1:9",), token="t", data_dir=tmp_path / "w", node_name="w",
        api="127.0.0.1:0", api_tls_cert=str(tmp_path / "chain.pem"),
    )  # fmt: skip
    with pytest.raises(ValidationError, match="give both --api-tls-cert and --api-tls-key"):
        asyncio.run(Worker(config).start())
    assert not (tmp_path / "w").exists()  # refused before anything started
