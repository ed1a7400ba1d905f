"""The routes remote workers use (``warren worker``), under ``/v1/worker``.

A worker joins with the cluster's join token (``warren cluster join-token``) and gets its node's
own token; with it, it may register its node, keep the node's heartbeat lease alive, follow its
assignments (its node's tasks, and the routing table for its ingress) or the routing table
alone (an ingress of its own process), read the revisions its tasks run and report their
observed state, and drain its node on its way out and follow that drain — nothing else: every
other route answers 403, and a report about another node's task, or that changes what the
control plane decides, too."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from ..agent.dispatching import bind_heartbeat
from ..control.assigning import PING
from ..control.traffic import KEEP
from ..domain.base import Model
from ..domain.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
    WarrenError,
)
from ..domain.events import Level
from ..domain.nodes import DrainStatus, Node
from ..domain.specs import NAME_PATTERN
from ..domain.tasks import Task
from ..ports import RECENT_KEPT
from ..store.cluster import HEARTBEATS, ClusterStore
from ..tokens import NODE_NAME, claimed_node, logs_token, node_token, valid
from .errors import error_responses
from .guards import GuardedRoute, bearer, guard

__all__ = ["AssignmentSource", "RouteSource", "worker_routes"]

AssignmentSource = Callable[[str], AsyncIterator[bytes]]
"""Given a node name: its assignment stream, NDJSON (see ``control.assigning``)."""
RouteSource = Callable[[], AsyncIterator[bytes]]
"""The routing stream: the assignment stream without tasks."""

TrafficSink = Callable[[str, int, "TrafficBatch"], str]
"""Takes one batch of a node's ingress traffic (node, ingress worker, batch) for the analysis;
returns why it was dropped ("" when taken)."""


class JoinRequest(Model):
    node: str


class Registration(Model):
    node: Node
    ttl: float = Field(gt=0, le=3600)


class HeartbeatRequest(Model):
    lease: int
    ttl: float = Field(gt=0, le=3600)


class TaskReport(Model):
    task: Task
    mod_revision: int


Age = Annotated[float, Field(ge=0, le=KEEP)]
"""How long ago a request was answered: never in the future, never older than kept."""
Latency = Annotated[float, Field(ge=0, le=3600)]


class TrafficBatch(Model):
    service: str = Field(max_length=63)
    revision: int = Field(ge=1)
    samples: list[tuple[Age, Latency, bool]] = Field(max_length=RECENT_KEPT)
    """(age in seconds, latency in seconds, failed), oldest first: at most what an ingress
    keeps per revision."""


class TrafficReport(Model):
    batches: list[TrafficBatch] = Field(max_length=1000)
    worker: int = Field(0, ge=0, le=4095)
    """Which of the node's ingress workers (``--ingress-workers``) sends it: each reports its
    own traffic, and the managers add them up."""


class EventReport(Model):
    kind: str = Field(pattern=r"^task\.[a-z_]+$")
    message: str = Field(max_length=2000)
    level: Level = Level.INFO
    task: str


async def _node(request: Request) -> str:
    """The node whose token came with the request (checked with the cluster's secret and the
    node's epoch, from ``app.state.cluster``)."""
    state = request.app.state
    cluster: ClusterStore = state.cluster
    if getattr(state, "node_secret", None) is None:
        state.node_secret = await cluster.cluster_secret()
    token = bearer(request)
    node = claimed_node(token)
    if node is None or not valid(state.node_secret, token, node, await cluster.node_epoch(node)):
        raise AuthError("invalid node token (a node removed with `warren node rm` must join again)")
    return node


async def _joining(request: Request) -> None:
    """The cluster's join token."""
    cluster: ClusterStore = request.app.state.cluster
    if not hmac.compare_digest(bearer(request).encode(), (await cluster.join_token()).encode()):
        raise AuthError("invalid join token (see `warren cluster join-token`)")


NodeAuth = Annotated[
    str, Depends(guard(_node, "NodeToken", "A node's own token, which its worker joined with."))
]
JoinAuth = Annotated[
    None,
    Depends(
        guard(_joining, "JoinToken", "The cluster's join token (`warren cluster join-token`).")
    ),
]
_NDJSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
}
"""A stream of JSON objects, one a line."""


