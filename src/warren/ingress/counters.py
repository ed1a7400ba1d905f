"""The ingress's traffic counters: per service and per revision (``RouteStats``: requests, 5xx,
latency histogram, the last requests for canary analysis), and the requests in flight per
upstream address, which a drain waits on.

A request updates one set of counters, its revision's (``sent``, then ``answered``); one that
reached no endpoint (a 503 without a ready task) is counted for its service. ``stats`` adds them
up per service when read (Prometheus scrapes), rather than every request paying for two sets.

The time of each request's sample, and the "now" of ``window``, come from the clock given
(``time.monotonic`` in production; a fake one in tests), never from the ``time`` module itself.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Mapping

from ..ports import LATENCY_BUCKETS, RouteStats, Sample, Window, newer, tally

__all__ = ["Counters"]


class Counters:
    """The counters of one ingress."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        """When a request was answered, and the end of a window: monotonic seconds."""
        self.services: dict[str, RouteStats] = {}
        """Per service, the requests that reached no endpoint (a 503 without a ready task)."""
        self.revisions: dict[tuple[str, int], RouteStats] = {}
        """Per (service, revision), the requests sent to one of its endpoints. A request is
        counted here or in ``services``, never in both: one set of counters to update per
        request, and ``stats()`` adds them up when read."""
        self.in_flight: dict[str, int] = {}
        """Per upstream address, the requests sent to it and not yet answered (and the tunnels
        open to it)."""
        self.drained: dict[str, list[asyncio.Future[None]]] = {}
        """The drains waiting for an address to have nothing in flight."""

    # ── one request ─────────────────────────────────────────────────────────────────────────

    def sent(self, service: str, revision: int, address: str) -> RouteStats:
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
        rev: RouteStats | None,
        service: str,
        address: str | None,
        elapsed: float,
        failed: bool,
    ) -> None:
        """Count a request answered after ``elapsed`` seconds: ``rev``, the counters ``sent``
        returned (None: it reached no endpoint), no longer in flight to ``address``."""
        bucket = bisect_left(LATENCY_BUCKETS, elapsed)
        if rev is not None:
            rev.in_flight -= 1
            rev.recent.append((self.clock(), elapsed, failed))
        stats = rev or self._service(service)  # (see ``stats``)
        stats.requests += 1
        stats.latency_counts[bucket] += 1
        stats.latency_sum += elapsed
        if failed:
            stats.errors_5xx += 1
        if address is not None:
            count = self.in_flight[address] - 1
            if count > 0:
                self.in_flight[address] = count
            else:
                self.add_in_flight(address, -1)  # the last one: drain may be waiting

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
        totals = {name: _copy(s) for name, s in self.services.items()}
        for (service, _), rev in self.revisions.items():
            total = totals.get(service)
            if total is None:
                totals[service] = _copy(rev)
            else:
                _add(total, rev)
        return totals

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        """Per (service, revision), since the ingress started (a snapshot): canary analysis
        compares these between revisions."""
        return {key: _copy(s) for key, s in self.revisions.items()}

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

    def _service(self, service: str) -> RouteStats:
        stats = self.services.get(service)
        if stats is None:
            stats = self.services[service] = RouteStats()
        return stats

    def _revision(self, key: tuple[str, int]) -> RouteStats:
        stats = self.revisions.get(key)
        if stats is None:
            stats = self.revisions[key] = RouteStats()
        return stats


def _copy(stats: RouteStats) -> RouteStats:
    return RouteStats(
        requests=stats.requests,
        errors_5xx=stats.errors_5xx,
        in_flight=stats.in_flight,
        latency_counts=list(stats.latency_counts),
        latency_sum=stats.latency_sum,
    )


def _add(total: RouteStats, stats: RouteStats) -> None:
    total.requests += stats.requests
    total.errors_5xx += stats.errors_5xx
    total.in_flight += stats.in_flight
    total.latency_sum += stats.latency_sum
    for bucket, count in enumerate(stats.latency_counts):
        total.latency_counts[bucket] += count
