"""The route a node serves its tasks' logs on, to the managers: ``POST /v1/node/logs`` — on the
API of a ``warren server`` that runs tasks, and on the small API of a ``warren worker``
(``--api``). A manager shows the node's logs token (``tokens.logs_token``), so that asking
any manager for a service's logs reaches the tasks on every node.

On the wire a line is ``[TIME, TEXT]`` (``domain.logs``); a follow answers one JSON array of
lines per line of its body: the history first (maybe ``[]``), then each batch as it comes."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from ..domain.base import Model
from ..domain.errors import AuthError, ForbiddenError
from ..domain.logs import LogLine
from ..domain.tasks import Task
from .errors import error_responses, install_error_handlers
from .guards import GuardedRoute, bearer, guard

__all__ = ["FollowLogs", "LogsRequest", "ReadLogs", "node_app", "node_routes", "wire_lines"]

ReadLogs = Callable[[Task, int | None, str | None], Awaitable[list[LogLine]]]
"""A task's last ``tail`` lines (None: all) since a time (None: any): ``Driver.logs``."""
FollowLogs = Callable[[Task, int | None, str | None], AsyncIterator[list[LogLine]]]
"""The same, then each batch of new lines until the task's output ends: ``Driver.follow``."""


class LogsRequest(Model):
    task: Task
    tail: int | None = Field(100, ge=1, le=100_000)
    """None: every line (since ``since``)."""
    since: str | None = None
    """A ``domain.logs`` time: only the lines read then or later."""
    follow: bool = False


def wire_lines(lines: list[LogLine]) -> list[list[str]]:
    return [[x.time, x.text] for x in lines]


def node_routes(
    node: str,
    token: Callable[[], Awaitable[str | None]],
    logs: ReadLogs,
    follow: FollowLogs,
) -> APIRouter:
    """``token()``: the logs token this node expects (None: it serves no logs)."""
    router = APIRouter(prefix="/v1/node", tags=["nodes"], route_class=GuardedRoute)

    async def managers(request: Request) -> None:
        expected = await token()
        if expected is None or not hmac.compare_digest(bearer(request).encode(), expected.encode()):
            raise AuthError("invalid logs token")

    logs_auth = guard(managers, "LogsToken", "The node's logs token, which the managers show.")

    @router.post(
        "/logs",
        response_model=None,
        # A dependency of the route, not a parameter: an annotation naming the local
        # ``logs_auth`` could not be resolved from its string form, and FastAPI would take it
        # for a field of the request.
        dependencies=[Depends(logs_auth)],
        responses={
            200: {
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                }
            },
            **error_responses(400, 401, 403, 413),
        },
    )
    async def task_logs(body: LogsRequest) -> dict[str, Any] | StreamingResponse:
        """The last ``tail`` lines since ``since`` of one of this node's tasks; ``follow``: then
        each batch of new lines, one JSON array per line, until the task's output ends or the
        caller goes."""
        if body.task.node != node:
            raise ForbiddenError(f"task {body.task.id} is not on node {node}")
        if not body.follow:
            return {"lines": wire_lines(await logs(body.task, body.tail, body.since))}

        async def lines() -> AsyncIterator[bytes]:
            async for batch in follow(body.task, body.tail, body.since):
                yield json.dumps(wire_lines(batch)).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return router


def node_app(router: APIRouter, metrics: Callable[[], Awaitable[bytes]] | None = None) -> FastAPI:
    """The API of a worker: its node's routes, and ``/metrics`` (its ingress's counters, for
    Prometheus; open, like a manager's)."""
    app = FastAPI(title="Warren worker", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.include_router(router)
    if metrics is not None:
        scrape = metrics

        @app.get("/metrics", response_class=Response)
        async def prometheus() -> Response:
            return Response(await scrape(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
