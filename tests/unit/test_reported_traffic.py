"""The traffic an ingress of its own process reports to the server that supervises it: the
analysis's windows end at the last report (what came since is not here yet), and what is passed
on to the other managers comes out in order, once."""

from __future__ import annotations

from warren.control.traffic import FRESH, ReportedTraffic
from warren.ports import Window


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_ends_at_the_last_report_while_reports_come() -> None:
    clock = Clock()
    traffic = ReportedTraffic(clock)
    # 0.1 s ago (at its send) the ingress had answered these: 1.0, 0.6 and 0.2 s before.
    traffic.add("web", 2, [(1.1, 0.01, False), (0.7, 0.02, True), (0.3, 0.03, False)])
    clock.now += 0.09  # the next report is not here yet
    # A 1 s window: [last report - 1 s, last report], all three, not [now - 1 s, now].
    assert traffic.window("web", 2, 1.0) == Window(2, 1, (0.03, 0.02))
    assert traffic.window("web", 2, 1.2) == Window(3, 1, (0.03, 0.02, 0.01))
    assert traffic.window("web", 1, 10) == Window(0, 0, ())
    # No report for a while (no traffic): windows end now.
    clock.now += FRESH
    assert traffic.window("web", 2, 1.0) == Window(0, 0, ())


def test_samples_come_out_in_order_once() -> None:
    clock = Clock()
    traffic = ReportedTraffic(clock)
    traffic.add("web", 2, [(0.4, 0.01, False), (0.2, 0.02, False)])
    first = traffic.samples_since(0.0)
    assert [(s, r, [lat for _, lat, _ in samples]) for s, r, samples in first] == [
        ("web", 2, [0.01, 0.02])
    ]
    newest = first[0][2][-1][0]
    # A report slower in transit: its samples would date from before the last one's; they are
    # kept after it, so that what is sent from ``newest`` on misses none.
    clock.now += 0.05
    traffic.add("web", 2, [(0.3, 0.03, True)])
    (again,) = traffic.samples_since(newest)
    assert [lat for _, lat, _ in again[2]] == [0.03]
    assert traffic.samples_since(again[2][-1][0]) == []


def test_each_worker_s_window_ends_at_its_own_last_report() -> None:
    """Two ingress workers, 100 requests per second each, reporting every 0.1 s, 0.05 s apart:
    a 1 s window holds 1 s of each — 200 — where one end for both (the latest report) would
    miss the 0.05 s the other worker has not reported yet."""
    clock = Clock()
    traffic = ReportedTraffic(clock)
    for k in range(30):
        for worker, offset in ((0, 0.0), (1, 0.05)):
            clock.now = 1000 + k * 0.1 + offset
            samples = [(0.095 - i * 0.01, 0.01, False) for i in range(10)]  # oldest first
            traffic.add("web", 2, samples, worker=worker)
    clock.now += 0.01
    assert traffic.window("web", 2, 1.0).requests == 200
    # Passed on to the other managers: every sample, once, in order.
    passed = traffic.samples_since(0.0)
    assert [len(samples) for _, _, samples in passed] == [600]
    times = [at for at, _, _ in passed[0][2]]
    assert times == sorted(times)
