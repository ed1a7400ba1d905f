"""Prometheus metrics of one server, collected at scrape time from the control plane's caches
and the data plane's counters (no global registry: each server has its own). A worker has no
control plane: its ``/metrics`` shows its ingress's counters only.

``contrib/prometheus/alerts.yml`` and ``contrib/grafana/warren.json`` are built on these names;
their tests check every name they use against a real scrape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..control.plane import ControlPlane
from ..domain.deployments import Deployment, DeploymentKind, Phase
from ..domain.nodes import NodeStatus
from ..domain.services import Service
from ..domain.tasks import TaskState
from ..ports import LATENCY_BUCKETS, DataPlane, RouteStats

__all__ = ["ServicePhase", "build_metrics", "service_phase"]


class ServicePhase(StrEnum):
    """Where a service's releases stand, for ``warren_deploy_phase``: its newest deployment's
    phase, with a release that ended badly kept as ``failed`` until a newer deployment."""

    IDLE = "idle"
    """No deployment yet, or the newest one succeeded (or was superseded)."""
    PROGRESSING = "progressing"
    PAUSED = "paused"
    AWAITING_PROMOTION = "awaiting_promotion"
    ROLLING_BACK = "rolling_back"
    """A rollback decided or running."""
    FAILED = "failed"
    """The newest release failed, or was rolled back (automatically or by the operator)."""


_LIVE = {
    Phase.PROGRESSING: ServicePhase.PROGRESSING,
    Phase.PAUSED: ServicePhase.PAUSED,
    Phase.AWAITING_PROMOTION: ServicePhase.AWAITING_PROMOTION,
    Phase.ROLLING_BACK: ServicePhase.ROLLING_BACK,
}


def service_phase(service: Service, newest: Deployment | None) -> tuple[ServicePhase, float]:
    """The service's phase and the Unix time it was entered.

    A release that fails with ``failureAction: rollback`` goes rolling_back, and a rollback
    deployment — now the newest — undoes it: while that runs the service is ``rolling_back``,
    and once it has succeeded the release it undid ended rolled back, so ``failed``. A
    rollback of a release that had succeeded (``rollback_of`` unset) is an ordinary change."""
    if newest is None:
        return ServicePhase.IDLE, service.created_at
    if newest.phase in _LIVE:
        rollback = newest.kind == DeploymentKind.ROLLBACK and newest.phase == Phase.PROGRESSING
        phase = ServicePhase.ROLLING_BACK if rollback else _LIVE[newest.phase]
        return phase, _entered(newest)
    ended = newest.finished_at if newest.finished_at is not None else newest.updated_at
    undid = newest.kind == DeploymentKind.ROLLBACK and newest.rollback_of is not None
    if newest.phase in (Phase.FAILED, Phase.ROLLED_BACK) or (
        newest.phase == Phase.SUCCEEDED and undid
    ):
        return ServicePhase.FAILED, ended
    return ServicePhase.IDLE, ended


def _entered(d: Deployment) -> float:
    """When ``d`` entered the phase it is in: the first of the milestones at its end that are
    all in that phase (a promotion keeps a rollout progressing; a resume starts it anew).
    Every transition that changes the phase records a milestone, at the decision's time."""
    since = d.started_at
    for milestone in reversed(d.milestones):
        if milestone.phase != d.phase:
            break
        since = milestone.time
    return since


