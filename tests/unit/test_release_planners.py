"""Canary and blue/green planner tables: weight sequences of concrete step lists, analysis that
fails, pauses for too few requests or passes, promotion by the operator, the blue/green switch,
soak and switch back, and the instant rollback to a revision still warm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from warren.domain import transitions
from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason, RolloutConfig
from warren.domain.specs import Analysis, BlueGreenConfig, CanaryConfig, CanaryStep, Strategy
from warren.domain.tasks import Task, TaskState
from warren.planning.analysis import Sample
from warren.planning.reconciling import SlotTarget
from warren.planning.rollouts import RolloutView, Step
from warren.planning.strategies import blue_green_step, canary_step, rollback_step, slot_revisions
from warren.planning.strategies.canary import canary_slots

STABLE, NEW = 1, 2
T0 = 1000.0
"""When the release started; revision 1's tasks have been ready since 0."""
INF = math.inf

LATENCIES = tuple(0.040 + 0.001 * (i % 20) for i in range(200))
GOOD = Sample(200, 2, LATENCIES)
BAD = Sample(200, 60, tuple(10 * x for x in LATENCIES))
FEW = Sample(5, 0, LATENCIES[:5])
WINDOWS = {
    # (new revision, stable revision) over one analysis window
    "good": (GOOD, GOOD),
    "bad": (BAD, GOOD),
    "few": (FEW, GOOD),
    "few stable": (GOOD, FEW),
}
THRESHOLDS = {"interval": 10.0, "success_rate": 0.95, "max_latency_p95": 0.3}
"""Passed by GOOD (1% errors, p95 59 ms), failed by BAD (30% errors); FEW has 5 of the 20
requests minRequests asks for."""


def weight(n: int) -> CanaryStep:
    return CanaryStep(set_weight=n)


def pause(seconds: float | None = None) -> CanaryStep:
    """``pause: 30s``; without a duration ``pause: {}`` (until promoted)."""
    return CanaryStep(pause={} if seconds is None else seconds)


def deployment(strategy: Strategy, replicas: int, **fields: Any) -> Deployment:
    return Deployment(
        id="web-2",
        service="web",
        strategy=strategy,
        from_revision=STABLE,
        to_revision=NEW,
        replicas=replicas,
        config=RolloutConfig(healthy_deadline=60.0),
        started_at=T0,
        updated_at=T0,
        progress_at=T0,
        **fields,
    )


def task(slot: int, revision: int) -> Task:
    """A ready task: revision 1's since 0, any other's since T0."""
    created = 0.0 if revision == STABLE else T0
    return Task(
        id=f"web.{slot}.r{revision}",
        service="web",
        revision=revision,
        slot=slot,
        node="n1",
        state=TaskState.RUNNING,
        created_at=created,
        updated_at=created,
        ready=True,
        ready_at=created,
    )


def revisions_of(target: SlotTarget) -> tuple[int, ...]:
    return target if isinstance(target, tuple) else (target,)


def settled(d: Deployment, replicas: int, revision: int) -> list[Task]:
    """The tasks once the reconciler has caught up: a ready task of every revision each slot
    should run (the release's slot targets while it drives the service, else ``revision``)."""
    targets: dict[int, SlotTarget] = {}
    if d.to_revision == revision and d.phase != Phase.SUCCEEDED:
        targets = slot_revisions(d, (), replicas)
    slots = sorted(set(range(1, replicas + 1)) | set(targets))
    return [task(s, rev) for s in slots for rev in revisions_of(targets.get(s, revision))]


