"""The ingress's traffic counters on a clock the test moves: which requests a window holds and
which ``samples_since`` returns, at their boundaries, without waiting for time to pass."""

from __future__ import annotations

from warren.clocks import FakeClock
from warren.ingress import Ingress
from warren.ingress.counters import Counters
from warren.ports import Window

ADDRESS = "127.0.0.1:9001"


def answer(counters: Counters, revision: int, elapsed: float, failed: bool = False) -> None:
    """One request to ``web``'s ``revision``, sent and answered now."""
    rev = counters.sent("web", revision, ADDRESS)
    counters.answered(rev, "web", ADDRESS, elapsed, failed)


def two_requests(clock: FakeClock, counters: Counters) -> None:
    """Revision 1 answers at 1000 (0.1 s, fine) and at 1010 (0.2 s, failed); it is now 1015."""
    answer(counters, 1, 0.1)
    clock.advance(10)
    answer(counters, 1, 0.2, failed=True)
    clock.advance(5)


def test_a_window_holds_the_requests_answered_from_its_start_on() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    two_requests(clock, counters)
    assert counters.window("web", 1, 5) == Window(1, 1, (0.2,))  # from 1010, its start included
    assert counters.window("web", 1, 4.5) == Window(0, 0, ())  # from 1010.5
    assert counters.window("web", 1, 15) == Window(2, 1, (0.2, 0.1))  # newest first
    assert counters.window("web", 2, 15) == Window(0, 0, ())  # never sent to
    clock.advance(1000)
    assert counters.window("web", 1, 15) == Window(0, 0, ())


def test_samples_since_are_those_answered_strictly_after() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    two_requests(clock, counters)
    assert counters.samples_since(1010) == []
    assert counters.samples_since(1009.5) == [("web", 1, [(1010.0, 0.2, True)])]
    assert counters.samples_since(999.5) == [
        ("web", 1, [(1000.0, 0.1, False), (1010.0, 0.2, True)])
    ]


def test_counts_and_in_flight() -> None:
    clock = FakeClock(start=1000.0)
    counters = Counters(clock.now)
    rev = counters.sent("web", 1, ADDRESS)
    assert counters.in_flight == {ADDRESS: 1}
    assert counters.revision_stats()[("web", 1)].in_flight == 1
    counters.answered(rev, "web", ADDRESS, 0.1, failed=False)
    counters.answered(None, "web", None, 0.0, failed=True)  # a 503: no endpoint
    assert counters.in_flight == {}
    total = counters.stats()["web"]
    assert (total.requests, total.errors_5xx, total.in_flight) == (2, 1, 0)
    assert counters.revision_stats()[("web", 1)].requests == 1


def test_the_ingress_reads_its_windows_on_the_clock_it_is_given() -> None:
    clock = FakeClock(start=1000.0)
    ingress = Ingress(clock=clock.now)
    two_requests(clock, ingress._counters)
    assert ingress.window("web", 1, 5) == Window(1, 1, (0.2,))
    assert ingress.samples_since(1009.5) == [("web", 1, [(1010.0, 0.2, True)])]
