"""Revisions as the store hands them out: a revision's number is unique within one life of a
service only. A service removed and created again starts over at revision 1, and whoever reads
revision 1 then (an agent starting a task, a worker asking the API) must get the new spec, never
one a cache kept from the service's previous life."""

from __future__ import annotations

from warren.agent.dispatching import StoreDispatcher
from warren.clocks import FakeClock
from warren.domain.services import EnvChange, env_changes
from warren.domain.specs import ServiceSpec
from warren.ports import Delete
from warren.store.cluster import DEPLOYMENTS, REVISIONS, ClusterStore
from warren.store.memory import MemoryStore


def web(version: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": "web", "command": ["python", "-m", "warren.demo.app"], "env": {"VERSION": version}}
    )


async def forget(writer: ClusterStore, name: str) -> None:
    """What the reconciler does once the removed service's last task is gone."""
    await writer.raw.txn(
        [],
        [Delete(f"{REVISIONS}{name}/", prefix=True), Delete(f"{DEPLOYMENTS}{name}/", prefix=True)],
    )


async def test_a_service_created_again_gets_its_new_revisions_not_the_old_ones() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    # The API and the agents read through one ClusterStore, the controllers write through
    # another (a fenced one, with several managers).
    reader, writer = ClusterStore(store, clock), ClusterStore(store, clock)
    agent = StoreDispatcher(reader)

    await reader.create_service(web("v1"))
    await reader.update_service("web", lambda s: s.model_copy(update={"env": {"VERSION": "v2"}}))
    assert (await agent.revision("web", 1)).spec.env == {"VERSION": "v1"}
    assert (await reader.get_revision("web", 2)).spec.env == {"VERSION": "v2"}

    await reader.delete_service("web")
    await forget(writer, "web")
    await reader.create_service(web("v3"))
    await reader.update_service("web", lambda s: s.model_copy(update={"env": {"VERSION": "v4"}}))

    assert (await agent.revision("web", 1)).spec.env == {"VERSION": "v3"}
    assert (await reader.get_revision("web", 2)).spec.env == {"VERSION": "v4"}
    assert [r.spec.env["VERSION"] for r in await reader.list_revisions("web")] == ["v3", "v4"]


async def test_a_revision_read_twice_is_one_shared_copy() -> None:
    """The cache still does its job: 10,000 tasks of one revision hold one decoded spec."""
    clock = FakeClock()
    cluster = ClusterStore(MemoryStore(clock), clock)
    await cluster.create_service(web("v1"))
    assert await cluster.get_revision("web", 1) is await cluster.get_revision("web", 1)


def test_env_changes_name_each_key_added_removed_or_changed() -> None:
    before = {"A": "1", "B": "2", "GONE": "x"}
    after = {"A": "1", "B": "3", "C": "4"}
    changes = env_changes(before, after)
    assert [str(c) for c in changes] == ["~B=2→3", "+C=4", "-GONE"]
    assert changes[0] == EnvChange(key="B", old="2", new="3")
    assert changes[1] == EnvChange(key="C", old=None, new="4")
    assert changes[2] == EnvChange(key="GONE", old="x", new=None)
    assert env_changes(after, after) == ()
    # An empty value is a value: set to "", it is a change, not a removal.
    assert [str(c) for c in env_changes({"A": "1"}, {"A": ""})] == ["~A=1→"]
