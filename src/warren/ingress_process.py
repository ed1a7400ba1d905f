"""``warren ingress``: the ingress as a process of its own, so that restarting or upgrading the
control plane never drops a request.

It serves the shared port and every published port (``ingress.Ingress``), follows the routing
stream of the managers (``GET /v1/worker/routes``: the routing table a remote worker's ingress
follows, a snapshot then every change) with a node's token, and sends what it answered to the
managers every 0.5 s (``reporting.TrafficReporter``, as a worker does), so that canary analysis
judges its traffic. While no manager answers it keeps serving the routing it had, and follows
the stream again as soon as one does.

``warren server`` and ``warren worker`` start it and supervise it (``ingress.supervising``);
it also runs alone. Its data dir holds its record (``ingress.json``), its admin socket
(``admin.sock``: drains and counters for the supervisor, and the handover), its token.

**Workers.** Several such processes (``--worker N``, one per core by default under a server)
serve the same ports: each binds its own listening sockets with SO_REUSEPORT and the kernel
spreads the connections among them. Each follows the routing stream, runs its own weighted
round robin (exact per worker, so exact in the sum), reports its own traffic (the managers add
the workers up) and has its own record and admin socket (worker N's: ``ingress-N.json``,
``admin-N.sock``); a replacement takes over one worker's sockets.

**Replacing it** (``--replace``): the new process takes the running one's settings unless given
others, asks it for its listening sockets over the admin socket (``ingress.admin``), serves
them — one accept queue, nothing refused — then tells it to let go. The old one closes its
listeners, answers what it has in flight with ``Connection: close``, closes the connections
that stay idle, and exits: no request fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .client import verifying
from .domain.errors import AuthError, UnavailableError, ValidationError, WarrenError
from .haproxy import HaproxyIngress
from .haproxy.process import stop_recorded
from .ingress import Ingress
from .ingress.admin import AdminServer, Handover, stats_to_wire, take_over
from .ingress.supervising import (
    IngressRecord,
    IngressSettings,
    admin_path,
    read_token,
    write_token,
)
from .linking import ManagerLink
from .ports import Route
from .processes import start_ticks
from .reporting import TrafficReporter
from .tokens import NODE_TOKEN_PREFIX

__all__ = ["IngressConfig", "IngressProcess"]

log = logging.getLogger("warren.ingress")

RETRY = 0.25
"""Seconds between attempts to follow the routing stream again (a manager restarting)."""
IDLE_GRACE = 2.0
"""Stopping: a connection still idle this long after the listeners closed is closed. (One
that sends before is answered with ``Connection: close``: its client connects again, to the
ingress that took over.)"""
WIND_DOWN_CHECK = 0.05
HAPROXY_DIR = "haproxy"
"""Where, in the ingress's data dir, HAProxy's files are (``--data-plane haproxy``)."""


@dataclass
class IngressConfig:
    data_dir: Path
    settings: IngressSettings | None = None
    """None: those of the ingress it replaces."""
    token: str = ""
    """A node token, or a join token (exchanged once for the node's); empty: the one kept in
    the data dir."""
    node_name: str | None = None
    """The node a join token joins as (default: the host's name)."""
    replace: bool = False
    drain_timeout: float = 30.0
    """Stopping or replaced: how long the requests in flight may take to finish."""
    ready_fd: int | None = None
    """Where to say "serving" (the supervisor waits on a pipe)."""
    worker: int = 0
    """Which of the ingress's workers this process is."""


class IngressProcess:
    def __init__(self, config: IngressConfig) -> None:
        self.config = config
        self.ingress: Ingress | HaproxyIngress | None = None
        self.link: ManagerLink | None = None
        self.admin: AdminServer | None = None
        self.reporter: TrafficReporter | None = None
        self.settings: IngressSettings | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._retiring: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.released = False
        """Another ingress took over: this one finishes and exits."""

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        data, worker = cfg.data_dir, cfg.worker
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        running = IngressRecord.running(data, worker)
        if running is not None and not cfg.replace:
            which = f"worker {worker} of the ingress" if worker else "an ingress"
            raise UnavailableError(
                f"{which} already serves {data} (pid {running.pid}): stop it, "
                "or give --replace to take over from it"
            )
        settings = self.settings = cfg.settings or (running.settings if running else None)
        if settings is None:
            raise ValidationError(
                "give the managers' URLs (or --replace, to take the running ingress's)",
                "--manager",
            )
        verify = verifying(settings.manager_ca, pinned=settings.manager_cert)
        self.link = ManagerLink(settings.managers, timeout=5.0, verify=verify)
        self.link.token = await self._node_token()
        handover = None
        if running is not None:
            handover = await asyncio.to_thread(take_over, admin_path(data, worker))
        try:
            self.ingress = await self._serve(settings, handover)
            self.admin = AdminServer(admin_path(data, worker), self._handlers(), handing=self)
            await self.admin.start()
            me = os.getpid()
            record = IngressRecord(
                me, start_ticks(me), __version__, settings, self.ingress.shared_port, worker
            )
            record.write(data)
        except BaseException:
            if handover is not None:
                handover.cancel()
            raise
        if handover is not None:
            await asyncio.to_thread(handover.release)
            log.info("ingress: took over from pid %s", handover.pid)
        self.reporter = TrafficReporter(
            self.ingress,
            lambda: self._managers(),
            self._token,
            every=settings.report_every,
            worker=worker,
            verify=verify,
        )
        self.reporter.start()
        self._follow_task = asyncio.get_running_loop().create_task(self._follow(), name="routes")
        self._say_ready()

    async def _serve(
        self, settings: IngressSettings, handover: Handover | None
    ) -> Ingress | HaproxyIngress:
        """The ingress, listening: on the sockets handed over, or bound here; or HAProxy."""
        if settings.data_plane == "haproxy":
            return await self._serve_haproxy(settings, handover)
        shared = settings.http_port
        listeners: dict[int, socket.socket] = {}
        if shared == 0:
            shared = self._shared_port_served(handover)
        if handover is not None:
            for port, sock in handover.sockets.items():
                if _bound_to(sock, settings.host):
                    # An ingress of an older version bound it alone: the other workers' sockets
                    # join it in one SO_REUSEPORT group only if it allows them.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    listeners[port] = sock
                else:
                    sock.close()
        ingress = Ingress(
            host=settings.host,
            shared_port=shared,
            limits=settings.limits,
            listeners=listeners,
            reuse_port=True,
        )
        await ingress.start()
        if handover is not None:
            routes = {name: Route.from_wire(wire) for name, wire in handover.routes.items()}
            await ingress.update(routes)
        ingress.discard_handed_over()
        # The data plane was HAProxy until now: it stops once this one serves (it finishes
        # its requests in flight).
        self._retiring = asyncio.get_running_loop().create_task(
            stop_recorded(self.config.data_dir / HAPROXY_DIR, self.config.drain_timeout)
        )
        return ingress

    async def _serve_haproxy(
        self, settings: IngressSettings, handover: Handover | None
    ) -> HaproxyIngress:
        """HAProxy, adopted or started. With no handover, it waits for the whole routing
        snapshot before it changes anything (an adopted one serves what it had meanwhile);
        the routes of an ingress it takes over from are applied at once."""
        shared = settings.http_port
        if shared == 0 and handover is not None and handover.shared_port is not None:
            shared = handover.shared_port
        plane = HaproxyIngress(
            self.config.data_dir / HAPROXY_DIR,
            host=settings.host,
            shared_port=shared,
            limits=settings.limits,
            stop_after=self.config.drain_timeout,
            hold=True,
        )
        await plane.start()
        if handover is not None:
            for sock in handover.sockets.values():
                sock.close()  # HAProxy binds its own (SO_REUSEPORT: beside these, meanwhile)
            routes = {name: Route.from_wire(wire) for name, wire in handover.routes.items()}
            await plane.update(routes)
            await plane.synced()
        return plane

    def _shared_port_served(self, handover: Handover | None) -> int:
        """Asked for "any" shared port: the one already served — by the ingress this one
        replaces, or by the other workers — else any (0)."""
        if handover is not None and handover.shared_port is not None:
            return handover.shared_port
        others = IngressRecord.all_running(self.config.data_dir)
        for worker, record in sorted(others.items()):
            if worker != self.config.worker and record.shared_port is not None:
                return record.shared_port
        return 0

    async def _node_token(self) -> str:
        """The node token: given, kept in the data dir, or got once with a join token."""
        cfg = self.config
        assert self.link is not None
        token = cfg.token or read_token(cfg.data_dir)
        if not token:
            raise ValidationError("give a join token or a node token", "--token")
        if not token.startswith(NODE_TOKEN_PREFIX):
            name = cfg.node_name or socket.gethostname()
            try:
                answer = await self.link.call(
                    "POST", "/v1/worker/join", {"node": name}, token=token
                )
            except AuthError as exc:
                raise AuthError(f"cannot join: {exc.message}") from None
            token = str(answer["nodeToken"])
        if token != read_token(cfg.data_dir):
            write_token(cfg.data_dir, token)
        return token

    async def _token(self) -> str:
        assert self.link is not None
        return self.link.token

    def _managers(self) -> list[str]:
        return self.link.managers if self.link is not None else []

    def _say_ready(self) -> None:
        fd = self.config.ready_fd
        if fd is None:
            return
        with contextlib.suppress(OSError):  # the supervisor died meanwhile: nobody to tell
            os.write(fd, b"1")
        with contextlib.suppress(OSError):
            os.close(fd)
        self.config.ready_fd = None

    # ── the routing stream ───────────────────────────────────────────────────────────────────

    async def _follow(self) -> None:
        """Follow the routing stream of one manager after another, for ever."""
        said = ""
        while True:
            try:
                await self._follow_once()
                problem = "the stream ended"
            except WarrenError as exc:
                problem = exc.message
            except Exception as exc:  # a message we cannot read: never stop following
                log.exception("ingress: routing stream: unexpected error")
                problem = f"{type(exc).__name__}: {exc}"
            if problem != said:
                log.warning("ingress: routing stream: %s; serving the routing it had", problem)
                said = problem
            await asyncio.sleep(RETRY)

    async def _follow_once(self) -> None:
        assert self.link is not None and self.ingress is not None
        ingress = self.ingress
        seen: set[str] = set()
        synced = False
        url = self.link.url
        async for message in self.link.lines("/v1/worker/routes"):
            if self.link.url != url:
                return  # calls moved to another manager: follow that one's stream
            kind = message.get("type")
            if kind == "route":
                name, wire = message["service"], message["route"]
                route = Route.from_wire(wire) if wire else None
                if ingress.routes.get(name) != route:
                    await ingress.update({name: route})
                seen.add(name)
            elif kind == "synced" and not synced:
                synced = True
                log.info("ingress: following the routing of %s (%d services)", url, len(seen))
                # The snapshot is the truth: a service it did not mention is gone. (An update
                # also tries again the ports it could not bind.)
                stale = set(ingress.routes) - seen
                if stale or ingress.problems:
                    await ingress.update(dict.fromkeys(stale))
                if isinstance(ingress, HaproxyIngress):
                    await ingress.synced()

    # ── the admin socket ─────────────────────────────────────────────────────────────────────

    def _handlers(self) -> dict[str, Any]:
        return {"info": self._info, "drain": self._drain, "stats": self._stats}

    async def _info(self, _: dict[str, Any]) -> dict[str, Any]:
        assert self.ingress is not None
        return {
            "pid": os.getpid(),
            "worker": self.config.worker,
            "version": __version__,
            "sharedPort": self.ingress.shared_port,
            "listening": sorted(self.ingress.listening),
            "problems": {str(p): why for p, why in self.ingress.problems.items()},
            "services": len(self.ingress.routes),
            "connections": self.ingress.connections,
        }

    async def _drain(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.ingress is not None
        try:
            address, timeout = str(request["address"]), float(request["timeout"])
        except (KeyError, TypeError, ValueError):
            raise ValidationError("drain needs an address and a timeout") from None
        return {"left": await self.ingress.drain(address, timeout)}

    async def _stats(self, _: dict[str, Any]) -> dict[str, Any]:
        ingress = self.ingress
        assert ingress is not None
        if isinstance(ingress, HaproxyIngress):
            await ingress.refresh()
        return {
            "services": {name: stats_to_wire(s) for name, s in ingress.stats().items()},
            "revisions": [
                [service, revision, stats_to_wire(s)]
                for (service, revision), s in ingress.revision_stats().items()
            ],
            "problems": {str(p): why for p, why in ingress.problems.items()},
            "sharedPort": ingress.shared_port,
        }

    # HandingOver: what the ingress that replaces this one gets.

    def offer(self) -> tuple[dict[str, Any], list[int]]:
        assert self.ingress is not None
        fds = self.ingress.listening_fds()
        ports = list(fds)
        routes = {name: route.to_wire() for name, route in self.ingress.routes.items()}
        message = {
            "ports": ports,
            "sharedPort": self.ingress.shared_port,
            "routes": routes,
            "pid": os.getpid(),
        }
        return message, [fds[p] for p in ports]

    async def release(self) -> None:
        assert self.ingress is not None
        if isinstance(self.ingress, HaproxyIngress):
            self.ingress.detach()  # the ingress that took over adopts it, or stops it
        self.ingress.stop_accepting()
        if not self.released:
            self.released = True
            log.info("ingress: another took over; finishing what is in flight")
            self._stopped.set()

    # ── run and stop ─────────────────────────────────────────────────────────────────────────

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish (up to the drain timeout), send
        the last traffic, close."""
        if self.ingress is not None:
            self.ingress.stop_accepting()
            await self._wind_down(self.ingress)
        if self._follow_task is not None:
            self._follow_task.cancel()
            await asyncio.gather(self._follow_task, return_exceptions=True)
        if self._retiring is not None:
            await asyncio.gather(self._retiring, return_exceptions=True)
        if self.reporter is not None:
            with contextlib.suppress(Exception):  # a last try: the managers may be away
                await self.reporter.send()
            await self.reporter.close()
        if self.admin is not None:
            await self.admin.close()
        if self.ingress is not None:
            await self.ingress.close()
        if self.link is not None:
            await self.link.close()

    async def _wind_down(self, ingress: Ingress | HaproxyIngress) -> None:
        """Until every client connection is closed, or the drain timeout: each closes after
        its next response; the ones idle for IDLE_GRACE are closed."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while ingress.connections:
            ingress.close_after_response()
            waited = loop.time() - began
            if waited >= self.config.drain_timeout:
                log.warning(
                    "ingress: %d connection(s) still open after %gs: closed",
                    ingress.connections,
                    self.config.drain_timeout,
                )
                return
            if waited >= IDLE_GRACE:
                ingress.close_idle()
            await asyncio.sleep(WIND_DOWN_CHECK)


def _bound_to(sock: socket.socket, host: str) -> bool:
    """Whether a handed-over socket listens on ``host`` (settings changed: bound again)."""
    try:
        bound = sock.getsockname()[0]
        wanted = socket.getaddrinfo(host, None, sock.family, socket.SOCK_STREAM)
    except OSError:
        return False
    return any(info[4][0] == bound for info in wanted)
