"""What Warren asks of HAProxy, worked out from the routes: the *layout* (frontends, backends, the
rules that pick a backend — what only a reload changes) and the *servers* with their weights and
the map entries (what the Runtime API changes, with no reload).

One backend per service, ``NAME``, whose servers are the service's endpoints weighted so that each
revision gets its exact share (``weights_of``); and, for a service with pins or a sticky cookie,
one backend per revision, ``NAME.rN``, where a pinned request or a client stuck to a revision
goes. Server names carry the revision: ``N-TASK``, so that a log line names its revision.

On the shared port, the backend is found from the request's host (and path) in maps
(``hosts.map``: exact hosts; ``wildcards.map``: ``*.example.com`` as ``.example.com``, most
specific first; ``paths.map``: ``HOST/PREFIX/``, longest first, matched against ``HOST/PATH/``
so that a prefix matches on a segment boundary). On a published port it is its service's.

Pure: no I/O. ``render`` writes the configuration text; the ``haproxy`` package applies it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from ..ingress.limits import Limits
from ..ingress.routing import RoutingTable
from ..ports import Endpoint, Pin, Route

__all__ = [
    "MAX_WEIGHT",
    "Files",
    "Layout",
    "Settings",
    "backend_of",
    "layout",
    "render",
    "revision_of",
    "server_name",
    "service_of",
    "weights_of",
]

MAX_WEIGHT = 256
"""HAProxy's largest server weight."""
LOG_FORMAT = "%b|%s|%ST|%Ta"
"""What each request's log line says: backend, server, status, total time (ms)."""
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True)
class Files:
    """The files of one HAProxy, in its directory (short names: a unix socket's path has at
    most 107 bytes)."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def runtime(self) -> Path:
        return self.dir / "rt.sock"

    @property
    def log(self) -> Path:
        return self.dir / "log.sock"

    @property
    def hosts(self) -> Path:
        return self.dir / "hosts.map"

    @property
    def wildcards(self) -> Path:
        return self.dir / "wildcards.map"

    @property
    def paths(self) -> Path:
        return self.dir / "paths.map"

    @property
    def draining(self) -> Path:
        return self.dir / "draining.map"

    def sticky(self, service: str) -> Path:
        return self.dir / f"sticky-{service}.map"


@dataclass(frozen=True)
class Settings:
    host: str
    shared_port: int | None
    limits: Limits = field(default_factory=Limits)
    stop_after: float = 35.0
    """An HAProxy replaced by a reload (or stopped) finishes its requests for at most this long."""
    threads: int | None = None
    """HAProxy's threads (None: one per core, its default)."""


# ── names ────────────────────────────────────────────────────────────────────────────────────


def backend_of(service: str, revision: int | None = None) -> str:
    """``web``, or ``web.r2`` for one revision's backend (a service's name has no dot)."""
    return service if revision is None else f"{service}.r{revision}"


def service_of(backend: str) -> str:
    return backend.partition(".")[0]


def server_name(endpoint: Endpoint) -> str:
    return f"{endpoint.revision}-{_NAME_UNSAFE.sub('_', endpoint.task_id)}"


def revision_of(server: str) -> int | None:
    """The revision a server's name carries (None: not one of Warren's, ``<NOSRV>``)."""
    number, dash, _ = server.partition("-")
    return int(number) if dash and number.isdigit() and len(number) <= 9 else None


# ── weights ──────────────────────────────────────────────────────────────────────────────────


