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

from ..ports import RECENT_KEPT, MetricSource, Sample, Window, newer, tally

__all__ = ["KEEP", "ClusterTraffic", "ReportedTraffic", "Sample"]

KEEP = 900.0

"""(monotonic time here, latency in seconds, failed)."""


class ClusterTraffic:
    def __init__(self, local: MetricSource) -> None:
        self.local = local
        self._remote: dict[tuple[str, int], dict[tuple[str, int], deque[Sample]]] = {}
        """Per (service, revision), per (node, ingress worker): the samples, oldest first."""
        self._adds = 0

    def add(
        self,
        node: str,
        service: str,
        revision: int,
        samples: Iterable[tuple[float, float, bool]],
        worker: int = 0,
    ) -> None:
        """``samples``: (age in seconds at arrival, latency, failed), oldest first, from one
        ingress ``worker`` of ``node`` (each reports on its own: their samples are kept apart,
        and a window adds them up)."""
        now = time.monotonic()
        kept = self._remote.setdefault((service, revision), {})
        queue = kept.get((node, worker))
        if queue is None:
            queue = kept[(node, worker)] = deque(maxlen=RECENT_KEPT)
        _append_in_order(queue, now, samples)
        self._adds += 1
        if self._adds % 200 == 0:
            self._prune(now - KEEP)

    def _prune(self, before: float) -> None:
        """Forget samples older than KEEP: revisions long gone take no memory."""
        for key, nodes in list(self._remote.items()):
            for source, queue in list(nodes.items()):
                while queue and queue[0][0] < before:
                    queue.popleft()
                if not queue:
                    del nodes[source]
            if not nodes:
                del self._remote[key]

    def window(self, service: str, revision: int, seconds: float) -> Window:
        own = self.local.window(service, revision, seconds)
        nodes = self._remote.get((service, revision))
        if not nodes:
            return own
        since = time.monotonic() - seconds
        latencies = list(own.latencies)
        errors = own.errors + sum(tally(queue, since, latencies) for queue in nodes.values())
        return Window(len(latencies), errors, tuple(latencies))


FRESH = 1.0
"""A report this recent says what the ingress answered up to its arrival (it reports every
0.1 s to the server that supervises it, while it has traffic)."""


class ReportedTraffic:
    """This node's ingress's traffic, as its workers report it from their own processes: a
    ``MetricSource`` for the analysis, and what the reporter passes on to the other managers
    (``samples_since``, as ``Ingress.samples_since``).

    A window ends when the last report came, not now: the requests answered since are not here
    yet, and a window that ended now would miss them — reported every 0.5 s, a window of 1 s
    held 16 of a canary's 30 requests, inconclusive against ``minRequests: 20`` (hence the
    0.1 s reports of the server's own ingress). Once the reports stop (no traffic), windows
    end now.

    Each ingress worker reports on its own, so each has its own last report, and a window
    adds up one window per worker, each ending at that worker's last report: two workers
    reporting 0.05 s apart, at 100 requests per second each, a 1 s window holds 200 — one end
    for both, the later report's, would miss the 5 requests the other has not reported yet."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._recent: dict[tuple[str, int], dict[int, deque[Sample]]] = {}
        """Per (service, revision), per worker: its samples, oldest first."""
        self._relayed: dict[tuple[str, int], deque[Sample]] = {}
        """Per (service, revision): every worker's samples in the order they came, for
        ``samples_since``."""
        self._adds = 0
        self._reported_at: dict[int, float] = {}
        """Per worker, when its last report came."""

    def add(
        self,
        service: str,
        revision: int,
        samples: Iterable[tuple[float, float, bool]],
        worker: int = 0,
    ) -> None:
        """``samples``: (age in seconds at arrival, latency, failed), oldest first, from
        ingress ``worker``."""
        samples = list(samples)
        now = self._reported_at[worker] = self._monotonic()
        key = (service, revision)
        queue = self._recent.setdefault(key, {}).get(worker)
        if queue is None:
            queue = self._recent[key][worker] = deque(maxlen=RECENT_KEPT)
        _append_in_order(queue, now, samples)
        relayed = self._relayed.get(key)
        if relayed is None:
            relayed = self._relayed[key] = deque(maxlen=RECENT_KEPT)
        _append_in_order(relayed, now, samples)
        self._adds += 1
        if self._adds % 200 == 0:
            self._prune(now - KEEP)

    def _prune(self, before: float) -> None:
        for key, workers in list(self._recent.items()):
            for worker, kept in list(workers.items()):
                if not kept or kept[-1][0] < before:
                    del workers[worker]
            if not workers:
                del self._recent[key]
                self._relayed.pop(key, None)

    def window(self, service: str, revision: int, seconds: float) -> Window:
        now = self._monotonic()
        latencies: list[float] = []
        errors = 0
        for worker, queue in self._recent.get((service, revision), {}).items():
            reported = self._reported_at.get(worker, 0.0)
            since = (reported if now - reported < FRESH else now) - seconds
            errors += tally(queue, since, latencies)
        return Window(len(latencies), errors, tuple(latencies))

    def samples_since(self, since: float) -> list[tuple[str, int, list[Sample]]]:
        return [
            (service, revision, newer(queue, since))
            for (service, revision), queue in self._relayed.items()
            if queue and queue[-1][0] > since
        ]


def _append_in_order(
    queue: deque[Sample], now: float, samples: Iterable[tuple[float, float, bool]]
) -> None:
    """Append samples given by age as times here, never before the last one kept: whatever
    each report's time in transit — or two reports of one worker crossing while it is
    replaced — the queue stays in order, which ``window`` (it stops at the first sample too
    old) and ``samples_since`` (it takes what is strictly after a time) rely on."""
    last = queue[-1][0] if queue else 0.0
    for age, latency, failed in samples:
        last = max(now - age, math.nextafter(last, math.inf))
        queue.append((last, latency, failed))
