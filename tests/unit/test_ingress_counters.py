"""The ingress's traffic counters on a clock the test moves: which requests a window holds and
which ``samples_since`` returns, at their boundaries, without waiting for time to pass."""

from __future__ import annotations

from bisect import bisect_left

import pytest

from warren.clocks import FakeClock
from warren.ingress import Ingress
from warren.ingress.counters import Counters, Counts
from warren.ports import LATENCY_BUCKETS, Window

ADDRESS = "127.0.0.1:9001"


def answer(counters: Counters, revision: int, elapsed: float, failed: bool = False) -> None:
    """One request to ``web``'s ``revision``, answered now after ``elapsed`` seconds."""
    rev = counters.sent("web", revision, ADDRESS)
    counters.answered(rev, "web", ADDRESS, counters.clock() - elapsed, failed)


def two_requests(clock: FakeClock, counters: Counters) -> None:
    """Revision 1 answers at 1000 (0.125 s, fine) and at 1010 (0.25 s, failed); it is now 1015."""
    answer(counters, 1, 0.125)
    clock.advance(10)
    answer(counters, 1, 0.25, failed=True)
    clock.advance(5)


def test_a_window_holds_the_requests_answered_from_its_start_on() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    two_requests(clock, counters)
    assert counters.window("web", 1, 5) == Window(1, 1, (0.25,))  # from 1010, its start included
    assert counters.window("web", 1, 4.5) == Window(0, 0, ())  # from 1010.5
    assert counters.window("web", 1, 15) == Window(2, 1, (0.25, 0.125))  # newest first
    assert counters.window("web", 2, 15) == Window(0, 0, ())  # never sent to
    clock.advance(1000)
    assert counters.window("web", 1, 15) == Window(0, 0, ())


def test_samples_since_are_those_answered_strictly_after() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    two_requests(clock, counters)
    assert counters.samples_since(1010) == []
    assert counters.samples_since(1009.5) == [("web", 1, [(1010.0, 0.25, True)])]
    assert counters.samples_since(999.5) == [
        ("web", 1, [(1000.0, 0.125, False), (1010.0, 0.25, True)])
    ]


def test_counts_and_in_flight() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    rev = counters.sent("web", 1, ADDRESS)
    assert counters.in_flight == {ADDRESS: 1}
    assert counters.revision_stats()[("web", 1)].in_flight == 1
    counters.answered(rev, "web", ADDRESS, 999.9, failed=False)  # started 0.1 s ago
    counters.answered(None, "web", None, 1000.0, failed=True)  # a 503: no endpoint
    assert counters.in_flight == {}
    total = counters.stats()["web"]
    assert (total.requests, total.errors_5xx, total.in_flight) == (2, 1, 0)
    assert total.latency_sum == pytest.approx(0.1)
    assert counters.revision_stats()[("web", 1)].requests == 1


@pytest.mark.parametrize(
    "elapsed", [0.0, LATENCY_BUCKETS[0], LATENCY_BUCKETS[0] * 1.01, *LATENCY_BUCKETS[-2:], 1e6]
)
def test_a_latency_counts_in_the_first_bucket_that_holds_it(elapsed: float) -> None:
    counts = Counts()
    counts.count(1000.0, elapsed, failed=False)
    assert counts.latency_counts.index(1) == bisect_left(LATENCY_BUCKETS, elapsed)  # +Inf last


def test_the_ingress_reads_its_windows_on_the_clock_it_is_given() -> None:
    clock = FakeClock(start=1000.0)
    ingress = Ingress(clock=clock.now)
    two_requests(clock, ingress._counters)
    assert ingress.window("web", 1, 5) == Window(1, 1, (0.25,))
    assert ingress.samples_since(1009.5) == [("web", 1, [(1010.0, 0.25, True)])]