def worker_routes(
    cluster: ClusterStore,
    assignments: AssignmentSource | None,
    traffic: TrafficSink | None = None,
    routes: RouteSource | None = None,
) -> APIRouter:
    router = APIRouter(
        prefix="/v1/worker",
        tags=["workers"],
        route_class=GuardedRoute,
        responses=error_responses(400, 401, 403, 503),
    )

    async def own_task(node: str, task_id: str) -> tuple[Task, int]:
        task, kv = await cluster.get_task(task_id)
        if task.node != node:
            raise ForbiddenError(f"task {task_id} is not on node {node}")
        return task, kv.mod_revision

    @router.post("/join", responses=error_responses(409, 413))
    async def join(body: JoinRequest, _: JoinAuth) -> dict[str, Any]:
        """Exchange the cluster's join token for the node's own token."""
        if not NODE_NAME.fullmatch(body.node):
            raise ValidationError(
                "letters, digits, '.', '_' and '-', up to 63, starting with a letter or digit",
                "node",
            )
        if await cluster.raw.get(f"{HEARTBEATS}{body.node}") is not None:
            # Two machines of one name would run the same tasks: the second must pick another.
            raise ConflictError(
                f"node {body.node} is already in the cluster and alive: give this machine "
                "another --node-name (or, if it is that node started again without its data "
                "dir, start it once `warren node ls` says the node is down)"
            )
        secret = await cluster.cluster_secret()
        return {
            "node": body.node,
            "nodeToken": node_token(secret, body.node, await cluster.node_epoch(body.node)),
            "logsToken": logs_token(secret, body.node),
        }

    @router.put("/node", responses=error_responses(413))
    async def register(body: Registration, node: NodeAuth) -> dict[str, Any]:
        """Register (or re-register) the node, its heartbeat bound to a new lease of ``ttl``."""
        if body.node.name != node:
            raise ForbiddenError(f"this token is node {node}'s, not {body.node.name}'s")
        await cluster.put_node(body.node)
        return {"lease": await bind_heartbeat(cluster, node, body.ttl)}

    @router.post("/heartbeat", responses=error_responses(409, 413))
    async def heartbeat(body: HeartbeatRequest, node: NodeAuth) -> dict[str, Any]:
        """Renew the node's lease; ``renewed: false`` with a new lease when it had expired."""
        kv = await cluster.raw.get(f"{HEARTBEATS}{node}")
        # Only the lease the node's heartbeat is bound to: a worker cannot keep another's alive.
        if kv is not None and kv.lease == body.lease:
            try:
                await cluster.raw.keepalive(body.lease)
                return {"lease": body.lease, "renewed": True}
            except NotFoundError:
                pass
        elif kv is not None:
            # Registered since by another process with this node's token: two workers as one
            # node. Refused, so that this one fences its tasks instead of running them twice.
            raise ConflictError(
                f"node {node}'s heartbeat is held by another worker that registered as {node} "
                "since: is a second worker running with this node's token?"
            )
        return {"lease": await bind_heartbeat(cluster, node, body.ttl), "renewed": False}

    @router.get("/assignments", responses={**_NDJSON, **error_responses(404)})
    async def follow(node: NodeAuth) -> StreamingResponse:
        if assignments is None:
            raise NotFoundError("this server does not dispatch to remote workers")
        return StreamingResponse(assignments(node), media_type="application/x-ndjson")

    @router.get("/routes", responses={**_NDJSON, **error_responses(404)})
    async def follow_routes(node: NodeAuth) -> StreamingResponse:
        """The routing table, then every change: what ``warren ingress`` follows."""
        if routes is None:
            raise NotFoundError("this server does not stream its routing")
        return StreamingResponse(routes(), media_type="application/x-ndjson")

    @router.post("/leave")
    async def leave(node: NodeAuth) -> dict[str, Any]:
        """The node is stopping: it drains itself (no new tasks; its tasks move to other nodes,
        each replacement ready before the old task stops). The drain is the node's: it ends
        when the node registers again. A node an operator drained stays so."""
        drained, _ = await cluster.drain_for_shutdown(node)
        return drained.to_wire()

    @router.get("/drain", responses=_NDJSON)
    async def follow_drain(node: NodeAuth) -> StreamingResponse:
        """How far the node's drain has come (``DrainStatus``), one JSON object per line: now,
        then at every change; ``{"type": "ping"}`` when nothing changed for a while."""
        return StreamingResponse(_drain_lines(cluster, node), media_type="application/x-ndjson")

    @router.get("/tasks/{task_id}", responses=error_responses(404))
    async def get_task(task_id: str, node: NodeAuth) -> dict[str, Any]:
        task, revision = await own_task(node, task_id)
        return {"task": task.to_wire(), "modRevision": revision}

    @router.put("/tasks/{task_id}", responses=error_responses(404, 409, 413))
    async def report(task_id: str, body: TaskReport, node: NodeAuth) -> dict[str, Any]:
        """The task's observed state, if it is still at ``modRevision`` (else 409: read it
        again)."""
        if body.task.id != task_id:
            raise ValidationError("does not match the task in the path", "task.id")
        revision = await cluster.report_task(node, body.task, body.mod_revision)
        return {"task": body.task.to_wire(), "modRevision": revision}

    @router.get("/revisions/{service}/{number}", responses=error_responses(404))
    async def revision(
        service: Annotated[str, Path(pattern=NAME_PATTERN)], number: int, node: NodeAuth
    ) -> dict[str, Any]:
        """The spec of a revision one of the node's tasks runs."""
        tasks = await cluster.list_tasks(service, jobs=True)
        if not any(t.node == node and t.revision == number for t in tasks):
            raise ForbiddenError(f"no task of {service} revision {number} is on node {node}")
        return (await cluster.get_revision(service, number)).to_wire()

    @router.post("/traffic", responses=error_responses(404, 413))
    async def report_traffic(body: TrafficReport, node: NodeAuth) -> dict[str, Any]:
        """What the node's ingress answered lately, for the analysis of whichever manager
        leads (every manager keeps it). A batch of a service or revision that does not exist
        (removed a moment ago, say) is dropped and named in ``dropped``; the rest is taken.
        Still a 200: the worker must not send the same samples again, nor stop sending."""
        if traffic is None:
            raise NotFoundError("this server does not judge releases")
        dropped = []
        for batch in body.batches:
            if why := traffic(node, body.worker, batch):
                dropped.append(
                    {"service": batch.service, "revision": batch.revision, "reason": why}
                )
        return {"accepted": len(body.batches) - len(dropped), "dropped": dropped}

    @router.post("/events", status_code=201, responses=error_responses(404, 413))
    async def record(body: EventReport, node: NodeAuth) -> dict[str, Any]:
        task, _ = await own_task(node, body.task)
        event = await cluster.record(
            body.kind, body.message, body.level, service=task.service, task=task.id, node=node
        )
        return event.to_wire()

    return router


async def _drain_lines(cluster: ClusterStore, node: str) -> AsyncIterator[bytes]:
    """``drain_progress`` as NDJSON, with a ping every PING seconds of quiet (so that the
    worker knows the stream lives). The progress is read by a task of its own: a timeout
    around the generator's next step would close it."""
    queue: asyncio.Queue[DrainStatus | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for status in cluster.drain_progress(node):
                queue.put_nowait(status)
        finally:
            queue.put_nowait(None)

    reader = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(PING):
                    status = await queue.get()
            except TimeoutError:
                yield b'{"type":"ping"}\n'
                continue
            if status is None:
                return
            yield json.dumps({"type": "drain", "drain": status.to_wire()}).encode() + b"\n"
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WarrenError):
            await reader  # a store that stopped answering: the stream ended, the worker asks again
