"""The reconciler state machine, with an operator who drains and activates nodes on top of
everything else (services applied, scaled, removed; tasks crashing; agents restarting; time
passing). Safety after every step; and given time, no task is left on a drained node while
another node can take it — or, when none can, what runs keeps running and nothing else starts."""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from tests.stateful.test_reconciler_machine import ReconcilerMachine
from warren.domain.nodes import NodeAvailability
from warren.domain.tasks import Task

NODES = ("n1", "n2")


class DrainMachine(ReconcilerMachine):
    def __init__(self) -> None:
        super().__init__()
        self.draining: set[str] = set()

    @rule(node=st.sampled_from(NODES))
    def drain(self, node: str) -> None:
        self.run(self.sim.cluster.set_node_availability(node, NodeAvailability.DRAIN))
        self.draining.add(node)
        self.run(self.sim.quiesce())

    @rule(node=st.sampled_from(NODES))
    def activate(self, node: str) -> None:
        self.run(self.sim.cluster.set_node_availability(node, NodeAvailability.ACTIVE))
        self.draining.discard(node)
        self.run(self.sim.quiesce())

    def live(self) -> list[Task]:
        return [t for t in self.run(self.sim.tasks()) if t.wants_running and t.state.active]

    @invariant()
    def availability_is_what_the_operator_said(self) -> None:
        # Agents register again when they restart: that must not undo a drain.
        for name in NODES:
            node = self.run(self.sim.cluster.get_node(name))
            assert (node.availability == NodeAvailability.DRAIN) == (name in self.draining)

    @invariant()
    def at_most_one_live_task_per_slot_and_revision(self) -> None:
        # During a move a slot holds its task on the drained node and the replacement.
        here = Counter(
            (t.service, t.slot, t.revision, t.node in self.draining) for t in self.live()
        )
        assert all(n == 1 for n in here.values()), here

    @invariant()
    def a_moved_task_was_replaced_by_a_ready_one(self) -> None:
        # Once quiet, a task still wanted on a drained node has no ready twin elsewhere: the
        # reconciler shuts it down as soon as its replacement is ready, not before.
        live = self.live()
        for t in live:
            if t.node in self.draining:
                twins = [
                    o for o in live
                    if (o.service, o.slot, o.revision) == (t.service, t.slot, t.revision)
                    and o.node not in self.draining and o.ready
                ]  # fmt: skip
                assert not twins, (t, twins)

    @rule()
    def converges(self) -> None:
        self.run(self.sim.advance(31))
        self.run(self.sim.advance(31))
        tasks = self.run(self.sim.tasks())
        can_move = any(n not in self.draining for n in NODES)
        for name, spec in self.specs.items():
            service, _ = self.run(self.sim.cluster.get_service(name))
            placed = [t for t in tasks if t.service == name and t.state.active and t.node]
            if not can_move:
                # No node takes new tasks: what runs keeps running (even of an old revision),
                # nothing else starts.
                assert len(placed) <= spec.replicas, placed
                assert all(t.ready and t.wants_running for t in placed), placed
                continue
            ready = [t for t in placed if t.revision == service.revision and t.ready]
            assert len(ready) == spec.replicas, (name, spec.replicas, placed)
            assert len(placed) == spec.replicas, placed
            assert not [t for t in placed if t.node in self.draining], placed
        removed = {t.service for t in tasks} - set(self.specs)
        for name in removed:
            assert not [t for t in tasks if t.service == name and t.state.active]


DrainMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
TestDrainMachine = DrainMachine.TestCase
