"""A manager reading another node's logs: what the node answers, and what a user sees."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from warren.domain.errors import NotFoundError, UnavailableError
from warren.domain.logs import LogLine
from warren.domain.nodes import Node
from warren.domain.tasks import Task
from warren.peers import NodeLogs

NODE = Node(name="w1", api="http://w1:7071", cpus=1, memory=1, registered_at=0, updated_at=0)
TASK = Task.model_validate(
    {
        "id": "t1",
        "service": "web",
        "revision": 1,
        "slot": 1,
        "node": "w1",
        "createdAt": 0,
        "updatedAt": 0,
    }
)


def reading(answer: httpx.Response) -> NodeLogs:
    logs = NodeLogs()
    logs._http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    return logs


def test_the_lines_a_node_answers() -> None:
    time = "2024-05-01T12:00:00.000000000Z"
    logs = reading(httpx.Response(200, json={"lines": [[time, "a"], [time, "b"]]}))
    lines = asyncio.run(logs.lines(NODE, TASK, "tok", 10))
    assert lines == [LogLine(time, "a"), LogLine(time, "b")]
    # A node from before times were kept: its lines have none.
    older = reading(httpx.Response(200, json={"lines": ["a"]}))
    assert asyncio.run(older.lines(NODE, TASK, "tok", 10)) == [LogLine("", "a")]


def test_an_answer_that_is_not_the_nodes_api_is_one_clear_error() -> None:
    page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(UnavailableError) as info:
        asyncio.run(reading(page).lines(NODE, TASK, "tok", 10))
    assert "node w1 answered 502" in info.value.message
    with pytest.raises(UnavailableError):
        asyncio.run(reading(httpx.Response(200, text="not json")).lines(NODE, TASK, "tok", 10))


def test_the_nodes_own_error_is_kept() -> None:
    gone = httpx.Response(404, json={"error": {"code": "not_found", "message": "no task t1"}})
    with pytest.raises(NotFoundError):
        asyncio.run(reading(gone).lines(NODE, TASK, "tok", 10))
