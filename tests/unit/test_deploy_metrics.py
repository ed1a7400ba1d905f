"""Deployment metrics count what the deployments informer sees happen (issue 12, item 13):
batches past the decision log's cap, and a canary's revert as a rollback. The phase gauge
(``warren_deploy_phase``) of a service, and since when, from its newest deployment."""

from __future__ import annotations

from typing import Any

import pytest

from warren.api.metrics import ServicePhase, service_phase
from warren.control.measuring import DeployMetrics
from warren.domain import transitions
from warren.domain.deployments import (
    DECISIONS_KEPT,
    Deployment,
    DeploymentKind,
    Reason,
    RolloutConfig,
)
from warren.domain.services import Service
from warren.domain.specs import ServiceSpec

T0 = 1000.0


class Feed:
    """Stands in for the deployments informer: synced, and the handler it is given."""

    synced = True

    def on_change(self, handler: Any) -> None:
        self.handler = handler

    def change(self, old: Deployment | None, new: Deployment) -> None:
        self.handler("/deployments/web/00000001", old, new)


def deployment(strategy: str = "rolling") -> Deployment:
    return Deployment(
        id="web-1", service="web", strategy=strategy, from_revision=1, to_revision=2,
        replicas=4, config=RolloutConfig(), started_at=T0, updated_at=T0, progress_at=T0,
    )  # fmt: skip


def test_a_batch_past_the_decision_log_cap_is_measured() -> None:
    """Before: new decisions were read as those past the old log's length, so once the log
    was full no batch was measured."""
    feed = Feed()
    metrics = DeployMetrics(feed)  # type: ignore[arg-type]
    d = deployment()
    for i in range(DECISIONS_KEPT):
        d = d.decide(T0 + i, Reason.BATCH_STARTED, f"batch {i}")
    ready = d.decide(T0 + 300, Reason.BATCH_READY, "batch ready", measured={"batch_seconds": 2.0})
    feed.change(d, ready)
    histogram = metrics.batch_duration[("web", "rolling")]
    assert sum(histogram.counts) == 1 and histogram.total == 2.0


def test_a_failed_canary_that_went_back_to_stable_counts_as_a_rollback() -> None:
    feed = Feed()
    metrics = DeployMetrics(feed)  # type: ignore[arg-type]
    d = deployment("canary")
    failed = transitions.fail_and_revert(d, T0 + 5, Reason.ANALYSIS_FAILED, "bad", 1)
    feed.change(d, failed)
    assert metrics.rollback[("web", "canary")] == 1
    assert metrics.failed[("web", "canary")] == 1


SERVICE = Service(
    spec=ServiceSpec(name="web", command=["fake"], driver="fake"), revision=2,
    created_at=T0 - 100, updated_at=T0,
)  # fmt: skip


def _rollback(undoes: str | None) -> Deployment:
    d = deployment().model_copy(
        update={"id": "web-2", "kind": DeploymentKind.ROLLBACK, "rollback_of": undoes,
                "started_at": T0 + 7, "updated_at": T0 + 7}
    )  # fmt: skip
    return transitions.start(d, T0 + 7, Reason.AUTOMATIC_ROLLBACK, "rollback")


def _phases() -> list[tuple[str, Deployment | None, ServicePhase, float]]:
    started = transitions.start(deployment(), T0, Reason.NEW_REVISION, "update")
    paused = transitions.pause(started, T0 + 5, Reason.MANUAL_PAUSE, "paused")
    waiting = transitions.await_promotion(started, T0 + 3, "pause: {}")
    rollback = _rollback("web-1")
    manual = _rollback(None)
    return [
        ("no deployment: idle since the service was created", None, ServicePhase.IDLE, T0 - 100),
        ("a rollout", started, ServicePhase.PROGRESSING, T0),
        ("paused", paused, ServicePhase.PAUSED, T0 + 5),
        ("resumed: progressing anew", transitions.resume(paused, T0 + 9),
         ServicePhase.PROGRESSING, T0 + 9),
        ("a promotion keeps it progressing",
         transitions.promote(started, T0 + 4, full=True, message="promote"),
         ServicePhase.PROGRESSING, T0),
        ("awaiting promotion", waiting, ServicePhase.AWAITING_PROMOTION, T0 + 3),
        ("succeeded", transitions.finish(started, T0 + 8, Reason.COMPLETE, "done"),
         ServicePhase.IDLE, T0 + 8),
        ("failed", transitions.fail(started, T0 + 6, Reason.TASK_FAILED, "crashed"),
         ServicePhase.FAILED, T0 + 6),
        ("a canary that went back to stable",
         transitions.fail_and_revert(started, T0 + 6, Reason.ANALYSIS_FAILED, "bad", 1),
         ServicePhase.FAILED, T0 + 6),
        ("rollback decided", transitions.roll_back(started, T0 + 6, Reason.TASK_FAILED, "x", "y"),
         ServicePhase.ROLLING_BACK, T0 + 6),
        ("its rollback running", rollback, ServicePhase.ROLLING_BACK, T0 + 7),
        ("its rollback done: the release was rolled back",
         transitions.finish(rollback, T0 + 20, Reason.COMPLETE, "done"),
         ServicePhase.FAILED, T0 + 20),
        ("a rollback of a release that had succeeded, done",
         transitions.finish(manual, T0 + 20, Reason.COMPLETE, "done"),
         ServicePhase.IDLE, T0 + 20),
        ("its rollback failed",
         transitions.fail(rollback, T0 + 30, Reason.TASK_FAILED, "crashed"),
         ServicePhase.FAILED, T0 + 30),
    ]  # fmt: skip


@pytest.mark.parametrize(("what", "newest", "phase", "since"), _phases())
def test_the_phase_gauge_of_a_service(
    what: str, newest: Deployment | None, phase: ServicePhase, since: float
) -> None:
    assert service_phase(SERVICE, newest) == (phase, since), what