def weights_of(route: Route, draining: Set[str]) -> dict[str, int]:
    """Per endpoint address, its server's weight in the service's backend: each revision's
    endpoints share its weight equally, so that revision r gets exactly weights[r] of every 100
    requests while the integers allow (HAProxy's round robin is smooth: 10/90 gives 1 then 9);
    a draining endpoint, or one of a revision at 0, gets 0. Without weights, or when no revision
    with a weight has a ready endpoint, every ready endpoint gets an equal share (better any
    ready one than an error, as the built-in ingress does)."""
    active = [e for e in route.endpoints if e.address not in draining]
    found = dict.fromkeys((e.address for e in route.endpoints), 0)
    counts = Counter(e.revision for e in active)
    shares = {r: w for r, w in route.weights if w > 0 and counts[r]}
    if not shares:
        found.update(dict.fromkeys((e.address for e in active), 1))
        return found
    common = math.lcm(*(counts[r] for r in shares))
    per_server = {r: w * common // counts[r] for r, w in shares.items()}
    divisor = math.gcd(*per_server.values())
    per_server = {r: v // divisor for r, v in per_server.items()}
    top = max(per_server.values())
    if top > MAX_WEIGHT:
        per_server = {r: max(1, round(v * MAX_WEIGHT / top)) for r, v in per_server.items()}
    for e in active:
        found[e.address] = per_server.get(e.revision, 0)
    return found


# ── the layout ───────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Server:
    address: str
    weight: int


@dataclass
class Layout:
    """What HAProxy must be told for ``routes``: the part a reload changes (``frontends``,
    ``backends``, ``pins``, ``sticky_cookies``, ``max_body``), and the part the Runtime API
    changes (``servers``, ``maps``)."""

    ports: dict[int, str] = field(default_factory=dict)
    """Published port → the service that holds it."""
    backends: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    """Backend → (service, revision or None for the weighted one)."""
    pins: dict[str, tuple[tuple[str, Pin], ...]] = field(default_factory=dict)
    """Service → its pins, each with the backend it leads to."""
    sticky_cookies: dict[str, str] = field(default_factory=dict)
    """Service → its sticky cookie's name (a route with weights and a cookie)."""
    servers: dict[str, dict[str, Server]] = field(default_factory=dict)
    """Backend → server name → address and weight."""
    maps: dict[Path, dict[str, str]] = field(default_factory=dict)
    """Map file → its entries (key → value), in the order they must be tried."""
    problems: dict[int, str] = field(default_factory=dict)
    """Per port, what of it cannot be served as asked (a port or host claimed twice, TLS)."""

    def skeleton(self) -> tuple[object, ...]:
        """What a reload is needed to change: equal skeletons, the Runtime API will do."""
        return (
            tuple(sorted(self.ports.items())),
            tuple(sorted(self.backends.items(), key=lambda kv: kv[0])),
            tuple(sorted(self.pins.items())),
            tuple(sorted(self.sticky_cookies.items())),
            tuple(sorted(self.maps)),
            # Matched in their order, which adding an entry at run time cannot choose.
            tuple(
                (str(path), tuple(self.maps[path].items()))
                for path in sorted(self.maps)
                if path.name in ("wildcards.map", "paths.map")
            ),
        )


def layout(table: RoutingTable, files: Files, shared_port: int | None) -> Layout:
    """The layout for the routes of ``table``: its draining addresses get no new request, and
    ports and hosts claimed twice are settled, and reported, as the built-in ingress does (the
    same table)."""
    routes, draining = table.routes, table.draining
    out = Layout(ports=dict(table.ports))
    problems: dict[int, list[str]] = {p: [why] for p, why in table.port_conflicts.items()}
    shared = [why for _, why in sorted(table.host_conflicts.items())]
    if shared_port is not None and shared_port in out.ports:
        service = out.ports.pop(shared_port)
        shared.insert(0, f"port {shared_port} is the shared port; {service} cannot publish it")
    for name, route in routes.items():
        for port, _, _ in route.tls:
            if out.ports.get(port) == name:
                del out.ports[port]
                problems.setdefault(port, []).append(
                    f"port {port} of {name}: TLS is not served by the haproxy data plane"
                )
    hosts: dict[str, str] = {}
    wildcards: dict[str, str] = {}
    paths: dict[str, str] = {}
    for (host, prefix), service in table.claims.items():
        if prefix and host.startswith("*."):
            shared.append(
                f"host {host} path {prefix} of {service}: path prefixes on a wildcard host are "
                "not served by the haproxy data plane"
            )
        elif prefix:
            paths[f"{host}{prefix}/"] = service
        elif host.startswith("*."):
            wildcards[host[1:]] = service
        else:
            hosts[host] = service
    if shared and shared_port is not None:
        problems.setdefault(shared_port, []).extend(shared)
    out.problems = {port: "; ".join(whys) for port, whys in problems.items()}
    out.maps[files.hosts] = hosts
    out.maps[files.wildcards] = dict(sorted(wildcards.items(), key=lambda kv: -len(kv[0])))
    out.maps[files.paths] = dict(sorted(paths.items(), key=lambda kv: (-len(kv[0]), kv[0])))
    draining_servers: dict[str, str] = {}
    for name in sorted(routes):
        route = routes[name]
        weights = weights_of(route, draining)
        out.backends[backend_of(name)] = (name, None)
        out.servers[backend_of(name)] = {
            server_name(e): Server(e.address, weights[e.address]) for e in route.endpoints
        }
        draining_servers.update(
            {server_name(e): "1" for e in route.endpoints if e.address in draining}
        )
        for revision in _steered_revisions(route):
            backend = backend_of(name, revision)
            out.backends[backend] = (name, revision)
            out.servers[backend] = {
                server_name(e): Server(e.address, 0 if e.address in draining else 1)
                for e in route.endpoints
                if e.revision == revision
            }
        if route.pins:
            out.pins[name] = tuple((backend_of(name, p.revision), p) for p in route.pins)
        if route.sticky_cookie and route.weights:
            out.sticky_cookies[name] = route.sticky_cookie
            ready = {e.revision for e in route.endpoints if e.address not in draining}
            out.maps[files.sticky(name)] = {
                str(r): backend_of(name, r) for r, w in route.weights if w > 0 and r in ready
            }
    out.maps[files.draining] = draining_servers
    return out


def _steered_revisions(route: Route) -> list[int]:
    """The revisions a request may be sent to by name: pinned ones, and with a sticky cookie
    every weighted one."""
    found = [p.revision for p in route.pins]
    if route.sticky_cookie and route.weights:
        found += [r for r, _ in route.weights]
    return sorted(set(found))


# ── the configuration text ───────────────────────────────────────────────────────────────────


def render(plan: Layout, settings: Settings, files: Files, servers: bool = True) -> str:
    """The configuration file: the layout, and (``servers``) the servers as they are now, so
    that an HAProxy (re)started from it serves at once what the Runtime API had set."""
    limits = settings.limits
    lines = [
        "# Written by Warren (warren ingress --data-plane haproxy): changes are lost.",
        "global",
        f"    stats socket {files.runtime} mode 600 level admin",
        f"    log unix@{files.log} len 4096 format raw local0",
        f"    hard-stop-after {_ms(settings.stop_after)}",
        f"    tune.http.maxhdr {limits.max_header_fields}",
        *([f"    nbthread {settings.threads}"] if settings.threads else []),
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        "    option idle-close-on-response",
        "    option forwardfor",
        "    option redispatch",
        "    retries 2",
        "    timeout connect 5s",
        f"    timeout client {_ms(limits.idle_timeout)}",
        f"    timeout http-request {_ms(limits.head_timeout)}",
        f"    timeout http-keep-alive {_ms(limits.idle_timeout)}",
        "    timeout server 1h",
        "    timeout tunnel 1h",
        "",
    ]
    if settings.shared_port is not None:
        lines += _frontend(
            "fe.shared",
            f"{_bind_host(settings.host)}:{settings.shared_port}",
            _shared_choice(files),
            sorted({service for service, _ in plan.backends.values()}),
            plan,
            files,
            limits,
            'lf-string "no service for host %[var(txn.host)]\\n"',
        )
    for port, service in sorted(plan.ports.items()):
        choice = [f"    http-request set-var(txn.be) str({service})"]
        lines += _frontend(
            f"fe.{port}",
            f"{_bind_host(settings.host)}:{port}",
            choice,
            [service],
            plan,
            files,
            limits,
            f'string "no service for port {port}\\n"',
        )
    for backend, (service, revision) in sorted(plan.backends.items()):
        lines += [f"backend {backend}", "    balance roundrobin"]
        lines.append(
            "    http-after-response set-status 504 if { status 502 } "
            f"{{ srv_name,map_str({files.draining}) -m found }}"
        )
        cookie = plan.sticky_cookies.get(service)
        if cookie is not None and revision is None:
            lines.append(
                f'    http-response add-header Set-Cookie "{cookie}=%[srv_name,field(1,-)]; '
                'Path=/; HttpOnly; SameSite=Lax"'
            )
        if servers:
            for name, server in sorted(plan.servers.get(backend, {}).items()):
                lines.append(f"    server {name} {server.address} weight {server.weight}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _frontend(
    name: str,
    bind: str,
    choice: list[str],
    services: Iterable[str],
    plan: Layout,
    files: Files,
    limits: Limits,
    not_found: str,
) -> list[str]:
    """A frontend: how its requests find their service (``choice``: ``txn.be`` set to it), the
    pins and sticky cookies of ``services``, then the service's backend, else 404."""
    lines = [
        f"frontend {name}",
        f"    bind {bind}",
        # What the built-in ingress tells a task of its client, with X-Forwarded-For.
        "    http-request set-header X-Forwarded-Proto http",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)] "
        "if { req.hdr(host) -m found }",
    ]
    if limits.max_body is not None:
        lines.append(
            "    http-request deny deny_status 413 if "
            f"{{ req.hdr_val(content-length) gt {limits.max_body} }}"
        )
    lines += choice
    # (Every http-request rule, the 404's included, comes before the use_backend rules.)
    for service in services:
        this = f"{{ var(txn.be) -m str {service} }}"
        for backend, pin in plan.pins.get(service, ()):
            lines.append(f"    use_backend {backend} if {this} {_condition(pin)}")
        cookie = plan.sticky_cookies.get(service)
        if cookie is not None:
            stuck = f"req.cook({cookie}),map_str({files.sticky(service)})"
            lines.append(f"    use_backend %[{stuck}] if {this} {{ {stuck} -m found }}")
    lines.append("    use_backend %[var(txn.be)] if { var(txn.be) -m found }")
    lines.append(
        "    http-request return status 404 content-type text/plain "
        f"{not_found} if !{{ var(txn.be) -m found }}"
    )
    lines.append("")
    return lines


