"""Canary and blue/green properties: the pure planners driven step by step over a simulated
world — the tasks follow the slot targets through the reconciler's plan (new tasks turn ready
after a delay, tasks no longer wanted stop after one), the clock jumps to the next thing due,
every analysis window gets the samples Hypothesis chose for it (good, bad, too few requests),
and an operator promotes, resumes or walks away. The release invariants are checked after every
single step of every run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from warren.domain import transitions
from warren.domain.deployments import DECISIONS_KEPT, Deployment, Phase, Reason, RolloutConfig
from warren.domain.services import Service
from warren.domain.specs import (
    Analysis,
    BlueGreenConfig,
    CanaryConfig,
    CanaryStep,
    ServiceSpec,
    Strategy,
)
from warren.domain.tasks import DesiredState, Task, TaskState
from warren.planning.analysis import Outcome, Sample, judge
from warren.planning.reconciling import SlotTarget, plan_service
from warren.planning.rollouts import RolloutView, Step
from warren.planning.strategies import blue_green_step, canary_step, slot_revisions

S = TaskState
STABLE, NEW = 1, 2
T0 = 100.0
"""When the release starts; revision 1 has been ready in every slot since 0."""
ROUNDS = 500
"""The bound of property 5. A round: the agents' reports, one reconcile, one planner step; the
longest run drawn here takes under 100."""

GOOD_LATENCIES = tuple(0.040 + 0.001 * (i % 20) for i in range(200))
SAMPLES = {
    # 1% errors, p95 59 ms: passes the thresholds and matches a good stable revision.
    "good": Sample(200, 2, GOOD_LATENCIES),
    # 30% errors, 10x slower: fails the thresholds, and is significantly worse than stable.
    "bad": Sample(200, 60, tuple(10 * x for x in GOOD_LATENCIES)),
    # Fewer than minRequests (20): inconclusive.
    "few": Sample(5, 0, GOOD_LATENCIES[:5]),
}
VERDICT_REASONS = {
    Outcome.PASS: Reason.ANALYSIS_PASSED,
    Outcome.FAIL: Reason.ANALYSIS_FAILED,
    Outcome.INCONCLUSIVE: Reason.ANALYSIS_INCONCLUSIVE,
}
WAITING = (Phase.PAUSED, Phase.AWAITING_PROMOTION)


@dataclass(frozen=True)
class Scenario:
    strategy: Strategy
    replicas: int
    canary: CanaryConfig | None = None
    blue_green: BlueGreenConfig | None = None
    windows: tuple[tuple[str, str], ...] = ()
    """(new, stable) sample kinds of the 1st, 2nd … analysis window judged; "good" after."""
    soak_windows: tuple[tuple[str, str], ...] = ()
    """Blue/green: the same for the windows after the switch (the soak)."""
    operator: tuple[str, ...] = ()
    """What the operator does each time the release waits for a human (awaiting promotion, or
    paused): "promote", "full" (``promote --full``), "resume" or "leave" (the run ends there);
    when the list runs out, the operator leaves."""
    full_at: float | None = None
    """A ``promote --full`` this many seconds after the start (canary), if still in progress."""
    ready_after: float = 1.0
    stop_after: float = 0.5

    @property
    def analysis(self) -> Analysis | None:
        if self.strategy == Strategy.CANARY:
            return (self.canary or CanaryConfig()).with_defaults().analysis
        return self.blue_green.analysis if self.blue_green is not None else None


def revisions_of(target: SlotTarget) -> tuple[int, ...]:
    return target if isinstance(target, tuple) else (target,)


def collapse(values: list[int]) -> list[int]:
    """[0, 10, 10, 50] → [0, 10, 50]."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


