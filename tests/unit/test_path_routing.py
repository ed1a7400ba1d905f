"""Path prefixes on the shared port, in the ingress's table: the longest prefix of a host wins,
on a segment boundary; a service of the host that claims no prefix takes the rest; a host
without prefixes is one dict lookup, as before; two services claiming one host and prefix."""

from __future__ import annotations

from warren.control.routing import route_for
from warren.domain.services import Service
from warren.domain.specs import ServiceSpec
from warren.ingress.routing import PathRoutes, RoutingTable, ServiceEntry
from warren.ports import Endpoint, Route


def route(name: str, host: str, *paths: str) -> Route:
    return Route(name, host=host, endpoints=(Endpoint(f"{name}:80", f"{name}.1", 1),), paths=paths)


def table(*routes: Route) -> RoutingTable:
    t = RoutingTable()
    t.apply({r.service: r for r in routes})
    return t


def who(t: RoutingTable, target: str, host: str = "shop.test") -> str | None:
    entry = t.for_request(host.encode(), target.encode())
    return entry.service if entry is not None else None


def test_the_longest_prefix_wins_and_the_rest_goes_to_the_catch_all() -> None:
    t = table(
        route("api", "shop.test", "/api"),
        route("v2", "shop.test", "/api/v2/"),
        route("assets", "shop.test", "/static", "/img"),
        route("web", "shop.test"),
    )
    assert who(t, "/api") == "api"
    assert who(t, "/api/v1/users") == "api"
    assert who(t, "/api/v2") == "v2"
    assert who(t, "/api/v2/users?page=2") == "v2"
    assert who(t, "/static/app.js") == "assets"
    assert who(t, "/img") == "assets"
    assert who(t, "/") == "web"
    assert who(t, "/checkout") == "web"
    assert who(t, "/api", host="SHOP.test:8080") == "api"


def test_a_prefix_matches_on_a_segment_boundary() -> None:
    t = table(route("api", "shop.test", "/api"), route("web", "shop.test"))
    assert who(t, "/api") == "api"
    assert who(t, "/api/") == "api"
    assert who(t, "/api?q=1") == "api"
    assert who(t, "/api/x/y") == "api"
    assert who(t, "/apis") == "web"
    assert who(t, "/ap") == "web"
    assert who(t, "/API") == "web"  # compared as sent: case and %XX included
    assert who(t, "/%61pi") == "web"


def test_absolute_form_targets_are_matched_by_their_path() -> None:
    t = table(route("api", "shop.test", "/api"), route("web", "shop.test"))
    assert who(t, "http://shop.test:8080/api/x") == "api"
    assert who(t, "http://shop.test") == "web"
    assert who(t, "*") == "web"


def test_without_a_catch_all_other_paths_have_no_service() -> None:
    t = table(route("api", "shop.test", "/api"))
    assert who(t, "/api/x") == "api"
    assert who(t, "/") is None
    assert who(t, "/other") is None
    assert isinstance(t.for_host(b"shop.test"), PathRoutes)  # the host has services


def test_slash_is_the_catch_all() -> None:
    t = table(route("api", "shop.test", "/api"), route("web", "shop.test", "/"))
    assert who(t, "/api/x") == "api"
    assert who(t, "/x") == "web"


def test_a_host_without_prefixes_is_one_lookup_as_before() -> None:
    t = table(route("web", "web.test"), route("api", "shop.test", "/api"))
    web = t.service("web")
    # Its service itself, cached by the raw header: no path compared.
    assert isinstance(web, ServiceEntry)
    assert t.for_host(b"web.test") is web
    assert t.for_host(b"web.test") is web
    assert t.for_request(b"web.test", b"/anything") is web
    assert t._hosts["web.test"] is web


def test_a_host_with_prefixes_falls_back_to_its_wildcard() -> None:
    t = table(route("api", "shop.example.com", "/api"), route("wild", "*.example.com"))
    assert who(t, "/api/x", host="shop.example.com") == "api"
    assert who(t, "/", host="shop.example.com") == "wild"
    assert who(t, "/api", host="other.example.com") == "wild"


def test_a_wildcard_with_prefixes_after_an_exact_host_with_prefixes() -> None:
    t = table(
        route("exact", "a.example.com", "/api"),
        route("wild-img", "*.example.com", "/img", "/api/v2"),
        route("wild", "*.example.com"),
    )
    assert who(t, "/api/v2/x", host="a.example.com") == "exact"  # the host first, then longest
    assert who(t, "/img/1", host="a.example.com") == "wild-img"
    assert who(t, "/", host="a.example.com") == "wild"
    assert who(t, "/api/v2", host="b.example.com") == "wild-img"


def test_routes_follow_updates() -> None:
    t = table(route("web", "shop.test"))
    assert who(t, "/api") == "web"
    assert t.apply({"api": route("api", "shop.test", "/api")})
    assert who(t, "/api") == "api"
    assert t.apply({"api": route("api", "shop.test", "/v1")})
    assert who(t, "/api") == "web"
    assert who(t, "/v1") == "api"
    assert t.apply({"api": None})
    assert t.for_host(b"shop.test") is t.service("web")


def test_one_host_and_prefix_for_two_services_the_holder_keeps_it() -> None:
    t = table(route("b", "shop.test", "/api"))
    t.apply({"a": route("a", "shop.test", "/api/", "/admin")})
    assert who(t, "/api") == "b"  # held before a came
    assert who(t, "/admin") == "a"  # its other prefix is its own
    assert t.host_conflicts == {
        "shop.test/api": "host shop.test path /api is claimed by a too; b has it"
    }
    t.apply({"b": None})
    assert who(t, "/api") == "a"
    assert t.host_conflicts == {}


def test_two_catch_alls_of_one_host_newcomers_by_name() -> None:
    t = table(route("b", "shop.test"), route("a", "shop.test", "/"), route("c", "x.test"))
    assert who(t, "/") == "a"
    assert t.host_conflicts == {"shop.test": "host shop.test is claimed by b too; a has it"}


def test_route_wire_form_keeps_paths_and_reads_old_forms() -> None:
    r = route("api", "shop.test", "/api", "/static")
    assert Route.from_wire(r.to_wire()) == r
    old = r.to_wire()
    del old["paths"]
    assert Route.from_wire(old).paths == ()


def test_the_route_of_a_service_carries_its_host_and_paths() -> None:
    spec = ServiceSpec.model_validate(
        {"name": "api", "command": ["x"], "host": "Shop.test", "paths": ["/api/", "/v1"]}
    )
    r = route_for(Service(spec=spec, revision=1, created_at=0, updated_at=0), [])
    assert (r.host, r.paths) == ("shop.test", ("/api", "/v1"))
