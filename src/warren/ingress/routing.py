"""The routing table of the ingress: which service answers a published port, or a host (and path
prefix) on the shared port, and which of its endpoints gets the next request.

A plain data structure, updated by ``apply`` and read on every request: every read is a dict
lookup or an index (no scan of the routes, no regex) — but for a host whose services claim path
prefixes, where the request's path is compared with that host's prefixes, longest first. No I/O,
no asyncio, no clock. Must not import anything of Warren's but ``ports`` and ``domain``.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping

from ..domain.errors import ValidationError
from ..ports import Endpoint, Pin, Route

__all__ = ["PathRoutes", "RoutingTable", "ServiceEntry", "normalize_host", "normalize_prefix"]

_HOST_CACHE_SIZE = 4096
"""How many distinct raw Host headers keep their resolution. Past that the cache is cleared rather
than evicted one by one: a flood of random hosts then costs one clear per 4096 requests."""

_MISS = object()


def normalize_host(host: str) -> str:
    """``"Web.Example.COM:8080"`` → ``"web.example.com"``; ``"[::1]:80"`` → ``"[::1]"``.

    Lower case, no ``:port`` suffix, no trailing dot (``example.com.`` is ``example.com``)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def normalize_prefix(prefix: str) -> str:
    """``"/api/"`` → ``"/api"``: a path prefix as the table compares it, without its trailing
    slash (it matches on a segment boundary anyway); ``"/"`` → ``""``, which every path matches
    (the host's catch-all)."""
    return prefix.rstrip("/")


def _origin_path(target: bytes) -> bytes:
    """The path (and query) of a request target in absolute form (``http://h:80/api?q`` →
    ``/api?q``; ``http://h`` → ``/``); ``*`` (``OPTIONS *``) as it is, which no prefix matches."""
    scheme = target.find(b"://")
    if scheme < 0:
        return target
    slash = target.find(b"/", scheme + 3)
    return target[slash:] if slash >= 0 else b"/"


def _matches(pin: Pin, value: str) -> bool:
    if pin.match == "prefix":
        return value.startswith(pin.value)
    if pin.match == "regex":
        return re.search(pin.value, value) is not None  # re caches the compiled pattern
    return value == pin.value