@dataclass
class Release:
    """One release driven by its planner over a world that follows the slot targets at once:
    each step is taken when the planner asked to be called again."""

    d: Deployment
    canary: CanaryConfig | None = None
    blue_green: BlueGreenConfig | None = None
    windows: list[str] = field(default_factory=list)
    """The samples of the 1st, 2nd … window judged (WINDOWS keys); "good" after."""
    revision: int = NEW
    now: float = T0
    steps: list[Step] = field(default_factory=list)
    weights: list[tuple[tuple[int, int], ...]] = field(default_factory=list)
    """Every distinct weights value, in order."""

    def tick(self) -> Step:
        new, stable = WINDOWS[self.windows[0] if self.windows else "good"]
        view = RolloutView(
            self.d,
            self.d.replicas,
            settled(self.d, self.d.replicas, self.revision),
            self.now,
            canary=self.canary,
            blue_green=self.blue_green,
            samples={NEW: new, STABLE: stable},
        )
        planner = canary_step if self.d.strategy == Strategy.CANARY else blue_green_step
        step = planner(view)
        if any("window" in x.measured for x in step.deployment.decisions[len(self.d.decisions) :]):
            self.windows = self.windows[1:]
        if step.revert_to is not None:
            self.revision = step.revert_to
        self.d = step.deployment
        self.steps.append(step)
        if not self.weights or self.weights[-1] != self.d.weights:
            self.weights.append(self.d.weights)
        return step

    def run(self, until: float = INF) -> Release:
        """Step at every time the planner asks for, up to ``until``, while it progresses."""
        while True:
            before = self.d
            step = self.tick()
            if step.deployment != before and self.d.phase == Phase.PROGRESSING:
                continue
            if self.d.phase != Phase.PROGRESSING or step.requeue_at is None:
                return self
            if step.requeue_at > until:
                self.now = max(self.now, until)
                return self
            assert step.requeue_at > self.now
            self.now = step.requeue_at

    def promote(self, full: bool = False) -> Release:
        """``warren deploy promote [--full]``, as the deployment controller applies it."""
        what = "full" if full else "step"
        self.d = transitions.promote(self.d, self.now, full, f"promote ({what})")
        return self

    def resume(self) -> Release:
        self.d = transitions.resume(self.d, self.now)
        return self

    def reasons(self) -> list[str]:
        return [x.reason for x in self.d.decisions]


def canary(
    steps: list[CanaryStep], replicas: int = 10, windows: list[str] | None = None, **cfg: Any
) -> Release:
    config = CanaryConfig(steps=tuple(steps), **cfg)
    return Release(deployment(Strategy.CANARY, replicas), canary=config, windows=windows or [])


def blue_green(replicas: int = 4, windows: list[str] | None = None, **cfg: Any) -> Release:
    config = BlueGreenConfig(**cfg)
    return Release(
        deployment(Strategy.BLUE_GREEN, replicas), blue_green=config, windows=windows or []
    )


def w(stable: int, new: int) -> tuple[tuple[int, int], ...]:
    return ((STABLE, stable), (NEW, new))


# --- canary: the weights a step list goes through ----------------------------------------------

START = w(100, 0)
"""The canary tasks start with no traffic."""

# steps, promotes the operator gives (each time it awaits one), the weights in order, how long
# it takes (the world is instant: only pauses count).
CANARY_RUNS: dict[str, tuple[list[CanaryStep], list[bool], list[Any], float]] = {
    "10, pause, 50, pause, promote": (
        [weight(10), pause(), weight(50), pause()],
        [False, False],
        [START, w(90, 10), w(50, 50), ()],
        0.0,
    ),
    "10, 30s, 50, 30s": (
        [weight(10), pause(30), weight(50), pause(30)],
        [],
        [START, w(90, 10), w(50, 50), ()],
        60.0,
    ),
    "a weight of 0 and a weight of 100": (
        [weight(0), pause(5), weight(100), pause(5)],
        [],
        [START, w(0, 100), ()],
        10.0,
    ),
    "the same weight twice": (
        [weight(20), pause(5), weight(20), pause(5), weight(60)],
        [],
        [START, w(80, 20), w(40, 60), ()],
        10.0,
    ),
    # Issue 12, item 11: no steps promoted at once, untested; now the judged defaults.
    "no steps: 10%, 50%, each held a window, then promotion": (
        [],
        [],
        [START, w(90, 10), w(50, 50), ()],
        20.0,
    ),
    "promote --full at the first pause skips 50%": (
        [weight(10), pause(), weight(50), pause()],
        [True],
        [START, w(90, 10), ()],
        0.0,
    ),
    "1%": ([weight(1), pause(10)], [], [START, w(99, 1), ()], 10.0),
}


