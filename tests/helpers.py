"""Shared test fixtures: an in-process cluster on the memory store, the fake driver and a fake
clock, driven step by step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from warren.agent import Agent, FakeDriver, StoreDispatcher
from warren.clocks import FakeClock
from warren.control.notifying import HttpFactory
from warren.control.plane import ControlPlane
from warren.domain.nodes import Node
from warren.domain.tasks import Task
from warren.planning.notifications import Receiver
from warren.ports import DataPlane, Driver, MetricSource, Prober, Route, RouteStats, Window
from warren.store import MemoryStore
from warren.store.cluster import ClusterStore


def node(name: str, cpus: float = 8, memory: int = 16 * 1024**3) -> Node:
    return Node(
        name=name, cpus=cpus, memory=memory, drivers=("fake",), registered_at=0, updated_at=0
    )


class RecordingPlane:
    """A data plane that keeps the routes it is given (what the ingress would apply)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        for name, route in routes.items():
            if route is None:
                self.routes.pop(name, None)
            else:
                self.routes[name] = route

    async def drain(self, address: str, timeout: float) -> int:
        return 0

    def stats(self) -> Mapping[str, RouteStats]:
        return {}

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        return {}

    def weights(self, service: str) -> dict[int, int]:
        return dict(self.routes[service].weights)

    def revisions(self, service: str) -> set[int]:
        """The revisions whose endpoints get traffic."""
        return {e.revision for e in self.routes[service].endpoints}


class SteadyTraffic:
    """Every revision answers ``requests`` requests per window, ``errors`` of them 5xx."""

    def __init__(self, requests: int = 100, errors: int = 0) -> None:
        self.requests, self.errors = requests, errors
        self.by_revision: dict[int, tuple[int, int]] = {}

    def window(self, service: str, revision: int, seconds: float) -> Window:
        requests, errors = self.by_revision.get(revision, (self.requests, self.errors))
        return Window(requests, errors, (0.01,) * requests)


@dataclass
class SimCluster:
    """A control plane and ``nodes`` agents, each with its own fake driver (its "engine")."""

    clock: FakeClock = field(default_factory=FakeClock)
    nodes: int = 2
    dataplane: DataPlane | None = None
    metrics: MetricSource | None = None
    receivers: Sequence[Receiver] = ()
    """Told of every deployment (``warren server --notify``)."""
    notify_http: HttpFactory | None = None

    async def start(self) -> SimCluster:
        self.store = MemoryStore(self.clock, reap_interval=1.0)
        self.cluster = ClusterStore(self.store, self.clock)
        self.plane = ControlPlane(
            self.cluster, self.clock, self.dataplane, self.metrics, self.receivers,
            notify_http=self.notify_http,
        )  # fmt: skip
        self.drivers = {f"n{i}": FakeDriver(self.clock) for i in range(1, self.nodes + 1)}
        self.agents: dict[str, Agent] = {}
        self.plane.tasks.on_change(self._dispatch)
        await self.plane.start()
        for name in self.drivers:
            await self.start_agent(name)
        await self.quiesce()
        return self

    def _dispatch(self, key: str, old: Task | None, new: Task | None) -> None:
        for name in {t.node for t in (old, new) if t is not None and t.node}:
            if name in self.agents:
                self.agents[name].task_changed(old, new)

    async def start_agent(self, name: str) -> None:
        fake = self.drivers[name]
        drivers: dict[str, tuple[Driver, Prober]] = {"fake": (fake, fake)}
        agent = Agent(
            node(name), StoreDispatcher(self.cluster), drivers, self.clock, self.dataplane, 10.0
        )
        self.agents[name] = agent
        await agent.start(lambda: [t for t in self.plane.tasks.values() if t.node == name])

    async def restart_agent(self, name: str) -> None:
        await self.agents.pop(name).stop()
        await self.start_agent(name)

    async def quiesce(self, rounds: int = 20) -> None:
        """Let every controller, agent and watch run until nothing changes any more."""
        last = -1
        quiet = 0
        while quiet < 3:
            await self.clock.settle(rounds)
            if self.store.revision == last:
                quiet += 1
            else:
                quiet, last = 0, self.store.revision

    async def advance(self, seconds: float) -> None:
        await self.clock.advance_settled(seconds)
        await self.quiesce()

    async def tasks(self, service: str | None = None) -> list[Task]:
        return await self.cluster.list_tasks(service)

    async def stop(self) -> None:
        for agent in self.agents.values():
            await agent.stop()
        await self.plane.stop()
        await self.store.close()
