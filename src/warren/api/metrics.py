"""Prometheus metrics of one server, collected at scrape time from the control plane's caches
and the data plane's counters (no global registry: each server has its own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..control.plane import ControlPlane
from ..domain.tasks import TaskState
from ..ports import LATENCY_BUCKETS, RouteStats

__all__ = ["build_metrics"]


class _WarrenCollector(Collector):
    def __init__(
        self, plane: ControlPlane, stats: Callable[[], Mapping[str, RouteStats]] | None
    ) -> None:
        self.plane = plane
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        services = GaugeMetricFamily("warren_services", "Services defined.")
        services.add_metric([], len(self.plane.services.items))
        yield services
        tasks = GaugeMetricFamily(
            "warren_tasks", "Tasks by service and observed state.", labels=["service", "state"]
        )
        counts: Counter[tuple[str, str]] = Counter(
            (t.service, str(t.state)) for t in self.plane.tasks.items.values()
        )
        for (service, state), n in sorted(counts.items()):
            tasks.add_metric([service, state], n)
        yield tasks
        ready = GaugeMetricFamily(
            "warren_tasks_ready", "Ready tasks by service.", labels=["service"]
        )
        ready_counts: Counter[str] = Counter(
            t.service
            for t in self.plane.tasks.items.values()
            if t.ready and t.state == TaskState.RUNNING
        )
        for service, n in sorted(ready_counts.items()):
            ready.add_metric([service], n)
        yield ready
        nodes = GaugeMetricFamily("warren_nodes", "Nodes by status.", labels=["status"])
        node_counts = Counter(str(n.status) for n in self.plane.nodes.items.values())
        for status, n in sorted(node_counts.items()):
            nodes.add_metric([status], n)
        yield nodes
        if self.stats is None:
            return
        stats = self.stats()
        requests = CounterMetricFamily(
            "warren_ingress_requests", "Requests through the ingress.", labels=["service"]
        )
        errors = CounterMetricFamily(
            "warren_ingress_errors_5xx", "Responses with status >= 500.", labels=["service"]
        )
        inflight = GaugeMetricFamily(
            "warren_ingress_in_flight", "Requests in flight.", labels=["service"]
        )
        latency = HistogramMetricFamily(
            "warren_ingress_request_duration_seconds",
            "Time from request to the end of the response, through the ingress.",
            labels=["service"],
        )
        for service, s in sorted(stats.items()):
            requests.add_metric([service], s.requests)
            errors.add_metric([service], s.errors_5xx)
            inflight.add_metric([service], s.in_flight)
            cumulative, buckets = 0, []
            for bound, count in zip(
                [*LATENCY_BUCKETS, float("inf")], s.latency_counts, strict=False
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            latency.add_metric([service], buckets, s.latency_sum)
        yield requests
        yield errors
        yield inflight
        yield latency


def build_metrics(
    plane: ControlPlane, stats: Callable[[], Mapping[str, RouteStats]] | None
) -> Callable[[], bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WarrenCollector(plane, stats))
    return lambda: generate_latest(registry)
