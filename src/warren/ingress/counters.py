"""The ingress's traffic counters: per service and per revision (``RouteStats``: requests, 5xx,
latency histogram, the last requests for canary analysis), and the requests in flight per
upstream address, which a drain waits on.

A request updates one set of counters, its revision's (``sent``, then ``answered``); one that
reached no endpoint (a 503 without a ready task) is counted for its service. ``stats`` adds them
up per service when read (Prometheus scrapes), rather than every request paying for two sets.

The time of each request's sample, its latency, and the "now" of ``window`` come from the clock
given (``time.monotonic`` in production; a fake one in tests), never from the ``time`` module
itself: a request reads it twice, when it starts and when it is answered.

A revision's counters are a compiled class's fields (``Counts``), not a ``RouteStats``: counting
a request touches no Python object but the sample it keeps. They are copied into ``RouteStats``
when read.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final, final

from ..ports import LATENCY_BUCKETS, RECENT_KEPT, RouteStats, Sample, Window, newer, tally

__all__ = ["Counters", "Counts"]

_BUCKETS: Final = tuple(LATENCY_BUCKETS)
_LAST: Final = len(LATENCY_BUCKETS)
"""The +Inf bucket's index."""


@final
class Counts:
    """One revision's counters (or, for the requests that reached no endpoint, a service's):
    what ``RouteStats`` holds."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors_5xx = 0
        self.in_flight = 0
        self.latency_counts = [0] * (_LAST + 1)
        self.latency_sum = 0.0
        self.recent: deque[Sample] = deque(maxlen=RECENT_KEPT)
        """The last requests: (time answered, latency, failed)."""

    def count(self, now: float, elapsed: float, failed: bool) -> None:
        bucket = 0  # the first bucket at least ``elapsed`` (as bisect_left would find)
        while bucket < _LAST and _BUCKETS[bucket] < elapsed:
            bucket += 1
        self.requests += 1
        self.latency_counts[bucket] += 1
        self.latency_sum += elapsed
        if failed:
            self.errors_5xx += 1
        self.recent.append((now, elapsed, failed))

    def snapshot(self) -> RouteStats:
        return RouteStats(
            requests=self.requests,
            errors_5xx=self.errors_5xx,
            in_flight=self.in_flight,
            latency_counts=list(self.latency_counts),
            latency_sum=self.latency_sum,
        )


class Counters:
    """The counters of one ingress."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        """When a request started and was answered, and the end of a window: monotonic
        seconds."""
        self.services: dict[str, Counts] = {}
        """Per service, the requests that reached no endpoint (a 503 without a ready task)."""
        self.revisions: dict[tuple[str, int], Counts] = {}
        """Per (service, revision), the requests sent to one of its endpoints. A request is
        counted here or in ``services``, never in both: one set of counters to update per
        request, and ``stats()`` adds them up when read."""
        self.in_flight: dict[str, int] = {}
        """Per upstream address, the requests sent to it and not yet answered (and the tunnels
        open to it)."""
        self.drained: dict[str, list[asyncio.Future[None]]] = {}
        """The drains waiting for an address to have nothing in flight."""

    # ── one request ─────────────────────────────────────────────────────────────────────────

    def sent(self, service: str, revision: int, address: str) -> Counts:
        """Count a request in flight to ``address``, an endpoint of ``service``'s ``revision``;
        returns that revision's counters, for ``answered``."""
        in_flight = self.in_flight
        in_flight[address] = in_flight.get(address, 0) + 1
        key = (service, revision)
        rev = self.revisions.get(key) or self._revision(key)
        rev.in_flight += 1
        return rev

    def answered(
        self,
        rev: Counts | None,
        service: str,
        address: str | None,
        started: float,
        failed: bool,
    ) -> None:
        """Count a request answered now, started at ``started`` (the clock's time): ``rev``, the
        counters ``sent`` returned (None: it reached no endpoint), no longer in flight to
        ``address``."""
        now = self.clock()
        if rev is not None:
            rev.in_flight -= 1
            rev.count(now, now - started, failed)
        else:
            self._service(service).count(now, now - started, failed)  # (see ``stats``)
        if address is not None:
            count = self.in_flight[address] - 1
            if count > 0:
                self.in_flight[address] = count
            else:
                self.add_in_flight(address, -1)  # the last one: drain may be waiting

    def record(self, service: str, revision: int | None, elapsed: float, failed: bool) -> None:
        """Count a request answered now that another proxy served (HAProxy's log line): to
        ``revision``, or to ``service`` when it reached no endpoint."""
        now = self.clock()
        counts = self._service(service) if revision is None else self._revision((service, revision))
        counts.count(now, elapsed, failed)

    def add_in_flight(self, address: str, n: int) -> None:
        count = self.in_flight.get(address, 0) + n
        if count > 0:
            self.in_flight[address] = count
            return
        self.in_flight.pop(address, None)
        for fut in self.drained.pop(address, ()):
            if not fut.done():
                fut.set_result(None)

    # ── read ────────────────────────────────────────────────────────────────────────────────

    def stats(self) -> Mapping[str, RouteStats]:
        """Per service, since the ingress started (a snapshot)."""
        totals = {name: s.snapshot() for name, s in self.services.items()}
        for (service, _), rev in self.revisions.items():
            total = totals.get(service)
            if total is None:
                totals[service] = rev.snapshot()
            else:
                _add(total, rev)
        return totals

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        """Per (service, revision), since the ingress started (a snapshot): canary analysis
        compares these between revisions."""
        return {key: s.snapshot() for key, s in self.revisions.items()}

    def window(self, service: str, revision: int, seconds: float) -> Window:
        """``service``'s requests to ``revision`` over the last ``seconds`` (the most recent
        RECENT_KEPT of them at most): the input of canary analysis."""
        stats = self.revisions.get((service, revision))
        if stats is None:
            return Window(0, 0, ())
        latencies: list[float] = []
        errors = tally(stats.recent, self.clock() - seconds, latencies)
        return Window(len(latencies), errors, tuple(latencies))

    def samples_since(self, since: float) -> list[tuple[str, int, list[Sample]]]:
        """(service, revision, requests answered after the clock's time ``since``: (time,
        latency, failed), oldest first) — what a node sends to the leader's analysis."""
        return [
            (service, revision, newer(stats.recent, since))
            for (service, revision), stats in self.revisions.items()
            if stats.recent and stats.recent[-1][0] > since
        ]

    def _service(self, service: str) -> Counts:
        stats = self.services.get(service)
        if stats is None:
            stats = self.services[service] = Counts()
        return stats

    def _revision(self, key: tuple[str, int]) -> Counts:
        stats = self.revisions.get(key)
        if stats is None:
            stats = self.revisions[key] = Counts()
        return stats


def _add(total: RouteStats, stats: Counts) -> None:
    total.requests += stats.requests
    total.errors_5xx += stats.errors_5xx
    total.in_flight += stats.in_flight
    total.latency_sum += stats.latency_sum
    for bucket, count in enumerate(stats.latency_counts):
        total.latency_counts[bucket] += count