def _shared_choice(files: Files) -> list[str]:
    return [
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
        "    http-request set-var(txn.path) path",
        "    http-request set-var(txn.hp) var(txn.host),concat(,txn.path,/)",
        f"    http-request set-var(txn.be) var(txn.hp),map_beg({files.paths})",
        f"    http-request set-var(txn.be) var(txn.host),map_str({files.hosts}) "
        "if !{ var(txn.be) -m found }",
        f"    http-request set-var(txn.be) var(txn.host),map_end({files.wildcards}) "
        "if !{ var(txn.be) -m found }",
    ]


def _condition(pin: Pin) -> str:
    """An ACL that holds for the requests ``pin`` (and its ``also``) matches."""
    return " ".join(_one(p) for p in (pin, *pin.also))


_MATCH = {"exact": "str", "prefix": "beg", "regex": "reg"}


def _one(pin: Pin) -> str:
    fetch = f"req.hdr({pin.header})" if pin.header else f"req.cook({pin.cookie})"
    return f"{{ {fetch} -m {_MATCH[pin.match]} {_quoted(pin.value)} }}"


def _quoted(value: str) -> str:
    """A configuration word: double quotes, with what HAProxy reads in them escaped."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("#", "\\#")
    )
    return f'"{escaped}"'


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def map_text(entries: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in entries.items())