@dataclass
class World:
    """Service ``web``: its current revision, its tasks, a virtual clock, the timers of what the
    agents report next, the release and the checks made on every step of it."""

    sc: Scenario
    deployment: Deployment
    revision: int = NEW
    """The service's current revision: the update made it NEW; a failed release reverts it."""
    now: float = T0
    tasks: dict[str, Task] = field(default_factory=dict)
    timers: dict[str, tuple[float, str]] = field(default_factory=dict)
    deploy_due: float | None = None
    reconcile_due: float | None = None
    serial: int = 0
    operator: list[str] = field(default_factory=list)
    full_done: bool = False
    left: bool = False
    """The operator walked away from a waiting release."""
    rounds: int = 0
    windows: list[Outcome] = field(default_factory=list)
    """The outcome of every analysis window judged, in order."""
    soaked: int = 0
    """How many of them were judged after the blue/green switch (the last ones)."""
    failing: int = 0
    """Consecutive FAIL windows, counted here from the samples fed (not from the record)."""
    new_weights: list[int] = field(default_factory=list)
    """NEW's weight after every step that had weights, consecutive repeats collapsed."""

    # --- the tasks -----------------------------------------------------------------------------

    def add(self, slot: int, revision: int, ready: bool) -> None:
        self.serial += 1
        t = Task(
            id=f"web.{slot}.{self.serial}",
            service="web",
            revision=revision,
            slot=slot,
            node="n1",
            state=S.RUNNING if ready else S.STARTING,
            created_at=self.now,
            updated_at=self.now,
            ready=ready,
            ready_at=self.now if ready else None,
        )
        self.tasks[t.id] = t
        if not ready:
            self.timers[t.id] = (self.now + self.sc.ready_after, "ready")

    def fire_timers(self) -> bool:
        due = sorted((at, tid) for tid, (at, _) in self.timers.items() if at <= self.now)
        for _, tid in due:
            what = self.timers.pop(tid)[1]
            t = self.tasks.get(tid)
            if t is None:
                continue
            if what == "ready":
                t = t.transition(S.RUNNING, self.now, ready=True, ready_at=self.now)
            else:
                t = t.transition(S.STOPPED, self.now)
            self.tasks[tid] = t
        return bool(due)

    def shut_down(self, tid: str) -> None:
        t = self.tasks[tid]
        # Property 2, on the tasks themselves: no stable task in slots 1..replicas is stopped
        # before promotion (canary) or before blue is retired (blue/green, after the switch).
        d = self.deployment
        assert not (t.revision == STABLE and t.slot <= self.sc.replicas and not d.promoting), (
            f"stable task {tid} shut down before promotion ({d.phase}: {d.message})"
        )
        t = t.changed(self.now, desired_state=DesiredState.SHUTDOWN)
        if t.state == S.PENDING:
            t = t.transition(S.STOPPED, self.now)
        elif t.state.active and t.state != S.STOPPING:
            t = t.transition(S.STOPPING, self.now)
            self.timers[tid] = (self.now + self.sc.stop_after, "stopped")
        self.tasks[tid] = t

    def live(self, revision: int | None = None) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.state.active and t.wants_running and revision in (None, t.revision)
        ]

    # --- the controllers -----------------------------------------------------------------------

    def slot_map(self) -> dict[int, SlotTarget] | None:
        """As the reconciler asks: the release drives the slots while its revision is the
        service's and it has not succeeded."""
        d = self.deployment
        if d.to_revision != self.revision or d.phase == Phase.SUCCEEDED:
            return None
        return slot_revisions(d, list(self.tasks.values()), self.sc.replicas)

    def reconcile(self) -> bool:
        spec = ServiceSpec(name="web", command=("app",), replicas=self.sc.replicas)
        service = Service(spec=spec, revision=self.revision, created_at=0, updated_at=0)
        tasks = list(self.tasks.values())
        plan = plan_service("web", service, tasks, self.now, self.slot_map())
        for new in plan.create:
            self.add(new.slot, new.revision, ready=False)
        for tid, _ in plan.shutdown:
            self.shut_down(tid)
        for tid in plan.forget:
            del self.tasks[tid]
        self.reconcile_due = plan.requeue_at
        return bool(plan.create or plan.shutdown or plan.forget)

    def samples(self) -> dict[int, Sample]:
        kinds, k = self.sc.windows, len(self.windows) - self.soaked
        if self.deployment.switched_at is not None:
            kinds, k = self.sc.soak_windows, self.soaked
        new, stable = kinds[k] if k < len(kinds) else ("good", "good")
        return {NEW: SAMPLES[new], STABLE: SAMPLES[stable]}

    def deploy(self) -> bool:
        d, samples = self.deployment, self.samples()
        view = RolloutView(
            d,
            self.sc.replicas,
            list(self.tasks.values()),
            self.now,
            canary=self.sc.canary,
            blue_green=self.sc.blue_green,
            samples=samples,
        )
        step = canary_step(view) if self.sc.strategy == Strategy.CANARY else blue_green_step(view)
        self.deployment = step.deployment
        if step.revert_to is not None:
            self.revision = step.revert_to
        self.deploy_due = step.requeue_at
        self.check(d, step, samples)
        return step.deployment != d

    def operate(self) -> bool:
        """The operator, as the API changes the record. True if the release changed."""
        d, now = self.deployment, self.now
        if (
            self.sc.full_at is not None
            and not self.full_done
            and now >= T0 + self.sc.full_at
            and d.active
            and not d.promoting
        ):
            self.full_done = True
            self.deployment = self._promote(d, "full")
            return True
        if d.phase not in WAITING:
            return False
        action = self.operator.pop(0) if self.operator else "leave"
        if action == "leave":
            self.left = True
            return False
        if action == "resume" and d.phase == Phase.PAUSED:
            self.deployment = transitions.resume(d, now)
        else:  # the API refuses to resume a release awaiting promotion: promote it instead
            self.deployment = self._promote(d, "full" if action == "full" else "step")
        return True

    def _promote(self, d: Deployment, what: str) -> Deployment:
        """As the controller applies ``promote`` (forced: the operator here does not wait for
        the canary tasks to be ready)."""
        message = f"promote ({what}) asked by the operator"
        return transitions.promote(d, self.now, what == "full", message)

    def run(self) -> None:
        """Round after round until the release has ended and the tasks have settled, or waits
        for an operator who walked away."""
        for self.rounds in range(1, ROUNDS + 1):
            changed = self.fire_timers()
            changed = self.reconcile() or changed
            changed = self.deploy() or changed
            if changed or self.operate():
                continue
            d = self.deployment
            if self.left:
                return
            times = [at for at, _ in self.timers.values()]
            times += [t for t in (self.deploy_due, self.reconcile_due) if t is not None]
            full_at = T0 + (self.sc.full_at if self.sc.full_at is not None else -1.0)
            if not self.full_done and full_at > self.now and d.active:
                times.append(full_at)
            if not times:
                # Nothing left to happen: the release must not be stuck in progress.
                assert d.phase.terminal, f"stalled: {d.phase}, {d.message}"
                return
            self.now = max(self.now, min(times))
        raise AssertionError(f"property 5: no end after {ROUNDS} rounds: {self.deployment}")

    # --- the invariants, after every step ------------------------------------------------------

    def check(self, old: Deployment, step: Step, samples: dict[int, Sample]) -> None:
        d = step.deployment
        assert len(d.decisions) < DECISIONS_KEPT  # the log below is read by difference
        if d == old:
            # Nothing to do now: the planner must not ask to be called again at once.
            assert step.requeue_at is None or step.requeue_at > self.now, "livelock"

        # 1. Weights: non-negative, summing to exactly 100, naming only the two revisions.
        if d.weights:
            revisions = [rev for rev, _ in d.weights]
            assert len(set(revisions)) == len(revisions), d.weights
            assert set(revisions) <= {STABLE, NEW}, d.weights
            assert all(w >= 0 for _, w in d.weights), d.weights
            assert sum(w for _, w in d.weights) == 100, d.weights

        # 2. Before promotion every slot 1..replicas keeps the stable revision among its
        # targets (blue/green: blue is kept warm after the switch too, until it is retired).
        targets = self.slot_map()
        if targets is not None and d.active and not d.promoting:
            for slot in range(1, self.sc.replicas + 1):
                assert STABLE in revisions_of(targets[slot]), (slot, targets, d.message)
        if self.sc.strategy == Strategy.BLUE_GREEN and d.switched_at is None:
            assert not d.promoting  # blue is retired only after the switch

        # The windows judged in this step, checked against the samples fed.
        judged = [x for x in d.decisions[len(old.decisions) :] if "window" in x.measured]
        assert len(judged) <= 1
        analysis = self.sc.analysis
        for decision in judged:
            assert analysis is not None
            verdict = judge(analysis, samples[NEW], samples[STABLE])
            assert decision.reason == VERDICT_REASONS[verdict.outcome], (decision, verdict)
            self.windows.append(verdict.outcome)
            self.soaked += old.switched_at is not None
            self.failing = self.failing + 1 if verdict.outcome == Outcome.FAIL else 0

            # 3. failureLimit FAIL windows in a row: weight 0 for the new revision in this very
            # step, the release failed, the stable revision current again with 100%.
            if self.failing >= analysis.failure_limit:
                assert d.phase == Phase.FAILED, d.message
                assert dict(d.weights) == {STABLE: 100, NEW: 0}
                assert step.revert_to == STABLE
                assert d.decisions[-1].reason == Reason.ANALYSIS_FAILED
            elif d.phase == Phase.FAILED:
                # ... and not before (but a blue/green preview has one window, which must pass).
                assert self.sc.strategy == Strategy.BLUE_GREEN and old.switched_at is None

            # 4. An inconclusive window never passes silently: it pauses, saying how many
            # requests came, and nothing moves on in that step.
            if verdict.outcome == Outcome.INCONCLUSIVE:
                short = samples[NEW]
                if short.requests >= analysis.min_requests:
                    short = samples[STABLE]  # baseline mode: the stable revision had too few
                assert d.phase == Phase.PAUSED, d.message
                assert f"{short.requests} requests" in d.paused_reason
                assert (d.weights, d.canary_step, d.switched_at, d.promoting) == (
                    old.weights, old.canary_step, old.switched_at, old.promoting
                )  # fmt: skip

        # A release fails with weight 0 for the new revision and the stable one current again.
        if d.phase == Phase.FAILED and old.phase != Phase.FAILED:
            assert dict(d.weights) == {STABLE: 100, NEW: 0}
            assert step.revert_to == STABLE
        else:
            assert step.revert_to == old.reverted_to  # written once, with the failure
        assert step.rollback_to is None  # a release undoes itself by weight, never by rollback

        # 6. Weights take only the steps' values (plus 0 and 100), in step order.
        if d.weights:
            weight = dict(d.weights)[NEW]
            if not self.new_weights or self.new_weights[-1] != weight:
                self.new_weights.append(weight)
        seen = self.new_weights
        if d.phase == Phase.FAILED and len(seen) > 1 and seen[-1] == 0:
            seen = seen[:-1]  # the failure's weight 0
        assert seen == self.allowed_weights()[: len(seen)], (seen, self.allowed_weights())

    def allowed_weights(self) -> list[int]:
        """The new revision's weights, in order, if every step runs."""
        if self.sc.strategy == Strategy.BLUE_GREEN:
            return [0, 100]
        assert self.sc.canary is not None
        canary = self.sc.canary.with_defaults()
        steps = [s.set_weight for s in canary.steps if s.set_weight is not None]
        return collapse([0, *steps])


