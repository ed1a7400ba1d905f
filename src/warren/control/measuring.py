"""Deployment metrics (the seed's Monitoring section), kept as plain numbers from what the
deployments informer observes; ``api/metrics.py`` exports them for Prometheus.

Counters move only on changes seen live — a restarted manager starts from zero, as any
Prometheus counter does after a restart; gauges are computed at scrape time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..store.informing import Informer

__all__ = ["DURATION_BUCKETS", "DeployMetrics", "Histogram"]

DURATION_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += value


Labels = tuple[str, str]  # (service, strategy)


class DeployMetrics:
    def __init__(self, deployments: Informer[Deployment]) -> None:
        self._informer = deployments
        self.success: dict[Labels, int] = defaultdict(int)
        self.failed: dict[Labels, int] = defaultdict(int)
        self.rollback: dict[Labels, int] = defaultdict(int)
        self.delay_seconds: dict[Labels, float] = defaultdict(float)
        self.duration: dict[Labels, Histogram] = {}
        self.batch_duration: dict[Labels, Histogram] = {}
        deployments.on_change(self._changed)

    def _changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        if new is None or not self._informer.synced:
            return  # the first listing is history, not something that happened now
        labels = (new.service, str(new.strategy))
        if old is None:
            if new.kind == DeploymentKind.ROLLBACK:
                self.rollback[labels] += 1
            return
        # Always touched, so that the series exists (at 0) once the service has had a rollout.
        self.delay_seconds[labels] += max(0.0, new.delay_total - old.delay_total)
        # The log keeps the last DECISIONS_KEPT: the count says how many of them are new.
        fresh = min(new.decision_count - old.decision_count, len(new.decisions))
        for decision in new.decisions[len(new.decisions) - fresh :] if fresh > 0 else ():
            if decision.reason == Reason.BATCH_READY and "batch_seconds" in decision.measured:
                batch = self.batch_duration.setdefault(labels, Histogram(BATCH_BUCKETS))
                batch.observe(float(decision.measured["batch_seconds"]))
        if old.phase == new.phase or new.kind != DeploymentKind.UPDATE:
            return
        if new.reverted_to is not None and old.reverted_to is None:
            # A canary or green that failed went back to its stable revision: a rollback,
            # without a rollback deployment.
            self.rollback[labels] += 1
        if new.phase == Phase.SUCCEEDED:
            self.success[labels] += 1
        elif new.phase in (Phase.FAILED, Phase.ROLLING_BACK):
            self.failed[labels] += 1
        else:
            return
        end = new.finished_at or new.updated_at
        self.duration.setdefault(labels, Histogram(DURATION_BUCKETS)).observe(end - new.started_at)