@pytest.mark.parametrize(
    ("steps", "promotes", "weights", "took"), CANARY_RUNS.values(), ids=CANARY_RUNS.keys()
)
def test_canary_steps_set_the_weights_in_order(
    steps: list[CanaryStep], promotes: list[bool], weights: list[Any], took: float
) -> None:
    release = canary(steps).run()
    for full in promotes:
        assert release.d.phase == Phase.AWAITING_PROMOTION
        assert release.steps[-1].requeue_at is None  # nothing to do until the operator acts
        release.promote(full=full).run()
    d = release.d
    assert d.phase == Phase.SUCCEEDED, d.message
    assert release.weights == weights
    assert d.finished_at == T0 + took
    assert release.revision == NEW
    assert all(s.revert_to is None and s.rollback_to is None for s in release.steps)
    # Every slot on the new revision alone.
    assert {t.revision for t in settled(d, 10, release.revision)} == {NEW}


def test_a_timed_pause_waits_and_asks_to_be_called_back_when_it_ends() -> None:
    release = canary([weight(10), pause(30), weight(50)]).run(until=T0 + 29.9)
    d = release.d
    assert (d.canary_step, d.pause_until, d.weights) == (1, T0 + 30, w(90, 10))
    assert release.steps[-1].requeue_at == T0 + 30
    release.run(until=T0 + 30)
    assert release.weights == [START, w(90, 10), w(50, 50), ()]  # 50%, then promoted
    assert release.d.finished_at == T0 + 30


@pytest.mark.parametrize(
    ("replicas", "steps", "canary_replicas", "slots"),
    [
        (10, [weight(10), weight(50)], None, (1, 2, 3, 4, 5)),  # enough for the largest weight
        (10, [weight(1)], None, (1,)),  # 1% still needs one task
        (10, [], None, (1, 2, 3, 4, 5)),  # no steps: the defaults, up to 50%
        (4, [weight(30)], None, (1, 2)),  # ceil(1.2)
        (3, [weight(100)], None, (1, 2, 3)),
        (10, [weight(50)], 2, (1, 2)),  # canaryReplicas wins
        (2, [weight(50)], 3, (1, 2, 3)),  # even above replicas
    ],
)
def test_canary_tasks_run_beside_stable_ones_in_the_first_slots(
    replicas: int, steps: list[CanaryStep], canary_replicas: int | None, slots: tuple[int, ...]
) -> None:
    release = canary(steps, replicas=replicas, canary_replicas=canary_replicas)
    assert release.canary is not None
    view = RolloutView(release.d, replicas, [], T0, canary=release.canary)
    assert canary_slots(view) == slots
    d = release.tick().deployment
    assert d.target_slots == slots
    assert d.weights == START
    assert d.decisions[-1].reason == Reason.CANARY_SCALED
    targets = slot_revisions(d, (), replicas)
    for slot in range(1, replicas + 1):
        # The stable revision keeps every slot until promotion; the canary runs beside it.
        assert targets[slot] == ((STABLE, NEW) if slot in slots else STABLE)


def test_promotion_moves_every_slot_to_the_new_revision_before_succeeding() -> None:
    release = canary([weight(50)], replicas=4)
    release.tick()  # canary tasks
    release.tick()  # 50%
    d = release.tick().deployment  # last step passed
    assert d.promoting
    assert d.weights == w(50, 50)
    assert d.phase == Phase.PROGRESSING
    assert slot_revisions(d, (), 4) == {1: NEW, 2: NEW, 3: NEW, 4: NEW}
    # Slots 3 and 4 still run only the stable revision: not done yet.
    half = [task(1, NEW), task(2, NEW), task(3, STABLE), task(4, STABLE)]
    s = canary_step(RolloutView(d, 4, half, T0 + 1, canary=release.canary))
    assert s.deployment.phase == Phase.PROGRESSING
    done = [task(slot, NEW) for slot in range(1, 5)]
    s = canary_step(RolloutView(d, 4, done, T0 + 2, canary=release.canary))
    assert s.deployment.phase == Phase.SUCCEEDED
    assert s.deployment.weights == ()
    assert s.deployment.decisions[-1].reason == Reason.COMPLETE


# --- canary: analysis ---------------------------------------------------------------------------

LONG = [weight(10), pause(60), weight(50), pause(60)]
"""With a 10 s interval: 6 windows at 10%, then 6 at 50%."""


