"""The traffic of every node's ingress, for the leader's analysis: its own ingress's windows,
and the requests the other nodes' ingresses saw, sent here every ``PUSH`` seconds
(``warren.reporting``). A canary is judged on all of its traffic, wherever it came in.

Remote samples are kept in memory, per node and revision (the last ``RECENT_KEPT``, at most
``KEEP`` seconds), by every manager: one that takes over has the history of every ingress
(managers and workers alike) up to its last report; only a manager started afresh begins empty
(``minRequests`` guards against judging too little).

A manager whose ingress is a process of its own (``warren ingress``) gets that ingress's
traffic the same way, and keeps it as its own (``ReportedTraffic``): its analysis reads it, and
it passes it on to the other managers as it would its own ingress's."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..ports import RECENT_KEPT, MetricSource, Window

__all__ = ["KEEP", "ClusterTraffic", "ReportedTraffic", "Sample"]

KEEP = 900.0

Sample = tuple[float, float, bool]
"""(monotonic time here, latency in seconds, failed)."""


class ClusterTraffic:
    def __init__(self, local: MetricSource) -> None:
        self.local = local
        self._remote: dict[tuple[str, int], dict[str, deque[Sample]]] = {}
        self._adds = 0

    def add(
        self, node: str, service: str, revision: int, samples: Iterable[tuple[float, float, bool]]
    ) -> None:
        """``samples``: (age in seconds at arrival, latency, failed), oldest first."""
        now = time.monotonic()
        kept = self._remote.setdefault((service, revision), {})
        queue = kept.get(node)
        if queue is None:
            queue = kept[node] = deque(maxlen=RECENT_KEPT)
        for age, latency, failed in samples:
            queue.append((now - age, latency, failed))
        self._adds += 1
        if self._adds % 200 == 0:
            self._prune(now - KEEP)

    def _prune(self, before: float) -> None:
        """Forget samples older than KEEP: revisions long gone take no memory."""
        for key, nodes in list(self._remote.items()):
            for node, queue in list(nodes.items()):
                while queue and queue[0][0] < before:
                    queue.popleft()
                if not queue:
                    del nodes[node]
            if not nodes:
                del self._remote[key]

    def window(self, service: str, revision: int, seconds: float) -> Window:
        own = self.local.window(service, revision, seconds)
        nodes = self._remote.get((service, revision))
        if not nodes:
            return own
        since = time.monotonic() - seconds
        latencies = list(own.latencies)
        errors = own.errors
        for queue in nodes.values():
            for at, latency, failed in reversed(queue):
                if at < since:
                    break
                latencies.append(latency)
                errors += failed
        return Window(len(latencies), errors, tuple(latencies))


FRESH = 1.0
"""A report this recent says what the ingress answered up to its arrival (it reports every
0.1 s to the server that supervises it, while it has traffic)."""


class ReportedTraffic:
    """This node's ingress's traffic, as that ingress reports it from its own process: a
    ``MetricSource`` for the analysis, and what the reporter passes on to the other managers
    (``samples_since``, as ``Ingress.samples_since``).

    A window ends when the last report came, not now: the requests answered since are not here
    yet, and a window that ended now would miss them — reported every 0.5 s, a window of 1 s
    held 16 of a canary's 30 requests, inconclusive against ``minRequests: 20`` (hence the
    0.1 s reports of the server's own ingress). Once the reports stop (no traffic), windows
    end now."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._recent: dict[tuple[str, int], deque[Sample]] = {}
        self._adds = 0
        self._reported_at = 0.0

    def add(
        self, service: str, revision: int, samples: Iterable[tuple[float, float, bool]]
    ) -> None:
        """``samples``: (age in seconds at arrival, latency, failed), oldest first."""
        now = self._reported_at = self._monotonic()
        queue = self._recent.get((service, revision))
        if queue is None:
            queue = self._recent[(service, revision)] = deque(maxlen=RECENT_KEPT)
        last = queue[-1][0] if queue else 0.0
        for age, latency, failed in samples:
            # In order, whatever each report's time in transit: ``samples_since`` (which takes
            # what is strictly after a time) relies on it.
            last = max(now - age, math.nextafter(last, math.inf))
            queue.append((last, latency, failed))
        self._adds += 1
        if self._adds % 200 == 0:
            before = now - KEEP
            for key, kept in list(self._recent.items()):
                if not kept or kept[-1][0] < before:
                    del self._recent[key]

    def window(self, service: str, revision: int, seconds: float) -> Window:
        queue = self._recent.get((service, revision))
        if not queue:
            return Window(0, 0, ())
        now = self._monotonic()
        end = self._reported_at if now - self._reported_at < FRESH else now
        since = end - seconds
        latencies: list[float] = []
        errors = 0
        for at, latency, failed in reversed(queue):
            if at < since:
                break
            latencies.append(latency)
            errors += failed
        return Window(len(latencies), errors, tuple(latencies))

    def samples_since(self, since: float) -> list[tuple[str, int, list[Sample]]]:
        found = []
        for (service, revision), queue in self._recent.items():
            if not queue or queue[-1][0] <= since:
                continue
            newer = []
            for sample in reversed(queue):
                if sample[0] <= since:
                    break
                newer.append(sample)
            newer.reverse()
            found.append((service, revision, newer))
        return found
