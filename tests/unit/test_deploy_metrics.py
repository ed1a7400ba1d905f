"""Deployment metrics count what the deployments informer sees happen (issue 12, item 13):
batches past the decision log's cap, and a canary's revert as a rollback."""

from __future__ import annotations

from typing import Any

from warren.control.measuring import DeployMetrics
from warren.domain import transitions
from warren.domain.deployments import DECISIONS_KEPT, Deployment, Reason, RolloutConfig

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
