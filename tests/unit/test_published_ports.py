"""A published port belongs to one service: a second service that asks for it is refused when it
is written (as Swarm refuses it), in one line naming the holder, and nothing is stored; the port
is free again once its service lets go of it. Two writers racing for one port: one wins."""

from __future__ import annotations

import asyncio

import pytest

from warren.clocks import FakeClock
from warren.domain.errors import ConflictError
from warren.domain.specs import ServiceSpec
from warren.store.cluster import ClusterStore
from warren.store.memory import MemoryStore


def spec(name: str, *ports: int) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": name, "command": ["app"], "ports": [{"published": p} for p in ports]}
    )


def with_ports(*ports: int):  # type: ignore[no-untyped-def]
    return lambda s: s.model_copy(update={"ports": spec("x", *ports).ports})


@pytest.fixture
def cluster() -> ClusterStore:
    clock = FakeClock()
    return ClusterStore(MemoryStore(clock), clock)


async def test_a_port_another_service_publishes_is_refused(cluster: ClusterStore) -> None:
    await cluster.create_service(spec("web", 18080, 18443))
    with pytest.raises(ConflictError, match="port 18443 is published by service web"):
        await cluster.create_service(spec("api", 18443))
    with pytest.raises(Exception, match="not found"):
        await cluster.get_service("api")
    await cluster.create_service(spec("api", 19000))
    with pytest.raises(ConflictError, match="port 18080 is published by service web"):
        await cluster.update_service("api", with_ports(19000, 18080))
    assert [p.published for p in (await cluster.get_service("api"))[0].spec.ports] == [19000]


async def test_a_port_let_go_is_free_again(cluster: ClusterStore) -> None:
    await cluster.create_service(spec("web", 18080))
    await cluster.update_service("web", with_ports(18081))
    await cluster.create_service(spec("api", 18080))
    await cluster.delete_service("web")
    await cluster.update_service("api", with_ports(18080, 18081))
    # A service keeps its own ports through an update.
    await cluster.update_service("api", lambda s: s.model_copy(update={"env": {"V": "2"}}))


async def test_two_services_racing_for_a_port_one_wins(cluster: ClusterStore) -> None:
    results = await asyncio.gather(
        *(cluster.create_service(spec(f"s{i}", 18080)) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