def start(sc: Scenario) -> World:
    """Revision 1 ready in every slot; the update to revision 2 starts at ``T0``."""
    d = Deployment(
        id="web-2",
        service="web",
        strategy=sc.strategy,
        from_revision=STABLE,
        to_revision=NEW,
        replicas=sc.replicas,
        config=RolloutConfig(healthy_deadline=60.0, progress_deadline=600.0),
        started_at=T0,
        updated_at=T0,
        progress_at=T0,
    )
    world = World(sc, d, operator=list(sc.operator), now=0.0)
    for slot in range(1, sc.replicas + 1):
        world.add(slot, STABLE, ready=True)
    world.now = T0
    return world


def finished(world: World) -> None:
    """Property 5: the run ended — succeeded, failed, or waiting for a human — and the tasks
    are where the outcome says."""
    d, replicas = world.deployment, world.sc.replicas
    event(f"ended {d.phase}")
    for outcome in sorted(set(world.windows)):
        event(f"a window {outcome}")
    assert d.phase in (Phase.SUCCEEDED, Phase.FAILED, *WAITING), d.phase
    if d.phase == Phase.SUCCEEDED:
        # 100% on the new revision (no weights: traffic follows the tasks, all of it) and one
        # ready task of it in every slot; the stable revision gone.
        assert d.weights == ()
        assert world.revision == NEW
        new = world.live(NEW)
        assert sorted(t.slot for t in new) == list(range(1, replicas + 1))
        assert all(t.ready for t in new)
        assert world.live(STABLE) == []
    elif d.phase == Phase.FAILED:
        assert world.revision == STABLE
        stable = world.live(STABLE)
        assert sorted(t.slot for t in stable) == list(range(1, replicas + 1))
        assert world.live(NEW) == []
    else:
        assert world.left


