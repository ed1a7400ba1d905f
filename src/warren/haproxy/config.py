"""What Warren asks of HAProxy, worked out from the routes: the *layout* (frontends, backends, the
rules that pick a backend — what only a reload changes) and the *servers* with their weights and
the map entries (what the Runtime API changes, with no reload).

One backend per service, ``NAME``, whose servers are the service's endpoints weighted so that each
revision gets its exact share (``weights_of``); and, for a service with pins or a sticky cookie,
*slots*, ``NAME.s1``, ``NAME.s2`` …: backends that each hold one revision's endpoints, where a
pinned request or a client stuck to a revision goes. Which revision a slot holds, and which slot
a pin or a sticky cookie leads to, are map entries: a release that pins or sticks a new revision
changes them at run time — no reload, so no HAProxy worker of before is left serving with the
routing of before (one that a reload replaces finishes its requests with its own). Server names
carry the revision: ``N-TASK``, so that a log line names its revision.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ingress.limits import Limits
from ..ingress.routing import RoutingTable
from ..ports import Endpoint, Pin, Route

__all__ = [
    "MAX_WEIGHT",
    "Files",
    "Layout",
    "Settings",
    "Skeleton",
    "layout",
    "render",
    "revision_of",
    "server_name",
    "slot_of",
    "weights_of",
]

FORMAT = 1
"""The version of what ``render`` writes: an adopted HAProxy configured by another is reloaded."""
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

    @property
    def pins(self) -> Path:
        return self.dir / "pins.map"

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


@dataclass(frozen=True)
class Skeleton:
    """What only a reload changes: the ports, the backends (a service's, and its slots), the
    pin rules, the sticky cookies, the map files (and the content of those matched in order).
    A running HAProxy whose skeleton ``covers`` the one wanted needs no reload: what it has
    more (a service gone, pins that were removed, an unused slot) is emptied at run time."""

    ports: tuple[tuple[int, str], ...] = ()
    services: tuple[str, ...] = ()
    slots: tuple[tuple[str, int], ...] = ()
    """Per service with slots, how many."""
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Per service, its pin rules' conditions, in order."""
    sticky: tuple[tuple[str, str], ...] = ()
    maps: tuple[str, ...] = ()
    ordered: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """The maps matched in their order (wildcards, path prefixes), which adding an entry at
    run time cannot choose: their content."""
    format: int = FORMAT
    settings: str = ""
    """What the configuration was written with besides the routes (``Settings``)."""

    def covers(self, want: Skeleton) -> bool:
        slots, pins, sticky = dict(self.slots), dict(self.pins), dict(self.sticky)
        return (
            self.format == want.format
            and self.settings == want.settings
            and self.ports == want.ports
            and set(want.services) <= set(self.services)
            and all(n <= slots.get(s, 0) for s, n in want.slots)
            and all(pins.get(s) == rules for s, rules in want.pins if rules)
            and all(sticky.get(s) == cookie for s, cookie in want.sticky)
            and set(want.maps) <= set(self.maps)
            and self.ordered == want.ordered
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Skeleton:
        def pairs(key: str) -> tuple[tuple[Any, Any], ...]:
            return tuple((a, b) for a, b in data[key])

        return Skeleton(
            ports=tuple((int(p), str(s)) for p, s in data["ports"]),
            services=tuple(data["services"]),
            slots=tuple((str(s), int(n)) for s, n in data["slots"]),
            pins=tuple((str(s), tuple(rules)) for s, rules in data["pins"]),
            sticky=pairs("sticky"),
            maps=tuple(data["maps"]),
            ordered=tuple((str(m), tuple((k, v) for k, v in e)) for m, e in data["ordered"]),
            format=int(data["format"]),
            settings=str(data.get("settings", "")),
        )


@dataclass
class Layout:
    """What HAProxy must be told for the routes: its skeleton (``skeleton()``: what a reload
    changes), and the servers and map entries (what the Runtime API changes)."""

    ports: dict[int, str] = field(default_factory=dict)
    """Published port → the service that holds it."""
    services: list[str] = field(default_factory=list)
    slots: dict[str, dict[int, int]] = field(default_factory=dict)
    """Per service, revision → the number of the slot it has (the revisions a request may be sent
    to by name: pinned ones, and with a sticky cookie every weighted one)."""
    slot_counts: dict[str, int] = field(default_factory=dict)
    pins: dict[str, tuple[Pin, ...]] = field(default_factory=dict)
    sticky_cookies: dict[str, str] = field(default_factory=dict)
    """Service → its sticky cookie's name (a route with weights and a cookie)."""
    servers: dict[str, dict[str, Server]] = field(default_factory=dict)
    """Backend → server name → address and weight."""
    maps: dict[Path, dict[str, str]] = field(default_factory=dict)
    """Map file → its entries (key → value), in the order they must be tried."""
    problems: dict[int, str] = field(default_factory=dict)
    """Per port, what of it cannot be served as asked (a port or host claimed twice, TLS)."""

    def skeleton(self, settings: Settings) -> Skeleton:
        return Skeleton(
            settings=repr(settings),
            ports=tuple(sorted(self.ports.items())),
            services=tuple(sorted(self.services)),
            slots=tuple(sorted(self.slot_counts.items())),
            pins=tuple(
                sorted((s, tuple(_condition(p) for p in pins)) for s, pins in self.pins.items())
            ),
            sticky=tuple(sorted(self.sticky_cookies.items())),
            maps=tuple(sorted(str(path) for path in self.maps)),
            ordered=tuple(
                (str(path), tuple(self.maps[path].items()))
                for path in sorted(self.maps)
                if path.name in ORDERED_MAPS
            ),
        )

    def backends(self) -> dict[str, tuple[str, int | None]]:
        """Backend → (service, slot number or None for the service's own)."""
        found: dict[str, tuple[str, int | None]] = {s: (s, None) for s in self.services}
        for service, count in self.slot_counts.items():
            found.update({slot_of(service, n): (service, n) for n in range(1, count + 1)})
        return found


ORDERED_MAPS = ("wildcards.map", "paths.map")


def layout(
    table: RoutingTable, files: Files, shared_port: int | None, before: Layout | None = None
) -> Layout:
    """The layout for the routes of ``table``: its draining addresses get no new request, and
    ports and hosts claimed twice are settled, and reported, as the built-in ingress does (the
    same table). ``before``: the layout HAProxy runs, whose slots a revision keeps."""
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
    pinned: dict[str, str] = {}
    for name in sorted(routes):
        route = routes[name]
        weights = weights_of(route, draining)
        out.services.append(name)
        out.servers[name] = {
            server_name(e): Server(e.address, weights[e.address]) for e in route.endpoints
        }
        draining_servers.update(
            {server_name(e): "1" for e in route.endpoints if e.address in draining}
        )
        held = before.slots.get(name, {}) if before is not None else {}
        slots = out.slots[name] = _slots(_steered_revisions(route), held)
        count = max([0, *slots.values(), before.slot_counts.get(name, 0) if before else 0])
        if count:
            out.slot_counts[name] = count
        for n in range(1, count + 1):
            revision = next((r for r, m in slots.items() if m == n), None)
            out.servers[slot_of(name, n)] = {
                server_name(e): Server(e.address, 0 if e.address in draining else 1)
                for e in route.endpoints
                if e.revision == revision
            }
        # Rules of before that the route no longer needs are kept, without map entries: the
        # next release's (the same preview, the same cookie) then needs no reload.
        kept = before if before is not None else Layout()
        if route.pins or name in kept.pins:
            out.pins[name] = route.pins or kept.pins[name]
            pinned.update(
                {f"{name}/{i}": slot_of(name, slots[p.revision]) for i, p in enumerate(route.pins)}
            )
        cookie = route.sticky_cookie if route.weights else None
        if cookie or name in kept.sticky_cookies:
            out.sticky_cookies[name] = cookie or kept.sticky_cookies[name]
            ready = {e.revision for e in route.endpoints if e.address not in draining}
            out.maps[files.sticky(name)] = {
                str(r): slot_of(name, slots[r])
                for r, w in route.weights
                if cookie and w > 0 and r in ready
            }
    out.maps[files.pins] = pinned
    out.maps[files.draining] = draining_servers
    return out


def slot_of(service: str, n: int) -> str:
    """A service's n-th slot backend: ``web.s1``."""
    return f"{service}.s{n}"


def _slots(revisions: list[int], held: Mapping[int, int]) -> dict[int, int]:
    """Revision → slot number: the one it held, else the lowest free."""
    found = {r: held[r] for r in revisions if r in held}
    taken = set(found.values())
    for r in revisions:
        if r not in found:
            n = next(n for n in range(1, len(revisions) + len(taken) + 2) if n not in taken)
            found[r] = n
            taken.add(n)
    return found


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
            plan.services,
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
    for backend, (service, slot) in sorted(plan.backends().items()):
        lines += [f"backend {backend}", "    balance roundrobin"]
        lines.append(
            "    http-after-response set-status 504 if { status 502 } "
            f"{{ srv_name,map_str({files.draining}) -m found }}"
        )
        cookie = plan.sticky_cookies.get(service)
        if cookie is not None and slot is None:
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
        for i, pin in enumerate(plan.pins.get(service, ())):
            # The slot of the pin's revision, from a map: the next release's pin, the same
            # rule, changes it at run time. (A pin removed keeps its rule, with no entry.)
            slot = f"str({service}/{i}),map_str({files.pins})"
            lines.append(
                f"    use_backend %[{slot}] if {this} {_condition(pin)} {{ {slot} -m found }}"
            )
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
