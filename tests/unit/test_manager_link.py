"""A worker's link to the managers: which answers move it to the next manager, and what a
manager's snapshot says is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from warren.domain.errors import ConflictError, UnavailableError
from warren.domain.tasks import Task
from warren.worker import ManagerLink, not_in_snapshot

A, B = "http://a:7070", "http://b:7070"


def link_to(answer: Callable[[httpx.Request], httpx.Response]) -> ManagerLink:
    link = ManagerLink([A, B], timeout=1.0)
    link._http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return link


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def test_a_manager_cut_off_from_the_store_sends_calls_to_the_next() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            return error(503, "unavailable", "the store does not answer")
        return httpx.Response(200, json={"lease": 7, "renewed": True})

    link = link_to(answer)
    assert asyncio.run(link.call("POST", "/v1/worker/heartbeat", {})) == {
        "lease": 7,
        "renewed": True,
    }
    assert link.url == B


def test_a_refusal_is_raised_where_it_came_from() -> None:
    link = link_to(lambda request: error(409, "conflict", "held by another worker"))
    with pytest.raises(ConflictError):
        asyncio.run(link.call("POST", "/v1/worker/heartbeat", {}))
    assert link.url == A


def test_no_manager_answering_is_one_error_naming_each() -> None:
    link = link_to(lambda request: error(503, "unavailable", f"{request.url.host} has no store"))
    with pytest.raises(UnavailableError) as info:
        asyncio.run(link.call("GET", "/v1/worker/tasks/x"))
    assert "a has no store" in info.value.message and "b has no store" in info.value.message


def test_a_snapshot_drops_only_what_it_has_seen() -> None:
    def task(tid: str) -> Task:
        return Task.model_validate(
            {"id": tid, "service": "web", "revision": 1, "slot": 1, "createdAt": 0, "updatedAt": 0}
        )

    known = {"old": (task("old"), 10), "kept": (task("kept"), 11), "newer": (task("newer"), 30)}
    assert not_in_snapshot(known, {"kept"}, 20) == ["old"]
    assert sorted(not_in_snapshot(known, {"kept"}, None)) == ["newer", "old"]