# --- what Hypothesis draws ---------------------------------------------------------------------

PAUSES: list[float | dict[str, Any] | None] = [None, 5.0, 10.0, 30.0, {}]


def flatten(
    stages: list[tuple[int | None, float | dict[str, Any] | None]],
) -> tuple[CanaryStep, ...]:
    steps: list[CanaryStep] = []
    for weight, pause in stages:
        if weight is not None:
            steps.append(CanaryStep(set_weight=weight))
        if pause is not None:
            steps.append(CanaryStep(pause=pause))
    return tuple(steps)


# Any step list, drawn as stages "setWeight, then a pause" (either may be missing) so that most
# weights get a pause long enough for analysis windows to close.
CANARY_STEPS = st.lists(
    st.tuples(st.integers(-50, 100).map(lambda w: None if w < 0 else w), st.sampled_from(PAUSES)),
    max_size=4,
).map(flatten)


@st.composite
def analyses(draw: st.DrawFn) -> Analysis:
    interval = draw(st.sampled_from([5.0, 10.0]))
    limit = draw(st.integers(1, 3))
    if draw(st.sampled_from(["threshold", "baseline"])) == "threshold":
        return Analysis(
            interval=interval, success_rate=0.95, max_latency_p95=0.3, failure_limit=limit
        )
    return Analysis(interval=interval, mode="baseline", failure_limit=limit)


