"""Sticky sessions during a canary: the routing table keeps a client on the revision its cookie
names while that revision gets traffic, without taking a turn from the weighted round-robin; the
routing controller gives a route its sticky cookie only while a canary with ``stickySessions``
has weights."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import SimCluster
from warren.control.routing import route_for
from warren.domain.deployments import Deployment, DeploymentKind, Phase, RolloutConfig
from warren.domain.services import Service
from warren.domain.specs import ServiceSpec, Strategy
from warren.ingress import Ingress
from warren.ingress.routing import RoutingTable, ServiceEntry
from warren.ports import Endpoint, Pin, Route

COOKIE = b"warren-revision="


def endpoints(revision: int, n: int, base: int) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(f"127.0.0.1:{base + i}", f"web.{i}.r{revision}", revision) for i in range(n)
    )


EPS = endpoints(1, 3, 1000) + endpoints(2, 1, 2000)


def entry(
    weights: tuple[tuple[int, int], ...] = ((1, 50), (2, 50)),
    pins: tuple[Pin, ...] = (),
    sticky: str | None = "warren-revision",
    eps: tuple[Endpoint, ...] = EPS,
) -> tuple[RoutingTable, ServiceEntry]:
    t = RoutingTable()
    t.apply({"web": Route("web", (8080,), None, eps, weights, pins, sticky)})
    e = t.service("web")
    assert e is not None
    return t, e


def cookie(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"web.test"), (b"Cookie", value)]


def request(e: ServiceEntry, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes | None]:
    """What the proxy does: (the revision that answers, the cookie its response sets)."""
    revision, sets = e.steer(headers) if e.steered else (None, None)
    endpoint = e.pick(revision)
    assert endpoint is not None
    return endpoint.revision, sets


# ── the routing table ───────────────────────────────────────────────────────────────────────────


def test_no_cookie_is_picked_by_weight_and_told_to_stick() -> None:
    _, e = entry()
    assert e.steered and e.sticky == COOKIE
    answers = [request(e, [(b"Host", b"web.test")]) for _ in range(100)]
    assert Counter(r for r, _ in answers) == {1: 50, 2: 50}
    assert {s for _, s in answers} == {COOKIE}


@pytest.mark.parametrize(
    "value",
    [
        b"warren-revision=2",
        b"a=b; warren-revision=2",
        b"a=b;warren-revision=2 ; c=d",
    ],
)
def test_a_valid_cookie_sticks_and_sets_nothing(value: bytes) -> None:
    _, e = entry()
    assert e.steer(cookie(value)) == (2, None)
    assert {request(e, cookie(value)) for _ in range(50)} == {(2, None)}


def test_sticky_requests_take_no_turn_from_the_weights() -> None:
    # Weights 90/10: sticky clients of revision 2 must not eat the new clients' 10%.
    _, e = entry(weights=((1, 90), (2, 10)))
    fresh = []
    for i in range(300):
        if i % 3:
            assert request(e, cookie(b"warren-revision=2")) == (2, None)
        else:
            fresh.append(request(e, [])[0])
    assert Counter(fresh) == {1: 90, 2: 10}


@settings(max_examples=60, deadline=None)
@given(weight=st.integers(1, 99), stuck=st.lists(st.sampled_from([1, 2, None]), max_size=300))
def test_fresh_clients_get_exact_shares_whatever_sticky_ones_do(
    weight: int, stuck: list[int | None]
) -> None:
    _, e = entry(weights=((1, 100 - weight), (2, weight)))
    fresh: list[int] = []
    for revision in stuck:
        if revision is not None:
            assert request(e, cookie(b"warren-revision=%d" % revision)) == (revision, None)
        fresh.append(request(e, [])[0])
        if len(fresh) == 100:
            assert Counter(fresh)[2] == weight
            fresh = []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"warren-revision=3", "not in the weights"),
        (b"warren-revision=", "empty"),
        (b"warren-revision=two", "not a number"),
        (b"warren-revision=-1", "not a number"),
        (b"warren-revision=" + b"9" * 5000, "absurdly long"),
        (b"xwarren-revision=2", "another cookie"),
        (b"other=warren-revision=2", "another cookie's value"),
    ],
)
def test_an_unusable_cookie_is_ignored(value: bytes, why: str) -> None:
    _, e = entry(weights=((1, 0), (2, 100)))
    assert request(e, cookie(value)) == (2, COOKIE), why


def test_weight_zero_moves_the_client_and_resets_its_cookie() -> None:
    t, e = entry()
    assert request(e, cookie(b"warren-revision=2")) == (2, None)
    # The canary fails: weight 0 from the next request on.
    t.apply({"web": Route("web", (8080,), None, EPS, ((1, 100), (2, 0)), (), "warren-revision")})
    assert request(e, cookie(b"warren-revision=2")) == (1, COOKIE)
    assert request(e, cookie(b"warren-revision=1")) == (1, None)


def test_a_revision_without_active_endpoints_moves_the_client() -> None:
    t, e = entry()
    t.drain("127.0.0.1:2000")  # revision 2's only endpoint
    assert request(e, cookie(b"warren-revision=2")) == (1, COOKIE)


def test_pins_beat_the_cookie_and_set_none() -> None:
    pins = (Pin(2, header="X-Warren-Preview"), Pin(1, cookie="group", value="a"))
    _, e = entry(weights=((1, 50), (2, 50)), pins=pins)
    assert e.steer([(b"X-Warren-Preview", b"1"), *cookie(b"warren-revision=1")]) == (2, None)
    assert e.steer(cookie(b"group=a; warren-revision=2")) == (1, None)
    assert e.steer(cookie(b"warren-revision=2")) == (2, None)  # no pin matches: the cookie


def test_without_weights_or_sticky_cookie_nothing_is_steered() -> None:
    _, plain = entry(sticky=None)
    assert not plain.steered and plain.sticky is None
    _, unweighted = entry(weights=())
    assert not unweighted.steered and unweighted.sticky is None
    _, pinned = entry(sticky=None, pins=(Pin(2, header="X-Warren-Preview"),))
    assert pinned.steered and pinned.steer(cookie(b"warren-revision=2")) == (None, None)


def test_after_promotion_a_leftover_cookie_is_ignored() -> None:
    t, e = entry()
    promoted = endpoints(2, 2, 2000)
    t.apply({"web": Route("web", (8080,), None, promoted)})
    assert not e.steered
    assert Counter(request(e, cookie(b"warren-revision=1"))[0] for _ in range(4)) == {2: 4}


# ── the routing controller's route ──────────────────────────────────────────────────────────────


def spec(**deploy: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": "web", "command": ["app"], "replicas": 2, "deploy": deploy}
    )


STICKY = spec(strategy="canary", canary={"stickySessions": True, "steps": [{"setWeight": 50}]})


def deployment(
    weights: tuple[tuple[int, int], ...] = ((1, 50), (2, 50)),
    *,
    strategy: Strategy = Strategy.CANARY,
    kind: DeploymentKind = DeploymentKind.UPDATE,
    phase: Phase = Phase.PROGRESSING,
) -> Deployment:
    return Deployment(
        id="web-2",
        service="web",
        kind=kind,
        strategy=strategy,
        from_revision=1,
        to_revision=2,
        replicas=2,
        config=RolloutConfig(),
        phase=phase,
        weights=weights,
        started_at=0,
        updated_at=0,
        progress_at=0,
    )


def sticky_cookie(d: Deployment | None, release: ServiceSpec | None = STICKY) -> str | None:
    service = Service(spec=release or STICKY, revision=2, created_at=0, updated_at=0)
    return route_for(service, [], d, release).sticky_cookie


def test_a_sticky_canary_with_weights_gives_the_route_its_cookie() -> None:
    assert sticky_cookie(deployment()) == "warren-revision"
    named = spec(strategy="canary", canary={"stickySessions": True, "stickyCookie": "rev"})
    assert sticky_cookie(deployment(), named) == "rev"
    # Failed: stable 100, canary 0 — the canary's sticky clients must be moved, with a cookie.
    failed = deployment(((1, 100), (2, 0)), phase=Phase.FAILED)
    assert sticky_cookie(failed) == "warren-revision"


@pytest.mark.parametrize(
    ("d", "release", "why"),
    [
        (deployment(), spec(strategy="canary", canary={"steps": []}), "not sticky"),
        (deployment(), None, "new revision's spec unknown"),
        (deployment(()), STICKY, "promoted: no weights"),
        (deployment(((2, 100),)), STICKY, "one revision only"),
        (None, STICKY, "no deployment"),
        (deployment(strategy=Strategy.BLUE_GREEN), STICKY, "blue/green"),
        (deployment(((2, 100), (1, 0)), kind=DeploymentKind.ROLLBACK), STICKY, "rollback"),
    ],
)
def test_no_sticky_cookie_otherwise(
    d: Deployment | None, release: ServiceSpec | None, why: str
) -> None:
    assert sticky_cookie(d, release) is None, why


async def test_the_routing_controller_routes_a_sticky_canary_only_while_it_has_weights() -> None:
    ingress = Ingress()  # no port bound: the spec publishes none
    sim = await SimCluster(nodes=1, dataplane=ingress).start()
    try:
        base = ServiceSpec.model_validate(
            {
                "name": "web",
                "command": ["app"],
                "driver": "fake",
                "replicas": 2,
                "env": {"VERSION": "v1", "FAKE_READY_AFTER": "1s"},
                "deploy": {
                    "strategy": "canary",
                    "canary": {
                        "stickySessions": True,
                        "steps": [{"setWeight": 50}, {"pause": "10s"}],
                    },
                },
            }
        )
        await sim.cluster.create_service(base)
        await sim.advance(2)
        assert ingress.routes["web"].sticky_cookie is None  # no canary yet

        await sim.cluster.update_service(
            "web", lambda s: s.model_copy(update={"env": {**s.env, "VERSION": "v2"}})
        )
        await sim.advance(2)
        route = ingress.routes["web"]
        assert route.weights == ((1, 50), (2, 50))
        assert route.sticky_cookie == "warren-revision"

        await sim.advance(12)  # the pause ends: promoted
        (latest,) = (await sim.cluster.list_deployments("web"))[-1:]
        assert latest.phase == Phase.SUCCEEDED
        route = ingress.routes["web"]
        assert (route.weights, route.sticky_cookie) == ((), None)
    finally:
        await sim.stop()
        await ingress.close()
