"""``HaproxyIngress``: the data plane when it is a real HAProxy, driven through its Runtime API.

Routes go into a ``RoutingTable`` (ports and hosts claimed twice settled as the built-in ingress
settles them), and from it into a layout (``config.layout``). When the layout's skeleton — the
ports, the backends, the pin and sticky rules — is what HAProxy runs, the change is made with
Runtime API commands: ``add server`` / ``del server``, ``set weight``, ``add map`` / ``set map``
/ ``del map``; a weight change never reloads. Otherwise the configuration is written again (with
every server as it is now), checked, and HAProxy reloaded: its new worker serves at once what
the old one did.

**Counters.** Every request HAProxy answers is a log line on a unix datagram socket
(``%b|%s|%ST|%Ta``: backend, server, status, total time) read here and counted per revision
(the server's name carries it) as the built-in ingress counts its own: what canary analysis and
Prometheus read. The requests in flight are HAProxy's own (``show stat``), read when the counters
are asked for.

**Drain.** An endpoint drained gets weight 0 in every backend (no new request) and is listed in
``draining.map``; the drain waits until HAProxy has nothing in flight to it, up to its timeout.
A request still in flight when the task then stops would get 502 from HAProxy: its backend
answers 504 instead for a server in that map (``http-after-response``), as the built-in ingress
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..domain.errors import WarrenError
from ..ingress.counters import Counters
from ..ingress.limits import Limits
from ..ingress.routing import RoutingTable
from ..ports import Route, RouteStats, Sample, Window
from . import config
from .config import Files, Layout, Settings, Skeleton
from .process import Haproxy, find_haproxy
from .runtime import Refused, ServerState

__all__ = ["HaproxyIngress"]

log = logging.getLogger("warren.ingress")

SWEEP = 1.0
"""Seconds between attempts to finish what could not be done at once (a server to delete that
still had connections, a port that was in use)."""
DRAIN_POLL = 0.05
LOG_BUFFER = 8 * 1024 * 1024
TARGETS_KEPT = 10_000


class HaproxyIngress:
    """The data plane as a real HAProxy (implements ``warren.ports.DataPlane``)."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        shared_port: int | None = 8000,
        limits: Limits | None = None,
        stop_after: float = 35.0,
        hold: bool = False,
        threads: int | None = None,
    ) -> None:
        """``data_dir``: HAProxy's files (configuration, sockets, record); ``stop_after``: how
        long a replaced or stopped HAProxy may finish its requests; ``hold``: apply no route
        until ``synced`` (a ``warren ingress`` reading the routing stream: one change for the
        whole snapshot, and an adopted HAProxy keeps serving what it had meanwhile)."""
        self.files = Files(data_dir)
        self.settings = Settings(host, shared_port, limits or Limits(), stop_after, threads)
        self._table = RoutingTable()
        self._counters = Counters(time.monotonic)
        self._haproxy: Haproxy | None = None
        self._skeleton: Skeleton | None = None
        """The skeleton HAProxy runs (None: not known)."""
        self._served_ports: frozenset[int] = frozenset()
        self._layout = Layout()
        self._problems: dict[int, str] = {}
        self._unapplied: str | None = None
        """Why the last change did not reach HAProxy (it is tried again)."""
        self._lock = asyncio.Lock()
        self._holding = hold
        self._log_socket: socket.socket | None = None
        self._in_flight: dict[str, int] = {}
        """Per server name, HAProxy's requests in flight to it, as last read."""
        self._sweeper: asyncio.Task[None] | None = None
        self._targets: dict[bytes, tuple[str, int | None] | None] = {}
        """Per ``backend|server`` of a log line, its service and revision (a cache: every
        request's line names one)."""
        self._pending = False
        """Something is left to do: ``_sweep`` applies the routes again."""
        self.detached = False
        """Another ``warren ingress`` took this HAProxy over: closing leaves it running."""

    # ── start and stop ──────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """Adopt the HAProxy that runs on the data dir, or start one (serving no route yet)."""
        self.files.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        haproxy = self._haproxy = Haproxy(self.files, find_haproxy())
        self._open_log()
        if haproxy.adopt():
            recorded = haproxy.recorded_port()
            if self.settings.shared_port == 0 and recorded is not None:
                self.settings = dataclasses.replace(self.settings, shared_port=recorded)
            self._read_applied()
            log.info("ingress: adopted HAProxy (pid %s)", haproxy.pid)
        else:
            if self.settings.shared_port == 0:
                free = _free_port(self.settings.host)
                self.settings = dataclasses.replace(self.settings, shared_port=free)
            empty = config.layout(self._table, self.files, self.settings.shared_port)
            await self._write(empty)
            await haproxy.start()
            haproxy.note_port(self.settings.shared_port)
            self._applied(empty)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="haproxy")

    async def synced(self) -> None:
        """The routing snapshot is whole: apply it (see ``hold``)."""
        if self._holding:
            self._holding = False
            await self._apply()

    def detach(self) -> None:
        self.detached = True

    async def close(self) -> None:
        """Stop reading its logs; stop HAProxy softly (its requests in flight finish), unless
        another ``warren ingress`` took it over."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._haproxy is not None and not self.detached:
            await self._haproxy.stop(self.settings.stop_after + 5.0)
        self._close_log()

    # What ``warren ingress`` asks of the built-in ingress, which HAProxy does itself.

    def stop_accepting(self) -> None:
        """HAProxy stops accepting when it is stopped (``close``)."""

    def close_after_response(self) -> None:
        """HAProxy closes its client connections when it is stopped."""

    def close_idle(self) -> None:
        """HAProxy closes its client connections when it is stopped."""

    @property
    def connections(self) -> int:
        return 0

    def listening_fds(self) -> dict[int, int]:
        """None to hand over: the next ``warren ingress`` adopts HAProxy, sockets and all."""
        return {}

    def discard_handed_over(self) -> None:
        pass

    # ── what it serves ──────────────────────────────────────────────────────────────────────

    @property
    def shared_port(self) -> int | None:
        return self.settings.shared_port

    @property
    def listening(self) -> frozenset[int]:
        return self._served_ports

    @property
    def problems(self) -> dict[int, str]:
        found = dict(self._problems)
        if self._unapplied is not None:
            key = self.settings.shared_port or 0
            found[key] = "; ".join(filter(None, (found.get(key), self._unapplied)))
        return found

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._table.routes

    # ── DataPlane ───────────────────────────────────────────────────────────────────────────

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        self._table.apply(routes)
        if not self._holding:
            await self._apply()

    async def drain(self, address: str, timeout: float) -> int:
        if not self._table.knows(address):
            return 0
        self._table.drain(address)
        await self._apply()
        servers = {
            config.server_name(e)
            for route in self._table.routes.values()
            for e in route.endpoints
            if e.address == address
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            in_flight = await self._read_in_flight()
            left = sum(in_flight.get(name, 0) for name in servers)
            if left == 0 or loop.time() >= deadline:
                return left
            await asyncio.sleep(DRAIN_POLL)

    def stats(self) -> Mapping[str, RouteStats]:
        totals = self._counters.stats()
        for total in totals.values():
            total.in_flight = 0
        for (service, _), n in self._in_flight_by_revision().items():
            if service in totals:
                totals[service].in_flight += n
        return totals

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        found = dict(self._counters.revision_stats())
        by_revision = self._in_flight_by_revision()
        for key, stats in found.items():
            stats.in_flight = by_revision.get(key, 0)
        for key, n in by_revision.items():
            if key not in found and n:
                found[key] = RouteStats(in_flight=n)  # (its first requests: none answered yet)
        return found

    def window(self, service: str, revision: int, seconds: float) -> Window:
        return self._counters.window(service, revision, seconds)

    def samples_since(self, since: float) -> list[tuple[str, int, list[Sample]]]:
        return self._counters.samples_since(since)

    async def worker_pid(self) -> int:
        """The pid of HAProxy's worker that serves now."""
        assert self._haproxy is not None
        return await self._haproxy.runtime.worker_pid()

    async def refresh(self) -> None:
        """Read HAProxy's requests in flight (before the counters are read)."""
        with contextlib.suppress(WarrenError):
            await self._read_in_flight()

    # ── applying ────────────────────────────────────────────────────────────────────────────

    async def _apply(self) -> None:
        async with self._lock:
            want = config.layout(self._table, self.files, self.settings.shared_port, self._layout)
            self._leave_out_busy_ports(want)
            try:
                if self._skeleton is None or not self._skeleton.covers(
                    want.skeleton(self.settings)
                ):
                    await self._write(want)
                    assert self._haproxy is not None
                    await self._haproxy.reload()
                    self._applied(want)
                    log.info("ingress: HAProxy reloaded (%d backends)", len(want.servers))
                else:
                    await self._change(want)
            except WarrenError as exc:
                self._unapplied = exc.message
                self._pending = True
                log.warning("ingress: HAProxy: %s", exc.message)
            else:
                self._unapplied = None
            self._layout = want
            self._problems = want.problems

    async def _write(self, want: Layout) -> None:
        """Write the maps and the configuration for ``want`` (checked by HAProxy first)."""
        assert self._haproxy is not None
        for path, entries in want.maps.items():
            path.write_text(config.map_text(entries))
        text = config.render(want, self.settings, self.files)
        await self._haproxy.check(text)

    def _applied(self, want: Layout) -> None:
        """HAProxy runs the configuration of ``want``: kept here and in its directory."""
        self._skeleton = want.skeleton(self.settings)
        self._served_ports = frozenset(want.ports)
        applied = {"skeleton": self._skeleton.to_json(), "slots": want.slots}
        self._applied_file.write_text(json.dumps(applied))

    @property
    def _applied_file(self) -> Path:
        return self.files.dir / "applied.json"

    def _read_applied(self) -> None:
        """What the adopted HAProxy was last configured with: its skeleton (unchanged, no
        reload is needed), the ports it listens on (busy, but its own), the revisions its
        slots hold."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            applied = json.loads(self._applied_file.read_text())
            skeleton = Skeleton.from_json(applied["skeleton"])
            slots = {
                str(s): {int(r): int(n) for r, n in held.items()}
                for s, held in applied["slots"].items()
            }
            self._skeleton = skeleton
            self._served_ports = frozenset(p for p, _ in skeleton.ports)
            self._layout = Layout(slots=slots, slot_counts=dict(skeleton.slots))

    async def _change(self, want: Layout) -> None:
        """Make HAProxy's servers and maps those of ``want``, by Runtime API commands."""
        assert self._haproxy is not None
        api = self._haproxy.runtime
        have: dict[str, dict[str, ServerState]] = {}
        for state in await api.servers():
            have.setdefault(state.backend, {})[state.name] = state
        commands: list[str] = []
        for backend in have.keys() - want.servers.keys():
            # A service gone, a slot of a revision no longer steered: emptied (no reload).
            for name, state in have[backend].items():
                await self._remove(f"{backend}/{name}", state)
        for backend, servers in want.servers.items():
            current = have.get(backend, {})
            for name, server in servers.items():
                now = current.get(name)
                target = f"{backend}/{name}"
                if now is None:
                    await api.do(f"add server {target} {server.address} weight {server.weight}")
                    commands.append(f"enable server {target}")
                    continue
                if now.weight != server.weight:
                    commands.append(f"set weight {target} {server.weight}")
                if now.maintenance:
                    commands.append(f"enable server {target}")
            for name in current.keys() - servers.keys():
                await self._remove(f"{backend}/{name}", current[name])
        running = self._skeleton.maps if self._skeleton is not None else ()
        stale: dict[Path, dict[str, str]] = {
            Path(path): {} for path in running if Path(path) not in want.maps
        }
        for path, entries in {**want.maps, **stale}.items():
            if path.name in config.ORDERED_MAPS:
                continue  # (in the skeleton: they changed with a reload)
            present = await api.map_entries(path)
            for key, value in entries.items():
                if key not in present:
                    commands.append(f"add map {path} {key} {value}")
                elif present[key] != value:
                    commands.append(f"set map {path} {key} {value}")
            commands += [f"del map {path} {key}" for key in present.keys() - entries.keys()]
            path.write_text(config.map_text(entries))  # what a later reload starts from
        if commands:
            # One session: the weights of a flip change together.
            await api.do(";".join(commands))

    async def _remove(self, target: str, state: ServerState) -> None:
        """A server that left its backend: in maintenance (no new request), deleted once it has
        no connection left (else later, by ``_sweep``)."""
        assert self._haproxy is not None
        api = self._haproxy.runtime
        if not state.maintenance:
            await api.do(f"set server {target} state maint")
        try:
            await api.do(f"del server {target}")
        except Refused:
            self._pending = True  # still has connections: the next sweep deletes it

    def _leave_out_busy_ports(self, want: Layout) -> None:
        """A port HAProxy does not serve yet and that something else holds would make it
        refuse the whole configuration: it is left out (and reported), and tried again."""
        for port in sorted(want.ports.keys() - self._served_ports):
            why = _cannot_bind(self.settings.host, port)
            if why is not None:
                service = want.ports.pop(port)
                want.problems[port] = f"cannot listen on {self.settings.host}:{port}: {why}"
                log.warning("ingress: %s (service %s)", want.problems[port], service)
                self._pending = True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            try:
                assert self._haproxy is not None
                if not self._haproxy.alive():
                    await self._start_again()
                elif self._pending and not self._holding:
                    self._pending = False
                    await self._apply()
            except WarrenError as exc:
                self._unapplied = exc.message
                log.warning("ingress: HAProxy: %s", exc.message)
            except Exception:  # never let one bad round end the sweeps
                log.exception("ingress: HAProxy: applying the routes again failed")

    async def _start_again(self) -> None:
        """HAProxy exited (killed, crashed): start it again, serving the routes as they are."""
        assert self._haproxy is not None
        log.warning("ingress: HAProxy (pid %s) exited; starting it again", self._haproxy.pid)
        async with self._lock:
            self._served_ports = frozenset()  # (its ports are free again, or taken by another)
            want = config.layout(self._table, self.files, self.settings.shared_port, self._layout)
            self._leave_out_busy_ports(want)
            await self._write(want)
            await self._haproxy.start()
            self._haproxy.note_port(self.settings.shared_port)
            self._applied(want)
            self._layout, self._problems, self._unapplied = want, want.problems, None

    # ── counters ────────────────────────────────────────────────────────────────────────────

    async def _read_in_flight(self) -> dict[str, int]:
        assert self._haproxy is not None
        in_flight: dict[str, int] = {}
        for row in await self._haproxy.runtime.stat():
            if row.get("type") == "2":  # a server
                name = row.get("svname", "")
                in_flight[name] = in_flight.get(name, 0) + int(row.get("scur") or 0)
        self._in_flight = in_flight
        return in_flight

    def _in_flight_by_revision(self) -> dict[tuple[str, int], int]:
        found: dict[tuple[str, int], int] = {}
        for service in self._layout.services:
            # (A slot's servers are its service's too.)
            for name in self._layout.servers.get(service, {}):
                number = config.revision_of(name)
                if number is not None:
                    key = (service, number)
                    found[key] = found.get(key, 0) + self._in_flight.get(name, 0)
        return found

    def _open_log(self) -> None:
        path = self.files.log
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LOG_BUFFER)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.setblocking(False)
        self._log_socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_log)

    def _close_log(self) -> None:
        sock = self._log_socket
        if sock is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        self._log_socket = None

    def _read_log(self) -> None:
        sock = self._log_socket
        assert sock is not None
        for _ in range(10_000):  # then let the loop breathe; the reader is called again
            try:
                line = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    log.warning("ingress: HAProxy's log socket: %s", exc)
                return
            self._count(line)

    def _count(self, line: bytes) -> None:
        """One request HAProxy answered: ``backend|server|status|total ms``."""
        fields = line.split(b"|")
        if len(fields) != 4:
            return
        key = fields[0] + b"|" + fields[1]
        target = self._targets.get(key, _UNSEEN)
        if target is _UNSEEN:
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.clear()  # (tasks come and go: names of long gone ones)
            target = self._targets[key] = self._target(fields[0], fields[1])
        if target is None:
            return
        try:
            code, elapsed = int(fields[2]), max(0, int(fields[3])) / 1000
        except ValueError:
            return
        if code > 0:  # (-1: the client left before its answer)
            self._counters.record(target[0], target[1], elapsed, code >= 500)

    def _target(self, backend: bytes, server: bytes) -> tuple[str, int | None] | None:
        """The service and revision a log line's backend and server name (None: a frontend's
        own answer, a 404)."""
        service, dot, rest = backend.decode("latin-1").partition(".")
        if dot and not (rest[:1] == "s" and rest[1:].isdigit()):
            return None
        return service, config.revision_of(server.decode("latin-1"))


_UNSEEN: Any = object()


def _cannot_bind(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None: it can)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
