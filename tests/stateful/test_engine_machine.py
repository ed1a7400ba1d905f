"""A model of the whole release engine: a Hypothesis state machine over the control plane in
process — store, reconciler, deployment and routing controllers, agents on the fake driver, a
data plane that records its routes, per-revision traffic for the analysis, a fake clock — with
random operator and world actions:

- the operator: updates (a good revision, a bad one of several kinds, the same spec, the stable
  spec again mid-release), scale, pause, resume, promote (forced or not, a step or all), abort,
  rollback;
- the world: a manager crash and restart at any point (its memory dropped, rebuilt from the
  store), a node down and up again, task crashes, flapping health checks, time passing.

After every step:

(i)   an unpromoted revision never gets more traffic than its current step's weight, and no
      revision but the newest release's two ever gets any;
(ii)  a revision that gets all the traffic is a good one (a deployment to it succeeded, or it
      served before) or one a release moved to past its gates (slot by slot, promoted,
      switched to) — never an unpromoted canary or a green not switched to;
(iii) the service's status is the truth about its last release (its phase, "succeeded" only if
      it did, an update rolled back shown as such);
(iv)  the stable revision keeps every slot ready while a canary or blue/green release is not
      promoted (but for crashes and lost nodes); a start-first rolling update keeps the ready
      floor of the rolling machine;
(v)   once the faults stop, every rollout ends — or waits, paused, for a person — within its
      deadlines;
(vi)  a crash anywhere ends where no crash would have: the outcomes expected of each release
      (a good one succeeds, a bad one is rolled back or failed) hold across manager restarts.

``ENGINE_EXAMPLES`` sets how many examples to run (CI runs a bounded number).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.helpers import RecordingPlane, SteadyTraffic
from tests.stateful.test_deployment_machine import CountingSuffixes, PlaneRestartingCluster
from warren.control import reconciling
from warren.domain.deployments import (
    Deployment,
    DeploymentKind,
    Phase,
    status_deployment,
)
from warren.domain.errors import ConflictError, NotFoundError, ValidationError
from warren.domain.requests import Intent
from warren.domain.specs import CanaryConfig, ServiceSpec
from warren.planning.releases import good_revisions
from warren.planning.strategies.canary import current_weight

NAME = "web"
GOOD = {"FAKE_READY_AFTER": "1s"}
BAD: dict[str, dict[str, str]] = {
    "start_error": {"FAKE_START_ERROR": "no such image"},
    "unhealthy": {"FAKE_UNHEALTHY": "1"},
    "flapping": {"FAKE_READY_AFTER": "1s", "FAKE_FLAP": "3s"},
    "errors": {"FAKE_READY_AFTER": "1s", "TRAFFIC": "errors"},
}
"""Kinds of bad revisions: ``errors`` starts fine but answers 50% 5xx (a canary's or green's
analysis fails it; a rolling update has no analysis and takes it)."""
STEP_TIMEOUT = 30.0
CONVERGE = 31.0

STRATEGIES = {
    "rolling": {"strategy": "rolling"},
    "canary": {
        "strategy": "canary",
        "canary": {
            "steps": [{"setWeight": 25}, {"pause": "2s"}, {"setWeight": 50}, {"pause": "2s"}],
            "analysis": {"interval": "1s", "successRate": 0.9, "minRequests": 10},
        },
    },
    "canary-manual": {
        "strategy": "canary",
        "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]},
    },
    "blue-green": {
        "strategy": "blue-green",
        "blueGreen": {
            "scaleDownDelay": "3s",
            "analysis": {"interval": "1s", "successRate": 0.9, "minRequests": 10},
        },
    },
    "blue-green-manual": {"strategy": "blue-green", "blueGreen": {"autoPromote": False}},
}
CONFIGS = st.fixed_dictionaries(
    {
        "replicas": st.integers(1, 4),
        "strategy": st.sampled_from(sorted(STRATEGIES)),
        "parallelism": st.integers(0, 2),
        "order": st.sampled_from(["start-first", "stop-first"]),
        "failureAction": st.sampled_from(["rollback", "rollback", "pause", "continue"]),
    }
)


@dataclass
class Expectation:
    deployment_id: str
    kind: str
    from_revision: int | None
    to_revision: int
    checked: bool


def _past_gates(d: Deployment) -> bool:
    """Whether ``d`` let its revision take all the traffic: a rolling update or a rollback
    (slot by slot, each task ready first), a canary promoted, a green switched to."""
    return (
        d.kind == DeploymentKind.ROLLBACK
        or d.strategy == "rolling"
        or d.from_revision is None
        or d.promoting
        or d.switched_at is not None
        or d.phase == Phase.SUCCEEDED
    )


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim: PlaneRestartingCluster | None = None
        self.secrets: Any = None
        self.config: dict[str, Any] = {}
        self.versions = itertools.count(2)
        self.expect: Expectation | None = None
        self.down: set[str] = set()
        self.traffic = SteadyTraffic()
        self.stable_tasks: dict[str, set[str]] = {}
        """Per canary or blue/green release, its stable tasks when it was first seen."""

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP_TIMEOUT))

    @property
    def cluster(self) -> PlaneRestartingCluster:
        assert self.sim is not None
        return self.sim

    @property
    def plane(self) -> RecordingPlane:
        assert isinstance(self.cluster.dataplane, RecordingPlane)
        return self.cluster.dataplane

    def teardown(self) -> None:
        try:
            if self.sim is not None:
                self.run(self.sim.stop())
        finally:
            if self.secrets is not None:
                reconciling.secrets = self.secrets  # type: ignore[assignment]
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            if left:
                self.loop.run_until_complete(asyncio.wait(left, timeout=STEP_TIMEOUT))
            self.loop.close()

    # ── the service ──────────────────────────────────────────────────────────────────────────

    def spec(self, env: dict[str, str], replicas: int | None = None) -> ServiceSpec:
        cfg = self.config
        deploy = {
            **STRATEGIES[cfg["strategy"]],
            "updateConfig": {
                "parallelism": cfg["parallelism"], "order": cfg["order"], "monitor": "1s",
                "failureAction": cfg["failureAction"], "healthyDeadline": "20s",
                "progressDeadline": "40s",
            },
        }  # fmt: skip
        return ServiceSpec.model_validate(
            {
                "name": NAME, "command": ["app"], "driver": "fake",
                "replicas": cfg["replicas"] if replicas is None else replicas,
                "env": env,
                "healthCheck": {"exec": {"command": ["true"]}, "interval": "1s", "retries": 2},
                "restartPolicy": {"delay": "1s", "maxDelay": "4s"},
                "deploy": deploy,
            }
        )  # fmt: skip

    @initialize(nodes=st.integers(2, 3), config=CONFIGS)
    def start(self, nodes: int, config: dict[str, Any]) -> None:
        self.secrets, reconciling.secrets = reconciling.secrets, CountingSuffixes()  # type: ignore[assignment]
        self.config = config
        self.sim = PlaneRestartingCluster(
            nodes=nodes, dataplane=RecordingPlane(), metrics=self.traffic
        )
        self.run(self.sim.start())
        self.run(self.cluster.cluster.create_service(self.spec({"VERSION": "v1", **GOOD})))
        self.run(self.cluster.advance(2))
        event(f"strategy {config['strategy']}")

    async def _history(self) -> list[Deployment]:
        return await self.cluster.cluster.list_deployments(NAME)

    def history(self) -> list[Deployment]:
        return self.run(self._history())

    def newest(self) -> Deployment | None:
        ds = self.history()
        return ds[-1] if ds else None

    def disturb(self) -> None:
        """The outcome of the rollout in flight is no longer certain."""
        if self.expect is not None:
            self.expect.checked = False

    # ── the operator ─────────────────────────────────────────────────────────────────────────

    @rule(kind=st.sampled_from(["good", "good", "good", *BAD]))
    def update(self, kind: str) -> None:
        version = f"v{next(self.versions)}"
        env = {"VERSION": version, **(GOOD if kind == "good" else BAD[kind])}

        async def go() -> None:
            before, _ = await self.cluster.cluster.get_service(NAME)
            newest = (await self._history() or [None])[-1]
            service, changed = await self.cluster.cluster.update_service(
                NAME, lambda s: self.spec(env, s.replicas)
            )
            assert changed
            if kind == "errors":
                self.traffic.by_revision[service.revision] = (100, 50)
            d = (await self._history())[-1]
            assert d.to_revision == service.revision
            strategy = self.config["strategy"]
            traffic_release = strategy != "rolling"
            # Certain outcomes only where nothing else decides: a good revision on a quiet
            # service (no release in flight that a person must finish) succeeds — unless it
            # waits for a person itself.
            quiet = newest is None or not newest.active
            manual = strategy.endswith("manual")
            certain = quiet and before.spec.replicas > 0 and not manual
            if kind == "good":
                checked = certain
            elif kind == "errors":
                checked = certain and traffic_release and self.config["failureAction"] != "pause"
            elif kind == "flapping":
                checked = False  # ready at first: caught or not, by timing
            else:
                checked = certain and self.config["failureAction"] == "rollback"
            self.expect = Expectation(d.id, kind, before.revision, service.revision, checked)
            await self.cluster.quiesce()

        self.run(go())

    @rule()
    def back_to_stable(self) -> None:
        """The spec the newest release started from, applied again."""

        async def go() -> None:
            newest = (await self._history() or [None])[-1]
            if newest is None or newest.from_revision is None:
                return
            rev = await self.cluster.cluster.get_revision(NAME, newest.from_revision)
            await self.cluster.cluster.update_service(
                NAME, lambda s: rev.spec.model_copy(update={"replicas": s.replicas})
            )
            self.disturb()
            await self.cluster.quiesce()

        self.run(go())

    @rule(replicas=st.integers(0, 4))
    def scale(self, replicas: int) -> None:
        async def go() -> None:
            await self.cluster.cluster.update_service(
                NAME, lambda s: s.model_copy(update={"replicas": replicas})
            )
            if replicas == 0:
                self.disturb()
            await self.cluster.quiesce()

        self.run(go())

    @rule(intent=st.sampled_from([Intent.PAUSE, Intent.RESUME, Intent.ABORT]))
    def operator_request(self, intent: Intent) -> None:
        self.run(self.cluster.cluster.ask(NAME, intent)) if self.newest() else None
        self.disturb()
        self.run(self.cluster.quiesce())

    @rule(full=st.booleans(), force=st.booleans())
    def promote(self, full: bool, force: bool) -> None:
        if self.newest() is None:
            return
        self.run(self.cluster.cluster.ask(NAME, Intent.PROMOTE, full=full, force=force))
        if force:
            self.disturb()
        self.run(self.cluster.quiesce())

    @rule()
    def rollback(self) -> None:
        async def go() -> None:
            try:
                await self.cluster.cluster.rollback_service(NAME)
            except (ConflictError, ValidationError, NotFoundError):
                return
            self.disturb()
            await self.cluster.quiesce()

        self.run(go())

    # ── the world ────────────────────────────────────────────────────────────────────────────

    @rule(which=st.integers(0, 9))
    def task_crashes(self, which: int) -> None:
        running = sorted(
            (tid, node)
            for node, fake in self.cluster.drivers.items()
            if node not in self.down
            for tid in fake.running()
        )
        if not running:
            return
        tid, node = running[which % len(running)]
        self.cluster.drivers[node].crash(tid)
        self.disturb()
        self.run(self.cluster.quiesce())

    @rule(which=st.integers(1, 3))
    def node_down(self, which: int) -> None:
        node = f"n{min(which, len(self.cluster.drivers))}"
        if node in self.down or len(self.down) + 1 >= len(self.cluster.drivers):
            return  # keep one node up
        self.run(self.cluster.agents.pop(node).stop())
        self.down.add(node)
        self.disturb()
        self.run(self.cluster.advance(11))  # its heartbeat lease expires

    @rule()
    def node_up(self) -> None:
        if not self.down:
            return
        node = sorted(self.down)[0]
        self.down.discard(node)
        self.run(self.cluster.start_agent(node))
        self.run(self.cluster.quiesce())

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0]), rounds=st.integers(0, 60))
    def manager_restarts(self, seconds: float, rounds: int) -> None:
        """The manager dies after ``rounds`` turns of the event loop — often in the middle of a
        sync — and a new one takes over."""

        async def go() -> None:
            self.cluster.clock.advance(seconds)
            await self.cluster.clock.settle(rounds)
            await self.cluster.restart_control_plane()
            await self.cluster.quiesce()

        self.run(go())

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.cluster.advance(seconds))

    # ── invariants ───────────────────────────────────────────────────────────────────────────

    def _release_spec(self, d: Deployment) -> ServiceSpec | None:
        try:
            return self.run(self.cluster.cluster.get_revision(NAME, d.to_revision)).spec
        except NotFoundError:
            return None

    @invariant()
    def traffic_never_outruns_the_release(self) -> None:
        """(i)"""
        route = self.plane.routes.get(NAME)
        newest = self.newest()
        if route is None or newest is None:
            return
        weights = dict(route.weights)
        if weights:
            weighted = {rev for rev, w in weights.items() if w > 0}
            assert weighted <= {newest.from_revision, newest.to_revision}, (weights, newest.id)
        update = newest.kind == DeploymentKind.UPDATE and newest.active
        if not update or newest.from_revision is None or newest.promoting:
            return
        new = newest.to_revision
        spec = self._release_spec(newest)
        if newest.strategy == "canary" and spec is not None:
            cfg = (spec.deploy.canary or CanaryConfig()).with_defaults()
            allowed = current_weight(cfg, newest.canary_step)
            assert weights.get(new, 0) <= allowed, (weights, newest.canary_step, allowed)
            event("traffic bound checked on a canary")
        if newest.strategy == "blue-green" and newest.switched_at is None:
            assert weights.get(new, 0) == 0, weights

    @invariant()
    def all_the_traffic_goes_to_a_good_revision(self) -> None:
        """(ii)"""
        route = self.plane.routes.get(NAME)
        history = self.history()
        if route is None or not history or not route.endpoints:
            return
        weights = dict(route.weights)
        revisions = {e.revision for e in route.endpoints}
        if weights:
            full = [rev for rev, w in weights.items() if w == 100]
        else:
            full = list(revisions) if len(revisions) == 1 else []
        for rev in full:
            assert rev in good_revisions(history) or any(
                d.to_revision == rev and _past_gates(d) for d in history
            ), (rev, [(d.id, d.strategy, d.to_revision, d.phase) for d in history])

    @invariant()
    def the_status_is_the_truth(self) -> None:
        """(iii)"""
        history = self.history()
        status = self.run(self.cluster.cluster.deployment_status(NAME))
        d, rollback = status_deployment(history)
        if d is None:
            assert status.deployment_id is None
            return
        assert (status.deployment_id, status.phase) == (d.id, d.phase)
        assert status.succeeded == (d.phase == Phase.SUCCEEDED)
        assert status.rollback_id == (rollback.id if rollback else None)
        if d.phase == Phase.ROLLED_BACK:
            assert not status.succeeded

    @invariant()
    def the_stable_revision_keeps_its_slots(self) -> None:
        """(iv): while a canary or a green not switched to is active, no stable task is
        replaced — the release adds tasks beside them and takes none away (a stable task may
        still crash, be lost with its node, or go with a scale down). The stable tasks are
        those live when the release is first seen."""
        newest = self.newest()
        if newest is None or newest.kind != DeploymentKind.UPDATE or not newest.active:
            return
        if not self._weighted(newest) or newest.promoting or newest.switched_at is not None:
            return
        tasks = {t.id: t for t in self.run(self.cluster.tasks(NAME))}
        stable = self.stable_tasks.setdefault(
            newest.id,
            {
                t.id for t in tasks.values()
                if t.revision == newest.from_revision and t.wants_running and t.state.active
            },
        )  # fmt: skip
        for tid in stable:
            t = tasks.get(tid)
            replaced = t is not None and not t.wants_running
            assert not (replaced and t.message.startswith("replaced by revision")), (
                newest.id, tid, t.message if t else None,
            )  # fmt: skip
        event("stable slots checked during a release")

    def _weighted(self, d: Deployment) -> bool:
        return d.strategy in ("canary", "blue-green")

    # ── liveness ─────────────────────────────────────────────────────────────────────────────

    @rule()
    def faults_stop_and_time_passes(self) -> None:
        """(v) and (vi): every node back, then time: every rollout ends, or waits for a person,
        and ends as expected."""
        while self.down:
            self.node_up()
        for _ in range(4):
            self.run(self.cluster.advance(CONVERGE))
        history = self.history()
        newest = history[-1] if history else None
        if newest is not None:
            waits = {Phase.PAUSED, Phase.AWAITING_PROMOTION}
            ended = newest.phase.terminal or newest.phase in waits
            assert ended, (newest.id, newest.phase, newest.decisions[-3:])
            event(f"ended {newest.kind} {newest.phase}")
        for d in history[:-1]:
            # An update whose rollback waits for a person (a rollback's failure action is
            # pause) waits with it.
            waiting = newest is not None and newest.phase == Phase.PAUSED
            linked = d.phase == Phase.ROLLING_BACK and newest is not None
            assert d.phase.terminal or (linked and waiting and d.rolled_back_by == newest.id), (
                d.id, d.phase, newest.id if newest else None,
                newest.decisions[-4:] if newest else None,
            )  # fmt: skip
        self._check_expectation(history)

    # The one rule that checks liveness, drawn as often as three (Hypothesis draws rules evenly).
    @rule()
    def faults_stop_and_time_passes_again(self) -> None:
        self.faults_stop_and_time_passes()

    @rule()
    def and_once_more(self) -> None:
        self.faults_stop_and_time_passes()

    def _check_expectation(self, history: list[Deployment]) -> None:
        exp = self.expect
        if exp is None or not exp.checked:
            return
        by_id = {d.id: d for d in history}
        d = by_id.get(exp.deployment_id)
        if d is None:
            return
        summary = [(x.id, x.kind, x.phase, x.from_revision, x.to_revision) for x in history]
        service, _ = self.run(self.cluster.cluster.get_service(NAME))
        if exp.kind == "good":
            assert d.phase == Phase.SUCCEEDED, (exp, summary, d.decisions[-3:])
            assert history[-1].id == d.id
            assert service.revision == exp.to_revision
        else:
            assert d.phase in (Phase.ROLLED_BACK, Phase.FAILED), (exp, summary, d.decisions[-3:])
            assert service.revision != exp.to_revision, (exp, summary)
        event(f"outcome checked: {exp.kind}")


EngineMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("ENGINE_EXAMPLES", "40")),
    stateful_step_count=25,
    deadline=None,
)
TestEngineMachine = EngineMachine.TestCase
