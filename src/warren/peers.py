"""A manager reading the logs of a task on another node (a worker, or a manager that runs
tasks): ``POST /v1/node/logs`` on the node's ``api``, with the node's logs token. A node whose
API is served over https (a manager's, ``--api-tls-cert``) is verified with the CA bundle of
``--manager-ca``."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator

import httpx

from .client import api_error, unverified
from .domain.errors import UnavailableError, WarrenError
from .domain.logs import LogLine
from .domain.nodes import Node
from .domain.tasks import Task

__all__ = ["NodeLogs"]


class NodeLogs:
    def __init__(self, timeout: float = 5.0, verify: ssl.SSLContext | bool = True) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify)
        # Follows hold their connection as long as someone watches: a pool of their own, so
        # that many of them never starve the reads.
        self._follows = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            verify=verify,
        )

    def _request(self, node: Node, task: Task, token: str, **extra: object) -> dict[str, object]:
        if not node.api:
            raise UnavailableError(f"node {node.name} serves no logs (a worker older than this?)")
        return {
            "url": f"{node.api}/v1/node/logs",
            "json": {"task": task.to_wire(), **extra},
            "headers": {"Authorization": f"Bearer {token}"},
        }

    async def lines(
        self, node: Node, task: Task, token: str, tail: int | None, since: str | None = None
    ) -> list[LogLine]:
        req = self._request(node, task, token, tail=tail, since=since)
        try:
            response = await self._http.post(**req)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise _unanswered(node, exc) from None
        if response.status_code >= 400:
            raise api_error(response) or _answered(node, response)
        try:
            return _lines(response.json()["lines"])
        except (ValueError, KeyError, TypeError):
            raise _answered(node, response) from None

    async def follow(
        self, node: Node, task: Task, token: str, tail: int | None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        req = self._request(node, task, token, tail=tail, since=since, follow=True)
        try:
            async with self._follows.stream("POST", **req) as response:  # type: ignore[arg-type]
                if response.status_code >= 400:
                    await response.aread()
                    raise api_error(response) or _answered(node, response)
                async for line in response.aiter_lines():
                    if line:
                        batch = json.loads(line)
                        yield _lines(batch if isinstance(batch, list) else [batch])
        except httpx.HTTPError as exc:
            raise _unanswered(node, exc) from None

    async def close(self) -> None:
        await self._http.aclose()
        await self._follows.aclose()


def _lines(wire: list[list[str] | str]) -> list[LogLine]:
    """``[[TIME, TEXT], …]`` as ``api.nodes`` sends them (a bare string: a node older than
    times, and its line has none)."""
    return [LogLine("", x) if isinstance(x, str) else LogLine(str(x[0]), str(x[1])) for x in wire]


def _unanswered(node: Node, exc: httpx.HTTPError) -> UnavailableError:
    why = unverified(exc)
    if why is not None:
        return UnavailableError(f"cannot verify the server's certificate at {node.api}: {why}")
    return UnavailableError(f"node {node.name} does not answer ({exc!r})")


def _answered(node: Node, response: httpx.Response) -> WarrenError:
    """An answer that is not the node API's (a proxy's error page, say)."""
    return UnavailableError(
        f"node {node.name} answered {response.status_code}: {response.text[:200]!r}"
    )