@pytest.mark.parametrize(
    ("limit", "windows", "failed_at"),
    [
        (1, ["bad"], 10.0),  # a bad first window fails at weight 10
        (2, ["bad", "bad"], 20.0),
        (2, ["bad", "good", "bad", "bad"], 40.0),  # failures must be consecutive
        (3, ["bad", "bad", "good", "bad", "bad", "bad"], 60.0),
        (1, ["good", "good", "good", "good", "good", "good", "bad"], 70.0),  # first at 50%
    ],
)
def test_failed_analysis_gives_the_canary_weight_0_at_once(
    limit: int, windows: list[str], failed_at: float
) -> None:
    analysis = Analysis(**THRESHOLDS, failure_limit=limit)
    release = canary(LONG, windows=windows, analysis=analysis).run()
    d, last = release.d, release.steps[-1]
    assert d.phase == Phase.FAILED
    assert d.finished_at == T0 + failed_at
    # In the very step that judged the last failed window: weight 0, stable current again.
    judged = next(s for s in reversed(release.steps) if s.deployment.analysis_failures == limit)
    assert judged is last
    assert last.revert_to == STABLE
    assert last.rollback_to is None
    assert release.revision == STABLE
    assert d.weights == w(100, 0)
    assert release.weights[-1] == w(100, 0)
    was = 10 if failed_at <= 60 else 50
    assert release.weights[-2] == w(100 - was, was)
    assert d.decisions[-2].reason == Reason.ANALYSIS_FAILED  # the window
    assert d.decisions[-1].reason == Reason.ANALYSIS_FAILED  # the verdict
    assert "success rate 70.00% < 95.00% (60 of 200 failed)" in d.message
    # The canary tasks go; the stable ones never moved.
    assert {t.revision for t in settled(d, 10, release.revision)} == {STABLE}


@pytest.mark.parametrize(
    ("mode", "window", "reason"),
    [
        ("threshold", "few", "5 requests, fewer than minRequests 20"),
        ("baseline", "few", "5 requests, fewer than minRequests 20"),
        ("baseline", "few stable", "the stable revision had 5 requests, fewer than minRequests 20"),
    ],
)
def test_an_inconclusive_window_pauses_the_canary_with_the_request_count(
    mode: str, window: str, reason: str
) -> None:
    analysis = Analysis(**THRESHOLDS, mode=mode)
    release = canary(LONG, windows=["good", window], analysis=analysis).run()
    d = release.d
    assert d.phase == Phase.PAUSED
    assert "inconclusive" in d.paused_reason
    assert reason in d.paused_reason
    assert d.updated_at == T0 + 20
    assert d.weights == w(90, 10)  # nothing moved on
    assert (d.canary_step, d.pause_until) == (1, T0 + 60)
    assert release.steps[-1].revert_to is None
    assert release.reasons()[-3:] == [
        Reason.ANALYSIS_PASSED,
        Reason.ANALYSIS_INCONCLUSIVE,
        Reason.ANALYSIS_INCONCLUSIVE,
    ]
    # Paused: the planner leaves it alone, whatever the time.
    release.now = T0 + 1000
    assert release.tick().deployment == d
    # Resumed, the next window is judged from the resume on.
    release.resume().run()
    assert release.d.phase == Phase.SUCCEEDED


def test_analysis_runs_only_while_the_canary_has_traffic() -> None:
    analysis = Analysis(**THRESHOLDS)
    release = canary(
        [weight(0), pause(60), weight(10), pause(10)], windows=["bad"], analysis=analysis
    )
    release.run(until=T0 + 59)
    assert release.d.phase == Phase.PROGRESSING
    assert release.windows == ["bad"]  # no window judged at weight 0
    d = release.run().d
    assert d.phase == Phase.FAILED
    assert d.finished_at == T0 + 70


def test_promote_full_skips_the_remaining_steps_and_their_analysis() -> None:
    analysis = Analysis(**THRESHOLDS)
    release = canary(LONG, analysis=analysis).run(until=T0 + 15)
    assert release.d.weights == w(90, 10)
    release.promote(full=True).run()
    d = release.d
    assert d.phase == Phase.SUCCEEDED
    assert d.finished_at == T0 + 15
    assert release.weights == [START, w(90, 10), ()]
    assert Reason.ANALYSIS_PASSED in release.reasons()  # the window at T0 + 10


# --- blue/green ---------------------------------------------------------------------------------

SWITCHED = w(0, 100)