WINDOW = st.tuples(st.sampled_from(["good", "bad", "few"]), st.sampled_from(["good", "few", "bad"]))
TIMING = {
    "ready_after": st.sampled_from([0.5, 1.0, 3.0]),
    "stop_after": st.sampled_from([0.0, 0.5, 2.0]),
}


@st.composite
def canary_scenarios(draw: st.DrawFn, good: bool = False, analysed: bool = False) -> Scenario:
    """``good``: every window good, and an operator who always promotes. ``analysed``: with
    analysis, and a first weight above 0 held for 30 s — several windows close."""
    replicas = draw(st.integers(1, 10))
    steps = draw(CANARY_STEPS)
    if analysed:
        steps = (CanaryStep(set_weight=draw(st.integers(1, 100))), CanaryStep(pause=30.0), *steps)
    with_analysis = analysed or draw(st.integers(0, 3)) > 0
    cfg = CanaryConfig(
        steps=steps,
        canary_replicas=draw(st.none() | st.integers(1, replicas + 1)),
        analysis=draw(analyses()) if with_analysis else None,
    )
    promotes = st.sampled_from(["promote", "full"])
    if good:
        operator = draw(st.lists(promotes, min_size=8, max_size=8))
    else:
        operator = draw(st.lists(promotes | st.sampled_from(["resume", "leave"]), max_size=6))
    full_at = None
    if not analysed and draw(st.integers(0, 3)) == 0:
        full_at = draw(st.sampled_from([0.0, 3.0, 12.0, 40.0]))
    return Scenario(
        strategy=Strategy.CANARY,
        replicas=replicas,
        canary=cfg,
        windows=() if good else tuple(draw(st.lists(WINDOW, max_size=8))),
        operator=tuple(operator),
        full_at=full_at,
        ready_after=draw(TIMING["ready_after"]),
        stop_after=draw(TIMING["stop_after"]),
    )