def _holds(pin: Pin, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries the header (or the cookie) ``pin`` asks for, with a value
    that matches."""
    for name, raw in headers:
        lname = name.lower()
        if pin.header is not None and lname == pin.header.lower().encode():
            if _matches(pin, raw.strip().decode("latin-1")):
                return True
        elif pin.cookie is not None and lname == b"cookie":
            for part in raw.decode("latin-1").split(";"):
                key, eq, value = part.strip().partition("=")
                if eq and key == pin.cookie and _matches(pin, value):
                    return True
    return False


class _Group:
    """One revision of a weighted route: its weight, its active endpoints, its round-robin
    position, and the smooth weighted round-robin's running score."""

    __slots__ = ("active", "current", "next", "revision", "weight")

    def __init__(self, revision: int, weight: int) -> None:
        self.revision = revision
        self.weight = weight
        self.active: tuple[Endpoint, ...] = ()
        self.current = 0
        self.next = 0

    def pick(self) -> Endpoint:
        i = self.next if self.next < len(self.active) else 0
        self.next = i + 1
        return self.active[i]


class ServiceEntry:
    """One service as the ingress sees it. Entries are updated in place when the route changes,
    so a request holding one (to retry another endpoint) always sees the current endpoints, and
    the round-robin positions (and weighted scores) survive updates."""

    __slots__ = (
        "_eligible",
        "_groups",
        "_next",
        "_total",
        "active",
        "endpoints",
        "route",
        "service",
        "steered",
        "sticky",
    )

    def __init__(self, route: Route) -> None:
        self.service = route.service
        self.route = route
        self.endpoints: tuple[Endpoint, ...] = route.endpoints
        self.active: tuple[Endpoint, ...] = route.endpoints
        """The endpoints that get new requests: ``endpoints`` minus the draining ones."""
        self._next = 0
        self._groups: dict[int, _Group] = {}
        """Per revision, when the route has weights."""
        self._eligible: tuple[_Group, ...] = ()
        """The groups that take part in the weighted pick (a weight above 0, an active
        endpoint), and the sum of their weights: both change only with the route or a drain,
        so they are found then rather than on every pick."""
        self._total = 0
        self.sticky: bytes | None = None
        """``NAME=`` of the route's sticky cookie, when it has one and weights."""
        self.steered = False
        """Whether a request's headers may choose its revision (pins, sticky cookie): the one
        test the proxy makes per request before looking at them."""
        self._steering()

    def pick(self, revision: int | None = None) -> Endpoint | None:
        """The endpoint for the next request; None when there is none. ``revision``: a pinned
        request (preview, A/B) — only that revision's endpoints."""
        if revision is not None:
            return self._pick_revision(revision)
        if self._groups:
            return self._pick_weighted()
        active = self.active
        if not active:
            return None
        i = self._next
        if i >= len(active):
            # The list shrank since the last pick: start over rather than skip ahead.
            i = 0
        self._next = i + 1
        return active[i]

    def _pick_weighted(self) -> Endpoint | None:
        # Smooth weighted round-robin (as in nginx): every group gains its weight, the leader
        # is chosen and pays the total. Weights 10/90 give exactly 10 and 90 of every 100
        # consecutive picks, interleaved (not 10 in a row).
        best: _Group | None = None
        for g in self._eligible:
            g.current += g.weight
            if best is None or g.current > best.current:
                best = g
        if best is None:
            # No weighted revision has a ready endpoint: better any ready one than an error.
            return self.active[0] if self.active else None
        best.current -= self._total
        return best.pick()

    def _pick_revision(self, revision: int) -> Endpoint | None:
        group = self._groups.get(revision)
        if group is not None:
            return group.pick() if group.active else None
        same = [e for e in self.active if e.revision == revision]
        return same[self._next % len(same)] if same else None

    def pinned(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        """The revision a request is pinned to by one of the route's pins, if any: the first
        whose conditions all hold."""
        for pin in self.route.pins:
            if _holds(pin, headers) and all(_holds(more, headers) for more in pin.also):
                return pin.revision
        return None

    def steer(self, headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bytes | None]:
        """For a steered route: the revision the request must go to (None: the weights choose),
        and the ``NAME=`` of the sticky cookie its response must set (None: none to set)."""
        if self.route.pins:
            revision = self.pinned(headers)
            if revision is not None:
                # An explicit pin beats the sticky cookie, and must not become one: a preview
                # request would otherwise make the client stick to a revision with weight 0.
                return revision, None
        if self.sticky is None:
            return None, None
        revision = self.stuck_to(headers)
        return revision, self.sticky if revision is None else None

    def stuck_to(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        """The revision the request's sticky cookie names, if that revision still gets new
        requests (a weight above 0 and an active endpoint); else None, and the weights choose."""
        prefix = self.sticky
        if prefix is None:
            return None
        for name, value in headers:
            if len(name) != 6 or name.lower() != b"cookie":
                continue
            for part in value.split(b";"):
                part = part.strip()
                if not part.startswith(prefix):
                    continue
                number = part[len(prefix) :]
                # Bounded: int() of thousands of digits raises (and costs) for nothing.
                if not (0 < len(number) <= 9 and number.isdigit()):
                    return None
                group = self._groups.get(int(number))
                if group is None or group.weight <= 0 or not group.active:
                    return None
                return group.revision
        return None

    def pick_other(self, tried: Container[str], revision: int | None = None) -> Endpoint | None:
        """The next active endpoint whose address is not in ``tried`` (each endpoint at most once
        per request, when connecting to the previous ones failed); of ``revision`` only, for a
        pinned or weighted request, so that a retry never changes the revision."""
        candidates = (
            self.active
            if revision is None
            else tuple(e for e in self.active if e.revision == revision)
        )
        for offset in range(len(candidates)):
            endpoint = candidates[(self._next + offset) % len(candidates)]
            if endpoint.address not in tried:
                self._next += offset + 1
                return endpoint
        return None

    def _steering(self) -> None:
        route = self.route
        cookie = route.sticky_cookie
        # Without weights there is one pool of endpoints: nothing to stick to.
        self.sticky = cookie.encode("latin-1") + b"=" if cookie and route.weights else None
        self.steered = bool(route.pins) or self.sticky is not None

    def _refresh(self, draining: Container[str]) -> None:
        self.active = tuple(e for e in self.endpoints if e.address not in draining)
        self._steering()
        if not self.route.weights:
            self._groups = {}
            self._eligible = ()
            self._total = 0
            return
        groups = {}
        for revision, weight in self.route.weights:
            group = self._groups.get(revision) or _Group(revision, weight)
            group.weight = weight
            group.active = tuple(e for e in self.active if e.revision == revision)
            groups[revision] = group
        self._groups = groups
        self._eligible = tuple(g for g in groups.values() if g.weight > 0 and g.active)
        self._total = sum(g.weight for g in self._eligible)

    def __repr__(self) -> str:
        return f"ServiceEntry({self.service!r}, active={len(self.active)}/{len(self.endpoints)})"


class PathRoutes:
    """The services of one host (on the shared port) when some of them claim path prefixes: its
    prefixes, longest first, each with its service, and the service of the host's other requests
    (``rest``: the one that claims no prefix, or ``/``; None: they get 404).

    A prefix matches on a segment boundary: ``/api`` matches ``/api``, ``/api/x`` and
    ``/api?q``, not ``/apis``. Paths are compared byte for byte as the client sent them (no
    decoding of ``%XX``, no removal of ``..``), and the target is forwarded unchanged."""

    __slots__ = ("prefixes", "rest")

    def __init__(
        self, prefixes: tuple[tuple[bytes, ServiceEntry], ...], rest: ServiceEntry | None
    ) -> None:
        self.prefixes = prefixes
        self.rest = rest

    def match(self, target: bytes) -> ServiceEntry | None:
        """The service for a request target (``/api/x?q``, or in absolute form)."""
        path = target if target[:1] == b"/" else _origin_path(target)
        size = len(path)
        for prefix, entry in self.prefixes:
            n = len(prefix)
            if size >= n and path.startswith(prefix):
                if size == n:
                    return entry
                after = path[n]
                if after == 47 or after == 63:  # "/" or "?": the prefix ends a segment
                    return entry
        return self.rest

    def __repr__(self) -> str:
        rest = self.rest.service if self.rest is not None else None
        return f"PathRoutes({[(p, e.service) for p, e in self.prefixes]!r}, rest={rest!r})"


HostRoutes = ServiceEntry | PathRoutes
"""What a host leads to: its one service (no prefixes: the hot path, one dict lookup), or its
services by path prefix."""


class RoutingTable:
    """Published port → service, host → service or services by path prefix (for the shared
    port), service → endpoints.

    Conflicts are settled the same way for ports and hosts (and a host's path prefixes): the
    service that holds a port (or host and prefix) keeps it; among newcomers the first by name
    wins. Lost claims are listed in ``port_conflicts`` and ``host_conflicts`` so that the
    ingress can report them.
    """

    def __init__(self) -> None:
        self._entries: dict[str, ServiceEntry] = {}
        self._ports: dict[int, ServiceEntry] = {}
        self._hosts: dict[str, HostRoutes] = {}
        self._wildcards: dict[str, HostRoutes] = {}
        """``*.example.com`` is stored as ``example.com``."""
        self._holders: dict[tuple[str, str], ServiceEntry] = {}
        """(host, normalized prefix; ``""``: the catch-all) → the service that has it."""
        self._host_cache: dict[bytes, HostRoutes | None] = {}
        self._addresses: dict[str, int] = {}
        self._draining: set[str] = set()
        self._port_conflicts: dict[int, str] = {}
        self._host_conflicts: dict[str, str] = {}

    # ── reads, once per request ──────────────────────────────────────────────────────────────

    def for_port(self, port: int) -> ServiceEntry | None:
        return self._ports.get(port)

    def for_host(self, raw: bytes) -> HostRoutes | None:
        """The service (or services by path prefix) for a raw ``Host`` header value (any case,
        maybe with ``:port``).

        The raw value is the cache key, so the common request costs one dict lookup: no decode,
        no lower-casing."""
        hit = self._host_cache.get(raw, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        entry = self.resolve_host(raw.decode("latin-1"))
        if len(self._host_cache) >= _HOST_CACHE_SIZE:
            self._host_cache.clear()
        self._host_cache[raw] = entry
        return entry

    def for_request(self, host: bytes, target: bytes) -> ServiceEntry | None:
        """The service for a request on the shared port: by its ``Host``, then its path. (The
        proxy inlines it: see ``downstream._Client._dispatch``.)"""
        hit = self.for_host(host)
        if hit is None or isinstance(hit, ServiceEntry):
            return hit
        return hit.match(target)

    def resolve_host(self, host: str) -> HostRoutes | None:
        """Exact host first, then the most specific wildcard: for ``a.b.example.com``,
        ``*.b.example.com`` wins over ``*.example.com``. ``*.example.com`` does not match
        ``example.com`` itself. A host whose services all claim prefixes (none is its catch-all)
        leaves its other paths to the next wildcard: its prefixes are tried first, then the
        wildcard's."""
        name = normalize_host(host)
        first = self._hosts.get(name)
        if first is not None and (isinstance(first, ServiceEntry) or first.rest is not None):
            return first
        if not self._wildcards:
            return first
        levels: list[PathRoutes] = [first] if first is not None else []
        while True:
            dot = name.find(".")
            if dot < 0:
                return _chain(levels, None)
            name = name[dot + 1 :]
            hit = self._wildcards.get(name)
            if hit is None:
                continue
            if isinstance(hit, ServiceEntry):
                return _chain(levels, hit)
            levels.append(hit)
            if hit.rest is not None:
                return _chain(levels, None)

    def service(self, name: str) -> ServiceEntry | None:
        return self._entries.get(name)

    def knows(self, address: str) -> bool:
        """Whether ``address`` is an endpoint of any route (draining or not)."""
        return address in self._addresses

    def is_draining(self, address: str) -> bool:
        return address in self._draining

    def routes_to(self, address: str) -> bool:
        """Whether new requests may go to ``address``: it is in a route and not draining."""
        return address in self._addresses and address not in self._draining

    @property
    def ports(self) -> Mapping[int, str]:
        """Published port → the service that holds it."""
        return {port: entry.service for port, entry in self._ports.items()}

    @property
    def port_conflicts(self) -> Mapping[int, str]:
        """Port → why a service that publishes it does not get it."""
        return dict(self._port_conflicts)

    @property
    def host_conflicts(self) -> Mapping[str, str]:
        """``host`` or ``host/prefix`` → why a service that claims it does not get it."""
        return dict(self._host_conflicts)

    @property
    def claims(self) -> Mapping[tuple[str, str], str]:
        """(host, path prefix; ``""``: the host's catch-all) → the service that has it."""
        return {claim: entry.service for claim, entry in self._holders.items()}

    @property
    def routes(self) -> Mapping[str, Route]:
        return {name: entry.route for name, entry in self._entries.items()}

    @property
    def draining(self) -> frozenset[str]:
        return frozenset(self._draining)

    # ── writes, on control-plane events ──────────────────────────────────────────────────────

    def apply(self, routes: Mapping[str, Route | None]) -> bool:
        """Set (or with None remove) the routes of the given services; the others stay.
        Returns whether any port or host claim (its paths, a port's TLS) changed.

        Incremental: the cost is that of the changed routes, not of the whole table (a
        rollout changes one service at a time among thousands)."""
        claims_changed = False
        for name, route in routes.items():
            entry = self._entries.get(name)
            if entry is not None:
                self._count(entry.endpoints, -1)
            if route is None:
                if entry is not None:
                    del self._entries[name]
                    # A request still holding it (to try another endpoint) finds none.
                    entry.endpoints = entry.active = ()
                    claims_changed |= bool(entry.route.ports or entry.route.host)
                continue
            if route.service != name:
                raise ValidationError(f"the route of {name!r} names service {route.service!r}")
            if entry is None:
                entry = self._entries[name] = ServiceEntry(route)
                claims_changed |= bool(route.ports or route.host)
            else:
                old = entry.route
                claims_changed |= (
                    old.ports != route.ports
                    or old.host != route.host
                    or old.paths != route.paths
                    or old.tls != route.tls
                )
                entry.route = route
                entry.endpoints = route.endpoints
            self._count(entry.endpoints, +1)
            entry._refresh(self._draining)
        # An address stays draining until it has left every route (a later update that still
        # lists it must not send it traffic again).
        self._draining = {a for a in self._draining if a in self._addresses}
        if claims_changed:
            self._rebuild_ports()
            self._rebuild_hosts()
        return claims_changed

    def _count(self, endpoints: tuple[Endpoint, ...], delta: int) -> None:
        """Keep count of how many routes list each address."""
        for e in endpoints:
            n = self._addresses.get(e.address, 0) + delta
            if n > 0:
                self._addresses[e.address] = n
            else:
                self._addresses.pop(e.address, None)

    def drain(self, address: str) -> None:
        """Send no new request to ``address`` (effective for the next pick), until it has left
        every route. An address in no route gets no traffic anyway, and is not remembered: a new
        task may later be given the same address."""
        if address in self._draining or address not in self._addresses:
            return
        self._draining.add(address)
        for entry in self._entries.values():
            if any(e.address == address for e in entry.endpoints):
                entry._refresh(self._draining)

    def _rebuild_ports(self) -> None:
        claims: dict[int, list[ServiceEntry]] = {}
        for name in sorted(self._entries):
            entry = self._entries[name]
            for port in dict.fromkeys(entry.route.ports):
                claims.setdefault(port, []).append(entry)
        ports: dict[int, ServiceEntry] = {}
        conflicts: dict[int, str] = {}
        for port, entries in claims.items():
            winner = _keep_holder(self._ports.get(port), entries)
            ports[port] = winner
            losers = [e.service for e in entries if e is not winner]
            if losers:
                others = ", ".join(losers)
                holder = winner.service
                conflicts[port] = f"port {port} is published by {others} too; {holder} has it"
        self._ports = ports
        self._port_conflicts = conflicts

    def _rebuild_hosts(self) -> None:
        claims: dict[tuple[str, str], list[ServiceEntry]] = {}
        for name in sorted(self._entries):
            entry = self._entries[name]
            route = entry.route
            if route.host:
                host = normalize_host(route.host)
                prefixes = [normalize_prefix(p) for p in route.paths] or [""]
                for prefix in dict.fromkeys(prefixes):
                    claims.setdefault((host, prefix), []).append(entry)
        holders: dict[tuple[str, str], ServiceEntry] = {}
        conflicts: dict[str, str] = {}
        for claim, entries in claims.items():
            winner = holders[claim] = _keep_holder(self._holders.get(claim), entries)
            losers = [e.service for e in entries if e is not winner]
            if losers:
                host, prefix = claim
                what = f"host {host} path {prefix}" if prefix else f"host {host}"
                key = host + prefix
                conflicts[key] = (
                    f"{what} is claimed by {', '.join(losers)} too; {winner.service} has it"
                )
        hosts: dict[str, HostRoutes] = {}
        wildcards: dict[str, HostRoutes] = {}
        for host, routes in _by_host(holders).items():
            if host.startswith("*."):
                wildcards[host[2:]] = routes
            else:
                hosts[host] = routes
        self._holders = holders
        self._hosts = hosts
        self._wildcards = wildcards
        self._host_conflicts = conflicts
        self._host_cache.clear()


def _by_host(holders: Mapping[tuple[str, str], ServiceEntry]) -> dict[str, HostRoutes]:
    """Per host, its one service (when no service of it claims a prefix), or its services by
    prefix, longest first: ``/api/v1`` is tried before ``/api``."""
    prefixed: dict[str, list[tuple[str, ServiceEntry]]] = {}
    rest: dict[str, ServiceEntry] = {}
    for (host, prefix), entry in holders.items():
        if prefix:
            prefixed.setdefault(host, []).append((prefix, entry))
        else:
            rest[host] = entry
    routes: dict[str, HostRoutes] = dict(rest)
    for host, claims in prefixed.items():
        claims.sort(key=lambda claim: (-len(claim[0]), claim[0]))
        ordered = tuple((prefix.encode(), entry) for prefix, entry in claims)
        routes[host] = PathRoutes(ordered, rest.get(host))
    return routes


def _chain(levels: list[PathRoutes], last: ServiceEntry | None) -> HostRoutes | None:
    """Hosts tried in turn (an exact host, then wildcards, most specific first): the first
    level's prefixes, then the next one's …, and at last the catch-all of the last level or
    ``last``. One level and nothing after it: that level itself."""
    if not levels:
        return last
    if len(levels) == 1 and last is None:
        return levels[0]
    prefixes: list[tuple[bytes, ServiceEntry]] = []
    for level in levels:
        prefixes.extend(level.prefixes)
    return PathRoutes(tuple(prefixes), last if last is not None else levels[-1].rest)


def _keep_holder(holder: ServiceEntry | None, claims: list[ServiceEntry]) -> ServiceEntry:
    """The current holder if it still claims, else the first claimant (claims are sorted)."""
    for entry in claims:
        if entry is holder:
            return entry
    return claims[0]