class _WarrenCollector(Collector):
    def __init__(self, plane: ControlPlane | None, traffic: DataPlane | None) -> None:
        self.plane = plane
        self.traffic = traffic

    def collect(self) -> Iterable[Metric]:
        if self.plane is not None:
            yield from self._cluster(self.plane)
        if self.traffic is None:
            return
        yield from _traffic(
            "warren_ingress", ["service"], {(k,): v for k, v in self.traffic.stats().items()}
        )
        yield from _traffic(
            "warren_ingress_revision",
            ["service", "revision"],
            {(s, str(r)): v for (s, r), v in self.traffic.revision_stats().items()},
        )

    def _cluster(self, plane: ControlPlane) -> Iterable[Metric]:
        services = GaugeMetricFamily("warren_services", "Services defined.")
        services.add_metric([], len(plane.services.items))
        yield services
        tasks = GaugeMetricFamily(
            "warren_tasks", "Tasks by service and observed state.", labels=["service", "state"]
        )
        counts: Counter[tuple[str, str]] = Counter(
            (t.service, str(t.state)) for t in plane.tasks.items.values()
        )
        for (service, state), n in sorted(counts.items()):
            tasks.add_metric([service, state], n)
        yield tasks
        ready = GaugeMetricFamily(
            "warren_tasks_ready", "Ready tasks by service.", labels=["service"]
        )
        ready_counts: Counter[str] = Counter(
            t.service
            for t in plane.tasks.items.values()
            if t.ready and t.state == TaskState.RUNNING
        )
        for service, n in sorted(ready_counts.items()):
            ready.add_metric([service], n)
        yield ready
        yield from _nodes(plane)
        yield from _phases(plane)
        yield from self._deploy(plane)

    def _deploy(self, plane: ControlPlane) -> Iterable[Metric]:
        """The Go deploy package's deploy_* metrics, per service and strategy."""
        labels = ["service", "strategy"]
        total = GaugeMetricFamily(
            "warren_deploy_tasks_total", "Tasks of the service's deployment.", labels=labels
        )
        ready = GaugeMetricFamily(
            "warren_deploy_tasks_ready", "Ready tasks on the deployment's revision.", labels=labels
        )
        progress = GaugeMetricFamily(
            "warren_deploy_progress_percent", "Slots updated / replicas x 100.", labels=labels
        )
        for service, key in sorted(plane.latest.latest_key.items()):
            d = plane.deployments.items.get(key)
            if d is None:
                continue
            tasks = plane.index.tasks(service)
            lv = [service, str(d.strategy)]
            total.add_metric(lv, sum(1 for t in tasks if t.state.active))
            ready.add_metric(lv, sum(1 for t in tasks if t.ready and t.revision == d.to_revision))
            done = d.replicas if d.phase == Phase.SUCCEEDED else d.ready_slots
            progress.add_metric(lv, 100.0 * done / d.replicas if d.replicas else 100.0)
        yield total
        yield ready
        yield progress
        m = plane.metrics
        # Every service that has had a deployment has its counters, at 0 until something
        # happens: an alert on increase() sees the first rollback too (a series that appears
        # at 1 has no increase).
        seen = {
            (d.service, str(d.strategy))
            for key in plane.latest.latest_key.values()
            if (d := plane.deployments.items.get(key)) is not None
        }
        for name, help_text, values in (
            ("warren_deploy_success", "Deployments that succeeded.", m.success),
            ("warren_deploy_failed", "Deployments that failed or rolled back.", m.failed),
            ("warren_deploy_rollback", "Rollbacks executed.", m.rollback),
        ):
            counter = CounterMetricFamily(name, help_text, labels=labels)
            for service, strategy in sorted(seen | set(values)):
                counter.add_metric([service, strategy], values.get((service, strategy), 0))
            yield counter
        delay = CounterMetricFamily(
            "warren_deploy_delay_seconds", "Time spent in delays between batches.", labels=labels
        )
        for (service, strategy), seconds in sorted(m.delay_seconds.items()):
            delay.add_metric([service, strategy], seconds)
        yield delay
        for name, help_text, histograms in (
            ("warren_deploy_duration_seconds", "From a deployment's start to its end.", m.duration),
            ("warren_deploy_batch_duration_seconds", "From a batch's start to all ready.",
             m.batch_duration),
        ):  # fmt: skip
            family = HistogramMetricFamily(name, help_text, labels=labels)
            for (service, strategy), h in sorted(histograms.items()):
                family.add_metric([service, strategy], _buckets(h.bounds, h.counts), h.total)
            yield family


