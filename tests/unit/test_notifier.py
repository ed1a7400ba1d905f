"""The notifier on the whole engine in process (memory store, fake driver, fake clock), its
receivers behind httpx's mock transport: what a rolling update tells, retries that hold no
rollout back, giving up, a manager restart that resends only what was not acknowledged, and
receivers that come and go with the spec."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.helpers import RecordingPlane, SimCluster, SteadyTraffic
from warren.control.plane import ControlPlane
from warren.domain.deployments import Phase
from warren.domain.requests import Intent
from warren.domain.specs import ServiceSpec
from warren.planning.notifications import Receiver
from warren.store.cluster import NOTIFICATIONS

ALL = "http://hooks.test/all"


@dataclass
class Hooks:
    """Receivers behind a mock transport: each POST recorded with the fake time it came at,
    answered with the next status scripted for its path (200 when none is left); a path in
    ``hold`` gets no answer at all."""

    sim: SimCluster | None = None
    calls: list[tuple[float, str, dict[str, Any], int]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        assert self.sim is not None
        path = request.url.path
        if path in self.hold:
            await asyncio.Event().wait()  # cancelled with the notifier
        statuses = self.script.get(path) or []
        status = statuses.pop(0) if statuses else 200
        self.calls.append((self.sim.clock.now(), path, json.loads(request.content), status))
        return httpx.Response(status)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def told(self, path: str = "/all") -> list[tuple[str, str]]:
        """(deployment, event) of each 2xx answer at ``path``."""
        return [
            (body["deployment"], body["event"])
            for _, p, body, status in self.calls
            if p == path and status < 300
        ]


def spec(
    version: str = "v1", notify: list[dict[str, Any]] | None = None, **deploy: Any
) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"], "driver": "fake", "replicas": 2,
            "env": {"FAKE_READY_AFTER": "1s", "VERSION": version},
            "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
            "deploy": {"updateConfig": {"monitor": "0s", "parallelism": 2},
                       "notify": notify or [], **deploy},
        }
    )  # fmt: skip


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


async def running(
    hooks: Hooks, receivers: list[Receiver], first: ServiceSpec | None = None
) -> SimCluster:
    sim = SimCluster(
        nodes=1, dataplane=RecordingPlane(), metrics=SteadyTraffic(), receivers=receivers,
        notify_http=hooks.client,
    )  # fmt: skip
    hooks.sim = sim
    await sim.start()
    await sim.cluster.create_service(first or spec())
    await sim.advance(2)
    return sim


async def ask(sim: SimCluster, intent: Intent) -> None:
    await sim.cluster.ask("web", intent)
    await sim.advance(2)


async def update(sim: SimCluster, new: ServiceSpec, seconds: float = 5) -> None:
    await sim.cluster.update_service("web", lambda _old: new)
    await sim.advance(seconds)


async def records(sim: SimCluster) -> list[str]:
    kvs, _ = await sim.store.range(NOTIFICATIONS)
    return [kv.key for kv in kvs]


async def test_a_rolling_update_tells_its_start_and_success_then_forgets_the_record(
    hooks: Hooks,
) -> None:
    sim = await running(hooks, [Receiver(ALL)])
    try:
        await sim.cluster.update_service("web", lambda _old: spec("v2"))
        assert await records(sim) == [f"{NOTIFICATIONS}web/00000001"]  # with the deployment
        await sim.advance(5)
        [d] = await sim.cluster.list_deployments("web")
        assert d.phase == Phase.SUCCEEDED
        assert hooks.told() == [("web-1", "started"), ("web-1", "succeeded")]
        body = hooks.calls[-1][2]
        assert body["figures"]["readyTasks"] == body["figures"]["desiredTasks"] == 2
        assert await records(sim) == []  # all told: nothing left to remember
    finally:
        await sim.stop()


async def test_a_failing_receiver_is_told_on_the_third_try_and_the_rollout_does_not_wait(
    hooks: Hooks,
) -> None:
    hooks.script["/all"] = [500, 500]
    sim = await running(hooks, [Receiver(ALL)])
    try:
        start = sim.clock.now()
        await update(sim, spec("v2"))
        [d] = await sim.cluster.list_deployments("web")
        assert d.phase == Phase.SUCCEEDED
        came = [(round(t - start, 3), body["event"], status) for t, _, body, status in hooks.calls]
        # Retried after 1 s, then 2 s; the success (at 1 s: its tasks were ready) waited behind.
        assert came == [
            (0, "started", 500), (1, "started", 500), (3, "started", 200), (3, "succeeded", 200),
        ]  # fmt: skip
        assert d.finished_at is not None and d.finished_at - start < 3
    finally:
        await sim.stop()


async def test_a_receiver_that_never_answers_2xx_is_given_up_and_named_without_its_secret(
    hooks: Hooks,
) -> None:
    secret = "http://hooks.test/services/T0/B0/XYZSECRET"
    hooks.script["/services/T0/B0/XYZSECRET"] = [503] * 6
    hooks.script["/gone"] = [404]
    receivers = [Receiver(secret), Receiver("http://hooks.test/gone")]
    sim = await running(hooks, receivers)
    try:
        await update(sim, spec("v2"), seconds=60)
        tried = [(p, body["event"]) for _, p, body, _ in hooks.calls]
        assert tried.count(("/services/T0/B0/XYZSECRET", "started")) == 6  # RetryPolicy.attempts
        assert tried.count(("/gone", "started")) == 1  # a 404 stays a 404: not retried
        assert hooks.told("/gone") == [("web-1", "succeeded")]  # the next one is still sent
        failed = [
            e for e in await sim.cluster.list_events("web") if e.kind == "notification.failed"
        ]
        assert [e.message for e in failed] == [
            "web-1 started: notifying http://hooks.test/… (of the server) failed after 1 attempt: "
            "HTTP 404",
            "web-1 started: notifying http://hooks.test/… (of the server) failed after 6 attempts: "
            "HTTP 503",
        ]
        assert await records(sim) == []
    finally:
        await sim.stop()


async def restart(sim: SimCluster, hooks: Hooks) -> None:
    """The manager stops (its notifications in flight are cut) and starts again on its store."""
    await sim.plane.stop()
    sim.plane = ControlPlane(
        sim.cluster, sim.clock, None, None, sim.receivers, notify_http=hooks.client
    )
    sim.plane.tasks.on_change(sim._dispatch)
    await sim.plane.start()
    await sim.quiesce()


async def test_a_restarted_manager_resends_only_what_was_not_acknowledged(hooks: Hooks) -> None:
    hooks.hold.add("/slow")  # never answers
    sim = await running(hooks, [Receiver(ALL), Receiver("http://hooks.test/slow")])
    try:
        await update(sim, spec("v2"))
        assert hooks.told() == [("web-1", "started"), ("web-1", "succeeded")]
        assert hooks.told("/slow") == []
        hooks.hold.clear()
        await restart(sim, hooks)
        # /all was told everything before: nothing again. /slow never answered: all of it.
        assert hooks.told() == [("web-1", "started"), ("web-1", "succeeded")]
        assert hooks.told("/slow") == [("web-1", "started"), ("web-1", "succeeded")]
        assert await records(sim) == []
        await restart(sim, hooks)
        assert len(hooks.calls) == 4
    finally:
        await sim.stop()


async def test_the_services_receivers_come_and_go_with_its_spec(hooks: Hooks) -> None:
    sim = await running(hooks, [])
    try:
        await update(sim, spec("v2"))
        chat = [{"url": "http://hooks.test/chat", "format": "slack", "on": ["succeeded"]}]
        await update(sim, spec("v2", notify=chat))
        # No rollout for a change of receivers; and none is told of a release already over.
        assert len(await sim.cluster.list_deployments("web")) == 1
        assert hooks.calls == []
        await update(sim, spec("v3", notify=chat))
        assert [body for _, _, body, _ in hooks.calls] == [
            {
                "text": "web: rolling update web-2 (revision 2 → 3) succeeded — rollout "
                "complete: 2/2 tasks on revision 3 (2/2 tasks ready)"
            }
        ]
    finally:
        await sim.stop()


CANARY = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
BLUE_GREEN = {"strategy": "blue-green", "blueGreen": {"autoPromote": False, "scaleDownDelay": "0s"}}


@pytest.mark.parametrize("deploy", [CANARY, BLUE_GREEN], ids=["canary", "blue-green"])
async def test_a_release_by_weights_tells_its_wait_for_promotion_and_what_the_operator_did(
    hooks: Hooks, deploy: dict[str, Any]
) -> None:
    sim = await running(hooks, [Receiver(ALL)], spec(**deploy))
    try:
        await sim.cluster.update_service("web", lambda _old: spec("v2", **deploy))
        await sim.quiesce()
        await ask(sim, Intent.PAUSE)  # while its new tasks start
        await ask(sim, Intent.RESUME)
        await sim.advance(3)
        await ask(sim, Intent.PROMOTE)
        await sim.advance(5)
        assert (await sim.cluster.list_deployments("web"))[-1].phase == Phase.SUCCEEDED
        assert hooks.told() == [
            ("web-1", "started"), ("web-1", "paused"), ("web-1", "resumed"),
            ("web-1", "awaiting_promotion"), ("web-1", "promoted"), ("web-1", "succeeded"),
        ]  # fmt: skip
        # An abort of the next one: it goes back, and says so.
        await update(sim, spec("v3", **deploy))
        await ask(sim, Intent.ABORT)
        await sim.advance(5)
        assert hooks.told()[6:] == [
            ("web-2", "started"), ("web-2", "awaiting_promotion"), ("web-2", "aborted"),
            ("web-3", "started"), ("web-3", "succeeded"), ("web-2", "rolled_back"),
        ]  # fmt: skip
    finally:
        await sim.stop()
