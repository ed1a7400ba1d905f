"""The leader's view of every node's traffic: its own ingress's window plus what the others
sent, by age."""

from __future__ import annotations

from warren.control.traffic import KEEP, ClusterTraffic
from warren.ports import Window


class Own:
    def window(self, service: str, revision: int, seconds: float) -> Window:
        return Window(2, 1, (0.01, 0.02)) if (service, revision) == ("web", 2) else Window(0, 0, ())


def test_a_window_holds_the_own_ingress_and_the_recent_samples_of_every_node() -> None:
    traffic = ClusterTraffic(Own())
    traffic.add("w1", "web", 2, [(30.0, 0.5, True), (1.0, 0.03, False), (0.5, 0.04, True)])
    traffic.add("w2", "web", 2, [(0.2, 0.05, False)])
    traffic.add("w2", "web", 1, [(0.2, 0.9, True)])
    window = traffic.window("web", 2, 10)
    assert window.requests == 5  # 2 own + 2 of w1 within 10 s + 1 of w2
    assert window.errors == 2
    assert sorted(window.latencies) == [0.01, 0.02, 0.03, 0.04, 0.05]
    assert traffic.window("web", 1, 10) == Window(1, 1, (0.9,))
    assert traffic.window("api", 1, 10) == Window(0, 0, ())


def test_samples_older_than_kept_are_forgotten() -> None:
    traffic = ClusterTraffic(Own())
    traffic.add("w1", "old", 1, [(KEEP + 60, 0.1, False)])
    for _ in range(200):  # the pruning runs now and then
        traffic.add("w1", "web", 3, [(0.1, 0.01, False)])
    assert traffic.window("old", 1, KEEP * 2) == Window(0, 0, ())
    assert ("old", 1) not in traffic._remote


def test_the_workers_of_one_node_add_up() -> None:
    """Two ingress workers of node w1 report on their own; a report of one (whose oldest
    sample is outside the window) must not hide the other's recent samples."""
    traffic = ClusterTraffic(Own())
    traffic.add("w1", "web", 2, [(2.0, 0.1, False), (1.0, 0.2, False)], worker=0)
    traffic.add("w1", "web", 2, [(5.0, 0.3, False), (0.5, 0.4, False)], worker=1)
    window = traffic.window("web", 2, 3.0)
    assert sorted(window.latencies) == [0.01, 0.02, 0.1, 0.2, 0.4]  # 2 own, 3 of w1