def _nodes(plane: ControlPlane) -> Iterable[Metric]:
    """Nodes by status (each status present, 0 included) and each node's own: a dashboard
    counts, an alert names the node."""
    nodes = GaugeMetricFamily("warren_nodes", "Nodes by status.", labels=["status"])
    node_counts = Counter(str(n.status) for n in plane.nodes.items.values())
    for status in sorted({*map(str, NodeStatus), *node_counts}):
        nodes.add_metric([status], node_counts.get(status, 0))
    yield nodes
    up = GaugeMetricFamily("warren_node_up", "1: the node is ready; 0: down.", labels=["node"])
    for node in sorted(plane.nodes.items.values(), key=lambda n: n.name):
        up.add_metric([node.name], 1 if node.status == NodeStatus.READY else 0)
    yield up


def _phases(plane: ControlPlane) -> Iterable[Metric]:
    """Per service: desired replicas, its phase (1 for the current one, 0 for the others),
    since when, and the failed analysis windows of its active deployment."""
    replicas = GaugeMetricFamily(
        "warren_service_replicas", "Replicas the service's spec asks for.", labels=["service"]
    )
    phase = GaugeMetricFamily(
        "warren_deploy_phase",
        "1 for the phase the service's releases are in, 0 for the others.",
        labels=["service", "phase"],
    )
    since = GaugeMetricFamily(
        "warren_deploy_phase_since_seconds",
        "Unix time the service entered its current phase.",
        labels=["service"],
    )
    failures = GaugeMetricFamily(
        "warren_deploy_analysis_failures",
        "Consecutive failed analysis windows of the service's active deployment.",
        labels=["service"],
    )
    for service in sorted(plane.services.items.values(), key=lambda s: s.name):
        name = service.name
        newest = plane.latest.latest(name)
        current, entered = service_phase(service, newest)
        replicas.add_metric([name], service.spec.replicas)
        for each in ServicePhase:
            phase.add_metric([name, str(each)], 1 if each == current else 0)
        since.add_metric([name], entered)
        live = newest if newest is not None and newest.active else None
        failures.add_metric([name], live.analysis_failures if live else 0)
    yield from (replicas, phase, since, failures)


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Non-cumulative counts per bound → Prometheus's cumulative buckets, +Inf last."""
    cumulative, buckets = 0, []
    for bound, count in zip([*bounds, float("inf")], counts, strict=False):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", float(cumulative)))
    return buckets


def _traffic(
    prefix: str, labels: list[str], stats: Mapping[tuple[str, ...], RouteStats]
) -> Iterable[Metric]:
    """The ingress's counters: per service (``warren_ingress_*``), or per service and revision
    (``warren_ingress_revision_*``, what a canary's Prometheus queries compare)."""
    what = "revision" if "revision" in labels else "service"
    requests = CounterMetricFamily(
        f"{prefix}_requests", f"Requests through the ingress, per {what}.", labels=labels
    )
    errors = CounterMetricFamily(
        f"{prefix}_errors_5xx", "Responses with status >= 500.", labels=labels
    )
    inflight = GaugeMetricFamily(f"{prefix}_in_flight", "Requests in flight.", labels=labels)
    latency = HistogramMetricFamily(
        f"{prefix}_request_duration_seconds",
        "Time from request to the end of the response, through the ingress.",
        labels=labels,
    )
    for key, s in sorted(stats.items()):
        values = list(key)
        requests.add_metric(values, s.requests)
        errors.add_metric(values, s.errors_5xx)
        inflight.add_metric(values, s.in_flight)
        latency.add_metric(values, _buckets(LATENCY_BUCKETS, s.latency_counts), s.latency_sum)
    yield from (requests, errors, inflight, latency)


def build_metrics(plane: ControlPlane | None, traffic: DataPlane | None) -> Callable[[], bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WarrenCollector(plane, traffic))
    return lambda: generate_latest(registry)