@st.composite
def blue_green_scenarios(draw: st.DrawFn, good: bool = False) -> Scenario:
    analysis = draw(st.none() | analyses())
    soak = draw(st.sampled_from([0.0, 10.0, 30.0]))
    cfg = BlueGreenConfig(
        auto_promote=draw(st.booleans()),
        auto_promote_after=draw(st.sampled_from([0.0, 5.0, 20.0])),
        scale_down_delay=draw(st.sampled_from([0.0, 5.0, 30.0])),
        soak=soak,
        analysis=analysis,
    )
    return Scenario(
        strategy=Strategy.BLUE_GREEN,
        replicas=draw(st.integers(1, 10)),
        blue_green=cfg,
        windows=() if good else tuple(draw(st.lists(WINDOW, max_size=6))),
        soak_windows=() if good else tuple(draw(st.lists(WINDOW, max_size=6))),
        operator=tuple(draw(st.lists(st.sampled_from(["promote", "resume", "leave"]), max_size=4)))
        if not good
        else ("promote",) * 4,
        ready_after=draw(TIMING["ready_after"]),
        stop_after=draw(TIMING["stop_after"]),
    )


# --- the properties ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(canary_scenarios())
def test_every_step_of_a_canary_keeps_the_release_invariants(sc: Scenario) -> None:
    """Properties 1-4 and 6 after every step (see World.check), 5 at the end."""
    world = start(sc)
    world.run()
    finished(world)


@settings(max_examples=150, deadline=None)
@given(canary_scenarios(analysed=True))
def test_every_step_of_an_analysed_canary_keeps_the_release_invariants(sc: Scenario) -> None:
    """The same, with windows judged at every weight: failures, inconclusive pauses, passes."""
    world = start(sc)
    world.run()
    finished(world)
    assert world.windows


@settings(max_examples=100, deadline=None)
@given(canary_scenarios(good=True) | canary_scenarios(good=True, analysed=True))
def test_a_good_canary_that_gets_its_promotes_succeeds(sc: Scenario) -> None:
    world = start(sc)
    world.run()
    assert world.deployment.phase == Phase.SUCCEEDED, world.deployment.message
    finished(world)
    assert Outcome.FAIL not in world.windows
    assert world.new_weights == world.allowed_weights()[: len(world.new_weights)]


@settings(max_examples=150, deadline=None)
@given(blue_green_scenarios())
def test_every_step_of_a_blue_green_release_keeps_the_release_invariants(sc: Scenario) -> None:
    world = start(sc)
    world.run()
    finished(world)
    d = world.deployment
    if d.phase == Phase.FAILED and d.switched_at is None:
        # Failed before the switch: blue never lost a request's worth of weight.
        assert world.new_weights == [0]


@settings(max_examples=100, deadline=None)
@given(blue_green_scenarios(good=True))
def test_a_good_blue_green_release_switches_once_and_retires_blue(sc: Scenario) -> None:
    world = start(sc)
    world.run()
    d = world.deployment
    assert d.phase == Phase.SUCCEEDED, d.message
    finished(world)
    assert world.new_weights == [0, 100]
    assert d.switched_at is not None
    assert d.finished_at is not None
    cfg = sc.blue_green
    assert cfg is not None
    # Blue stays warm at least scaleDownDelay (and the soak) after the switch.
    assert d.finished_at >= d.switched_at + max(cfg.scale_down_delay, cfg.soak)


# --- examples ----------------------------------------------------------------------------------


def test_an_inconclusive_soak_window_pauses_the_release() -> None:
    """Green passes its preview window and takes 100%; the first window of its 10 s soak has
    5 requests (minRequests 20): the release pauses there, saying so, green keeping 100% and
    blue kept warm — not a soak that carries on as if the window had passed (until a fix made
    alongside these tests, blue was retired and the release succeeded that way)."""
    analysis = Analysis(interval=5.0, success_rate=0.95, failure_limit=1)
    sc = Scenario(
        strategy=Strategy.BLUE_GREEN,
        replicas=1,
        blue_green=BlueGreenConfig(scale_down_delay=0.0, soak=10.0, analysis=analysis),
        windows=(("good", "good"),),
        soak_windows=(("few", "good"), ("few", "good")),
    )
    world = start(sc)
    world.run()  # every step checked, property 4 included
    d = world.deployment
    assert d.phase == Phase.PAUSED
    assert world.windows == [Outcome.PASS, Outcome.INCONCLUSIVE]
    assert "5 requests" in d.paused_reason
    assert d.switched_at is not None
    assert dict(d.weights) == {STABLE: 0, NEW: 100}
    assert [t.revision for t in world.live()] == [STABLE, NEW]  # blue still warm