# config, when it switches and when blue is retired (relative to the start; green is ready at
# once), and whether it waits for `warren deploy promote` (given at T0 + 50).
BLUE_GREEN_RUNS: dict[str, tuple[dict[str, Any], float, float, bool]] = {
    "defaults: switch at once, blue kept 30 s": ({}, 0.0, 30.0, False),
    "autoPromoteAfter 20s": ({"auto_promote_after": 20.0}, 20.0, 50.0, False),
    "scaleDownDelay 0": ({"scale_down_delay": 0.0}, 0.0, 0.0, False),
    "manual promotion": ({"auto_promote": False}, 50.0, 80.0, True),
    "a soak longer than scaleDownDelay": (
        {"soak": 60.0, "scale_down_delay": 5.0, "analysis": Analysis(**THRESHOLDS)},
        10.0,  # one preview window first
        70.0,
        False,
    ),
}


@pytest.mark.parametrize(
    ("config", "switch", "retire", "manual"), BLUE_GREEN_RUNS.values(), ids=BLUE_GREEN_RUNS.keys()
)
def test_blue_green_switches_once_then_retires_blue(
    config: dict[str, Any], switch: float, retire: float, manual: bool
) -> None:
    release = blue_green(**config).run()
    if manual:
        assert release.d.phase == Phase.AWAITING_PROMOTION
        assert release.d.weights == START
        release.now = T0 + 50
        release.promote().run()
    d = release.d
    assert d.phase == Phase.SUCCEEDED, d.message
    assert release.weights == [START, SWITCHED, ()]
    assert d.switched_at == T0 + switch
    assert d.finished_at == T0 + retire
    assert release.revision == NEW
    # Blue kept every slot until it was retired.
    switched = next(s.deployment for s in release.steps if s.deployment.switched_at is not None)
    assert all(STABLE in revisions_of(t) for t in slot_revisions(switched, (), 4).values())


def test_blue_green_preview_analysis_failure_fails_without_a_switch() -> None:
    release = blue_green(windows=["bad"], analysis=Analysis(**THRESHOLDS)).run()
    d = release.d
    assert d.phase == Phase.FAILED
    assert d.switched_at is None
    assert d.green_ready_at == T0
    assert d.finished_at == T0 + 10
    assert release.weights == [START]  # green never had a request but previews
    assert release.steps[-1].revert_to == STABLE
    assert release.revision == STABLE
    assert Reason.SWITCHED not in release.reasons()
    assert "success rate 70.00%" in d.message


def test_blue_green_inconclusive_preview_pauses_with_the_request_count() -> None:
    release = blue_green(windows=["few"], analysis=Analysis(**THRESHOLDS)).run()
    assert release.d.phase == Phase.PAUSED
    assert "5 requests" in release.d.paused_reason
    assert release.d.switched_at is None
    d = release.resume().run().d  # the next preview window is good
    assert d.phase == Phase.SUCCEEDED
    assert d.switched_at == T0 + 20  # one window after the resume


@pytest.mark.parametrize(
    ("limit", "windows", "back_at"),
    [
        (1, ["good", "bad"], 20.0),  # preview passes at +10, first soak window fails at +20
        (2, ["good", "bad", "bad"], 30.0),
        (2, ["good", "bad", "good", "bad", "bad"], 50.0),
    ],
)
def test_a_soak_failure_switches_back_to_blue(
    limit: int, windows: list[str], back_at: float
) -> None:
    analysis = Analysis(**THRESHOLDS, failure_limit=limit)
    release = blue_green(windows=windows, soak=60.0, analysis=analysis).run()
    d, last = release.d, release.steps[-1]
    assert d.phase == Phase.FAILED
    assert d.switched_at == T0 + 10
    assert d.finished_at == T0 + back_at
    # Stable weight 100 again, in the step that judged the last failed window.
    assert release.weights == [START, SWITCHED, w(100, 0)]
    assert last.revert_to == STABLE
    assert release.revision == STABLE
    assert release.reasons()[-3:] == [
        Reason.ANALYSIS_FAILED,
        Reason.SWITCHED_BACK,
        Reason.ANALYSIS_FAILED,
    ]
    assert {t.revision for t in settled(d, 4, release.revision)} == {STABLE}


