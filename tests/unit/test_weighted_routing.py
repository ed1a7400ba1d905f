"""Weighted routing in the ingress's table: exact shares over any window of 100 requests,
interleaved; weights that change for the next request; pins by header and cookie."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warren.ingress.routing import RoutingTable
from warren.ports import Endpoint, Pin, Route


def endpoints(revision: int, n: int, base: int) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(f"127.0.0.1:{base + i}", f"web.{i}.r{revision}", revision) for i in range(n)
    )


def table(weights: tuple[tuple[int, int], ...], pins: tuple[Pin, ...] = ()) -> RoutingTable:
    t = RoutingTable()
    eps = endpoints(1, 5, 1000) + endpoints(2, 1, 2000)
    t.apply({"web": Route("web", (8080,), None, eps, weights, pins)})
    return t


def picks(t: RoutingTable, n: int) -> list[int]:
    entry = t.service("web")
    assert entry is not None
    out = []
    for _ in range(n):
        e = entry.pick()
        assert e is not None
        out.append(e.revision)
    return out


@settings(max_examples=60, deadline=None)
@given(weight=st.integers(0, 100), start=st.integers(0, 300))
def test_exact_share_over_any_window_of_100(weight: int, start: int) -> None:
    t = table(((1, 100 - weight), (2, weight)))
    seq = picks(t, start + 100)[start:]
    assert Counter(seq)[2] == weight


def test_small_weights_are_spread_not_bunched() -> None:
    seq = picks(table(((1, 90), (2, 10))), 100)
    positions = [i for i, r in enumerate(seq) if r == 2]
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    assert len(positions) == 10 and min(gaps) >= 9


def test_one_percent_with_one_replica() -> None:
    assert Counter(picks(table(((1, 99), (2, 1))), 1000))[2] == 10


def test_no_weights_share_by_endpoints() -> None:
    assert Counter(picks(table(()), 600)) == {1: 500, 2: 100}


def test_weight_change_applies_to_the_next_request() -> None:
    t = table(((1, 100), (2, 0)))
    assert set(picks(t, 50)) == {1}
    eps = t.service("web").endpoints  # type: ignore[union-attr]
    t.apply({"web": Route("web", (8080,), None, eps, ((1, 0), (2, 100)))})
    assert set(picks(t, 5)) == {2}


def test_a_weighted_revision_without_ready_endpoints_never_fails_the_request() -> None:
    t = RoutingTable()
    t.apply({"web": Route("web", (8080,), None, endpoints(1, 2, 1000), ((1, 50), (2, 50)))})
    assert set(picks(t, 20)) == {1}
    t.apply({"web": Route("web", (8080,), None, endpoints(2, 1, 2000), ((1, 100), (2, 0)))})
    assert set(picks(t, 5)) == {2}  # any ready endpoint rather than an error


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"X-Warren-Preview", b"1")], 2),
        ([(b"x-warren-preview", b" 1 ")], 2),
        ([(b"X-Warren-Preview", b"0")], None),
        ([(b"Cookie", b"a=b; canary=yes")], 2),
        ([(b"Cookie", b"canary=no")], None),
        ([], None),
    ],
)
def test_pins(headers: list[tuple[bytes, bytes]], expected: int | None) -> None:
    pins = (Pin(2, header="X-Warren-Preview"), Pin(2, cookie="canary", value="yes"))
    entry = table(((1, 100), (2, 0)), pins).service("web")
    assert entry is not None
    assert entry.pinned(headers) == expected
    if expected is not None:
        pinned = entry.pick(expected)
        assert pinned is not None and pinned.revision == 2


def test_a_retry_keeps_the_revision() -> None:
    entry = table(((1, 50), (2, 50))).service("web")
    assert entry is not None
    other = entry.pick_other(["127.0.0.1:2000"], revision=2)
    assert other is None  # revision 2 has one endpoint, already tried
    other = entry.pick_other(["127.0.0.1:1000"], revision=1)
    assert other is not None and other.revision == 1 and other.address != "127.0.0.1:1000"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"X-Beta", b"1"), (b"X-Team", b"payments-eu")], 2),  # both hold
        ([(b"X-Beta", b"1")], None),  # one of two: not enough
        ([(b"X-Beta", b"1"), (b"X-Team", b"search")], None),
        ([(b"User-Agent", b"Mozilla/5.0 (Android 14)")], 2),
        ([(b"User-Agent", b"Mozilla/5.0 (X11)")], None),
        ([(b"Cookie", b"a=b; tier=gold-plus")], 2),
        ([(b"Cookie", b"tier=silver")], None),
    ],
)
def test_header_routes_match_exactly_by_prefix_or_regex_all_of_their_matches(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    pins = (
        Pin(
            2,
            header="X-Beta",
            value="1",
            also=(Pin(2, header="x-team", value="payments", match="prefix"),),
        ),
        Pin(2, header="User-Agent", value=r"Android \d+", match="regex"),
        Pin(2, cookie="tier", value="gold", match="prefix"),
    )
    entry = table(((1, 100), (2, 0)), pins).service("web")
    assert entry is not None
    assert entry.pinned(headers) == expected


def test_a_route_with_header_routes_goes_over_the_wire_and_back() -> None:
    pin = Pin(2, header="X-Beta", value="1", also=(Pin(2, cookie="t", value="g.*", match="regex"),))
    route = Route("web", (8080,), None, (), ((1, 100), (2, 0)), (pin,))
    assert Route.from_wire(json.loads(json.dumps(route.to_wire()))) == route
