"""The built-in data plane, ``Ingress``: an HTTP/1.1 reverse proxy on asyncio Protocols and
httptools. It owns the listeners (the shared port and the published ones, TLS terminated where a
route asks), the routing table, the pool of upstream connections and the traffic counters; it
applies route updates, drains addresses, and times out responses.

A request goes through the modules beside this one:

- ``downstream``: one ``_Client`` per client connection parses requests, queues pipelined ones
  and serves them one at a time;
- ``exchange``: each request becomes an ``_Exchange`` as soon as its head is in: it picks an
  endpoint, takes a pooled connection (or has one opened), sends the request, retries, and
  counts the outcome;
- ``upstream``: the ``_Upstream`` connections, which forward the response as it arrives, and
  their ``Pool``;
- ``tunnel``: a connection upgraded (the task answered 101) pipes bytes both ways;
- ``messages``: the request as parsed, the bytes of the heads, the ingress's own answers;
- ``counters``: per service and revision, and in flight per upstream address.

They import each other one way: this module, ``downstream``, ``exchange``, ``upstream``,
``tunnel``, then ``messages`` and ``counters``; a module names the classes of one before it for
types only (``if TYPE_CHECKING``). mypyc compiles them in one group (``native.HOT_PATH``), so
their calls to each other stay native.

Neither body is ever held whole: a body that comes faster than its reader takes it stops the
reading of its sender (each side's transport pauses the other's reading), and at most
``_BUFFERED_MAX`` bytes wait for a connection.

The common path (pooled upstream, keep-alive client, a request whole in one read) creates no task
and runs no regex: a request costs the parser callbacks, one header scan and one ``join`` for the
upstream request, a few byte searches to rewrite the response head, one write each way, and one
set of counters (its revision's). Response timeouts are checked by one sweep over the requests
waiting on an upstream (``Ingress._sweep``), not by a timer per request. A drain that runs out
answers the requests still in flight 504 (``Ingress.drain``), so that stopping the task cuts
none. On this design's cost per request, and what it is spent on, see the ingress section of
``bench/README.md``.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from ..domain.errors import UnavailableError
from ..ports import Route, RouteStats, Sample, Window
from .counters import Counters
from .downstream import _Client
from .exchange import _Exchange
from .limits import Limits
from .routing import RoutingTable
from .tls import Certificates, TlsError
from .tunnel import _Tunnel
from .upstream import Pool

__all__ = ["Ingress"]

log = logging.getLogger("warren.ingress")

_HANDSHAKE_TIMEOUT = 10.0
"""A TLS handshake not done in this many seconds is dropped (asyncio's default is 60 s)."""


def _sockets(server: asyncio.Server) -> list[socket.socket]:
    """A server's listening sockets: a tuple under asyncio, a list under uvloop (typed a tuple),
    so read untyped, or the compiled ingress would insist on a tuple."""
    return list(getattr(server, "sockets"))  # noqa: B009


# ── the data plane ───────────────────────────────────────────────────────────────────────────────


class Ingress:
    """The built-in HTTP data plane (implements ``warren.ports.DataPlane``).

    Listens on ``shared_port`` (routed by Host and path; 0 picks a free port) and on every port
    a route publishes. Ports that cannot be bound are reported in ``problems`` and retried on
    the next ``update``; hosts (and path prefixes) claimed by two services, under the shared
    port. ``listeners``: listening sockets handed over by the ingress this one replaces, by
    port — served as they are instead of bound again, so that no connection is refused
    while one ingress takes over from another (``warren ingress --replace``). ``reuse_port``:
    bind with SO_REUSEPORT, so that several ingress processes (its workers) serve each port,
    the kernel spreading the connections among them. ``clock``: the time of the traffic counters
    (when a request was answered, and the end of a ``window``), in seconds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        shared_port: int | None = None,
        *,
        connect_timeout: float = 2.0,
        response_timeout: float = 60.0,
        limits: Limits = Limits(),
        listeners: Mapping[int, socket.socket] | None = None,
        reuse_port: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._reuse_port = reuse_port
        self._handed: dict[int, socket.socket] = dict(listeners or {})
        self._shared_port_wanted = shared_port
        self._shared_port: int | None = None
        self._response_timeout = response_timeout
        self._limits = limits
        self._max_body = limits.max_body
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_fields = limits.max_header_fields
        # No head that comes whole in a read this long can be over a size limit (a header line
        # is counted with ": ", one byte more than the shortest "Name:value").
        self._small_head = min(
            limits.max_request_line, limits.max_header_bytes - limits.max_header_fields
        )
        # Bound by the first start/update/drain: the ingress may be built outside the loop.
        self._loop: asyncio.AbstractEventLoop = cast(asyncio.AbstractEventLoop, None)
        self._table = RoutingTable()
        self._shared: asyncio.Server | None = None
        self._listeners: dict[int, asyncio.Server] = {}
        self._listening_tls: dict[int, tuple[str, str] | None] = {}
        """Per listener, the certificate and key it terminates TLS with (None: plain HTTP)."""
        self._certificates = Certificates()
        self._problems: dict[int, str] = {}
        self._lock = asyncio.Lock()
        self._clients: set[_Client] = set()
        self._tunnels: set[_Tunnel] = set()
        self._pool = Pool(self, connect_timeout)
        self._counters = Counters(clock)
        self._waiting: set[_Exchange] = set()
        """Exchanges sent to an upstream and not yet answered in full: what ``_sweep`` checks."""
        self._sweeper: asyncio.TimerHandle | None = None
        # Timeouts fire between ``response_timeout`` and an eighth more: 60 s → within 61 s.
        self._sweep_every = min(max(response_timeout / 8, 0.01), 1.0)
        self._closing = False
        self._accepting = True

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """Bind the shared port, if one was asked for. Raises UnavailableError if it cannot."""
        self._bind_loop()
        if self._shared_port_wanted is None or self._shared is not None:
            return
        try:
            self._shared = await self._listen(lambda: _Client(self, None), self._shared_port_wanted)
        except OSError as exc:
            raise UnavailableError(
                f"cannot listen on {self._host}:{self._shared_port_wanted}: {exc.strerror or exc}"
            ) from exc
        self._shared_port = _sockets(self._shared)[0].getsockname()[1]
        log.info("ingress: shared port %s:%s", self._host, self._shared_port)

    async def close(self) -> None:
        """Close the listeners, the client connections and the upstream connections."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        servers = list(self._listeners.values())
        if self._shared is not None:
            servers.append(self._shared)
        self._listeners.clear()
        self._listening_tls.clear()
        self._certificates.close()
        self._shared = None
        for server in servers:
            server.close()
        for task in list(self._pool.connecting):
            task.cancel()
        for client in list(self._clients):
            client.shutdown()
        for conn in list(self._pool.open):
            conn.discard()
        for tunnel in list(self._tunnels):
            tunnel.close(abort=True)
        self._pool.idle.clear()
        for waiters in self._counters.drained.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._counters.drained.clear()
        self.discard_handed_over()
        if self._pool.connecting:
            await asyncio.gather(*self._pool.connecting, return_exceptions=True)
        for server in servers:
            await server.wait_closed()
        # Let the transports run their connection_lost callbacks.
        await asyncio.sleep(0)

    def stop_accepting(self) -> None:
        """Close every listener and open no other: this ingress hands over to another, or
        stops. The connections it has stay, and are served."""
        self._accepting = False
        servers = [*self._listeners.values(), *([self._shared] if self._shared else [])]
        self._listeners.clear()
        self._shared = None
        for server in servers:
            server.close()
        self.discard_handed_over()

    def close_after_response(self) -> None:
        """Every client connection closes after its next response (``Connection: close``),
        idle ones included: a client that is told closes and connects again, where one cut
        while it sends a request loses it."""
        for client in self._clients:
            client.close_when_idle = True

    def close_idle(self) -> None:
        """Close the client connections that are idle now."""
        for client in list(self._clients):
            client.close_if_idle()

    @property
    def connections(self) -> int:
        """Client connections open."""
        return len(self._clients)

    def listening_fds(self) -> dict[int, int]:
        """The file descriptor of the listening socket of each port served (the shared one
        included), for the ingress that takes over from this one."""
        servers = [*self._listeners.values(), *([self._shared] if self._shared else [])]
        return {
            socks[0].getsockname()[1]: socks[0].fileno()
            for socks in map(_sockets, servers)
            if len(socks) == 1  # (a host name of several addresses: bound again)
        }

    def discard_handed_over(self) -> None:
        """Close the handed-over sockets of ports no route claims (any more)."""
        for sock in self._handed.values():
            sock.close()
        self._handed.clear()

    @property
    def shared_port(self) -> int | None:
        """The bound shared port (after ``start``), or None."""
        return self._shared_port

    @property
    def problems(self) -> dict[int, str]:
        """Published ports that are not served, with a one-line reason each."""
        return dict(self._problems)

    @property
    def listening(self) -> frozenset[int]:
        """The published ports being served (the shared port not included)."""
        return frozenset(self._listeners)

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._table.routes

    # ── DataPlane ───────────────────────────────────────────────────────────────────────────

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        self._bind_loop()
        claims_changed = self._table.apply(routes)  # in effect for the next request
        for address in [a for a in self._pool.idle if not self._table.knows(a)]:
            self._pool.close_address(address)
        # Listeners change only with the claims, or to retry a port that could not be bound.
        if claims_changed or self._problems:
            async with self._lock:
                await self._sync_listeners()

    async def drain(self, address: str, timeout: float) -> int:
        self._bind_loop()
        self._table.drain(address)
        self._pool.close_address(address)
        if not self._counters.in_flight.get(address):
            return 0
        fut: asyncio.Future[None] = self._loop.create_future()
        waiters = self._counters.drained.setdefault(address, [])
        waiters.append(fut)
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            if fut in waiters:
                waiters.remove(fut)
            drained = self._counters.drained
            if not waiters and drained.get(address) is waiters:
                del drained[address]
            fut.cancel()
        left = self._counters.in_flight.get(address, 0)
        if left:
            self._give_up_on(address, timeout)
        return left

    def _give_up_on(self, address: str, timeout: float) -> None:
        """Answer 504 to the requests still in flight to ``address`` at the end of its drain.

        The caller stops the task next: left waiting, these requests would be cut with the
        process, and their clients would get 502 (a broken upstream) at some later moment of
        the stop. Answering them here, when the drain timeout ends, tells the client the truth
        (the upstream took too long), at a known time, and leaves nothing in flight to cut — as
        kamal-proxy does. Rare (once per drain that runs out), so a scan of the requests
        waiting on an upstream or on a connection costs nothing on the hot path."""
        reason = f"{address} was drained and did not answer within {timeout:g}s"
        # An exchange that retries on a fresh connection is in both.
        late = {
            ex for ex in (*self._waiting, *self._pool.connecting.values()) if ex.address == address
        }
        for ex in late:
            if not ex.done:
                ex.give_up(reason)
        # Upgraded connections had the drain timeout too: they end now.
        for tunnel in [t for t in self._tunnels if t.address == address]:
            tunnel.close()

    def stats(self) -> Mapping[str, RouteStats]:
        """Per service, since the ingress started (a snapshot)."""
        return self._counters.stats()

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        """Per (service, revision), since the ingress started (a snapshot): canary analysis
        compares these between revisions."""
        return self._counters.revision_stats()

    def window(self, service: str, revision: int, seconds: float) -> Window:
        """``service``'s requests to ``revision`` over the last ``seconds`` of the ingress's
        clock (the most recent RECENT_KEPT of them at most): the input of canary analysis."""
        return self._counters.window(service, revision, seconds)

    def samples_since(self, since: float) -> list[tuple[str, int, list[Sample]]]:
        """(service, revision, requests answered after the time ``since`` of the ingress's clock:
        (time, latency, failed), oldest first) — what a node sends to the leader's analysis."""
        return self._counters.samples_since(since)

    def in_flight(self, address: str) -> int:
        """Requests sent to ``address`` and not yet answered."""
        return self._counters.in_flight.get(address, 0)

    # ── listeners ───────────────────────────────────────────────────────────────────────────

    async def _listen(
        self,
        factory: Callable[[], asyncio.Protocol],
        port: int,
        context: ssl.SSLContext | None = None,
    ) -> asyncio.Server:
        """A server on ``port`` (terminating TLS with ``context``): on the socket handed over for
        it, if any, else bound here."""
        where: dict[str, Any] = {"sock": self._handed.pop(port, None)}
        if where["sock"] is None:
            where = {"host": self._host, "port": port, "reuse_port": self._reuse_port}
        if context is not None:
            where |= {"ssl": context, "ssl_handshake_timeout": _HANDSHAKE_TIMEOUT}
        return await self._loop.create_server(factory, backlog=1024, **where)

    async def _sync_listeners(self) -> None:
        if self._closing or not self._accepting:
            return
        wanted = dict(self._table.ports)
        problems = dict(self._table.port_conflicts)
        if self._shared_port is not None:
            shared = [why for _, why in sorted(self._table.host_conflicts.items())]
            if self._shared_port in wanted:
                service = wanted.pop(self._shared_port)
                shared.insert(
                    0, f"port {self._shared_port} is the shared port; {service} cannot publish it"
                )
            if shared:
                # Hosts (and their path prefixes) are served on the shared port: their lost
                # claims are its problems.
                problems[self._shared_port] = "; ".join(shared)
        tls = {port: self._tls_of(port) for port in wanted}
        # A port that goes, or whose TLS changes (plain to TLS, other files), is closed (and
        # opened again below): a listener's TLS context is fixed when it is made.
        for port in [p for p in self._listeners if tls.get(p, False) != self._listening_tls[p]]:
            server = self._listeners.pop(port)
            del self._listening_tls[port]
            server.close()
            for client in list(self._clients):
                if client.port == port:
                    client.close_if_idle()
            if port not in wanted:
                self._certificates.forget(port)
                log.info("ingress: closed port %s", port)
        for port, service in wanted.items():
            if port in self._listeners:
                continue
            files = tls[port]
            try:
                context = self._certificates.context(port, *files) if files else None
                self._listeners[port] = await self._listen(
                    functools.partial(_Client, self, port, context is not None), port, context
                )
            except TlsError as unloadable:  # its own name: mypyc types an except's variable once
                problems[port] = str(unloadable)
                log.warning(
                    "ingress: port %s not served: %s (service %s)", port, unloadable, service
                )
            except OSError as exc:
                problems[port] = f"cannot listen on {self._host}:{port}: {exc.strerror or exc}"
                log.warning("ingress: %s (service %s)", problems[port], service)
            else:
                self._listening_tls[port] = files
                scheme = "https" if files else "http"
                log.info("ingress: port %s (%s) → service %s", port, scheme, service)
        self._problems = problems

    def _tls_of(self, port: int) -> tuple[str, str] | None:
        """The certificate and key the route holding ``port`` asks to terminate TLS with."""
        entry = self._table.for_port(port)
        for published, cert, key in entry.route.tls if entry is not None else ():
            if published == port:
                return cert, key
        return None

    # ── response timeouts ───────────────────────────────────────────────────────────────────

    def _start_sweep(self) -> None:
        """Called when an exchange starts waiting and no sweep is scheduled."""
        if self._sweeper is None and not self._closing:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        """Time out the exchanges whose upstream (or client, when it is the one not reading)
        has not moved for ``response_timeout``. Runs only while some exchange is waiting."""
        self._sweeper = None
        try:
            deadline = self._loop.time() - self._response_timeout
            late = [ex for ex in self._waiting if ex.last_progress <= deadline]
            for ex in late:
                if not ex.done:
                    ex.time_out(self._response_timeout)
                self._waiting.discard(ex)
        except Exception:
            log.exception("ingress: error while checking response timeouts")
        if self._waiting and not self._closing:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    # ── the event loop ──────────────────────────────────────────────────────────────────────

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