def test_an_inconclusive_soak_window_pauses_after_the_switch() -> None:
    analysis = Analysis(**THRESHOLDS)
    release = blue_green(windows=["good", "good", "few"], soak=60.0, analysis=analysis).run()
    d = release.d
    assert d.phase == Phase.PAUSED
    assert "5 requests" in d.paused_reason
    assert d.updated_at == T0 + 30  # preview at +10 (switch), soak windows at +20 and +30
    assert d.weights == SWITCHED  # green keeps its traffic, blue stays warm
    assert all(STABLE in revisions_of(t) for t in slot_revisions(d, (), 4).values())
    # Resumed: the soak goes on to its end, then blue is retired.
    d = release.resume().run().d
    assert d.phase == Phase.SUCCEEDED
    assert d.finished_at == T0 + 70


# --- the rollback of a release ------------------------------------------------------------------


def rollback(replicas: int = 4) -> Deployment:
    return Deployment(
        id="web-3",
        service="web",
        kind=DeploymentKind.ROLLBACK,
        from_revision=NEW,
        to_revision=STABLE,
        replicas=replicas,
        config=RolloutConfig(parallelism=0),
        started_at=T0,
        updated_at=T0,
        progress_at=T0,
    )


@pytest.mark.parametrize(
    ("warm", "reason", "weights"),
    [
        ((1, 2, 3, 4), Reason.INSTANT_ROLLBACK, ((STABLE, 100),)),  # blue kept warm
        ((1, 2, 3), Reason.BATCH_STARTED, ()),  # slot 4's blue task is gone: rolling
        ((), Reason.BATCH_STARTED, ()),
    ],
)
def test_a_rollback_to_a_warm_revision_is_an_instant_switch(
    warm: tuple[int, ...], reason: Reason, weights: tuple[tuple[int, int], ...]
) -> None:
    tasks = [task(slot, NEW) for slot in range(1, 5)] + [task(slot, STABLE) for slot in warm]
    d = rollback_step(RolloutView(rollback(), 4, tasks, T0)).deployment
    assert d.decisions[0].reason == reason
    assert d.weights == weights
    assert d.target_slots == (1, 2, 3, 4)


def test_a_canary_awaiting_promotion_is_still_analysed_and_fails_on_a_bad_window() -> None:
    release = canary(
        [weight(10), pause()], windows=["good", "bad"], analysis=Analysis(**THRESHOLDS)
    ).run()
    assert release.d.phase == Phase.AWAITING_PROMOTION
    due = release.steps[-1].requeue_at
    assert due is not None  # the next window's end, though the operator has not acted
    release.now = due
    release.tick()  # the first window: good, still awaiting
    assert release.d.phase == Phase.AWAITING_PROMOTION
    assert release.d.decisions[-1].reason == Reason.ANALYSIS_PASSED
    release.now = release.steps[-1].requeue_at or INF
    step = release.tick()  # the second: bad
    assert release.d.phase == Phase.FAILED and release.d.weights == w(100, 0)
    assert step.revert_to == STABLE


# --- the slots while a release ends or a rollback starts -----------------------------------------


def test_a_failed_canary_leaves_every_slot_to_the_stable_revision_before_the_revert() -> None:
    """Between the failure being stored and the service reverted, the reconciler must not touch
    the stable tasks sharing a slot with a canary task."""
    failed = deployment(
        Strategy.CANARY, 4, phase=Phase.FAILED, target_slots=(1, 2), weights=w(100, 0)
    )
    assert slot_revisions(failed, [], 4) == {1: STABLE, 2: STABLE, 3: STABLE, 4: STABLE}


def test_an_undecided_rollback_keeps_the_warm_blue_tasks_beside_green() -> None:
    rollback = Deployment(
        id="web-3", service="web", kind=DeploymentKind.ROLLBACK, from_revision=NEW,
        to_revision=STABLE, replicas=2, config=RolloutConfig(), started_at=T0, updated_at=T0,
        progress_at=T0,
    )  # fmt: skip
    tasks = [task(1, NEW), task(1, STABLE), task(2, NEW), task(2, STABLE)]
    targets = slot_revisions(rollback, tasks, 2)
    assert {slot: set(revisions_of(t)) for slot, t in targets.items()} == {
        1: {NEW, STABLE}, 2: {NEW, STABLE},
    }  # fmt: skip
