"""The built-in data plane: an HTTP/1.1 reverse proxy on asyncio Protocols and httptools.

One ``_Client`` per client connection parses requests, queues pipelined ones and serves them one
at a time. Each request becomes an ``_Exchange`` as soon as its head is in: it picks an endpoint
from the routing table, takes a pooled ``_Upstream`` connection (or opens one), writes the head
and the body received so far, and then the rest of the body as it comes (with its
Content-Length, or chunked as the client sent it); the response streams back as it arrives.
Neither body is ever held whole: a body that comes faster than its reader takes it stops the
reading of its sender (each side's transport pauses the other's reading), and at most
``_BUFFERED_MAX`` bytes wait for a connection. The upstream side, its pool included, is
``upstream``'s.

The common path (pooled upstream, keep-alive client, a request whole in one read) creates no task
and runs no regex: a request costs the parser callbacks, one header scan and one ``join`` for the
upstream request, a few byte
searches to rewrite the response head, one write each way, and one set of counters (its
revision's). Response timeouts are checked by one sweep over the requests waiting on an upstream
(``Ingress._sweep``), not by a timer per request. A drain that runs out answers the requests
still in flight 504 (``Ingress.drain``), so that stopping the task cuts none. On this design's
cost per request, and what it is spent on, see the ingress section of ``bench/README.md``.

A request that asks for an upgrade (WebSocket or any other protocol) becomes a ``_Tunnel`` if its
task agrees (``tunnel``).

What a client may send, and how long it may take, is bounded by ``Limits``: a head over the
size limits is refused (414, 431) as soon as it crosses them, and one not whole in time (408) by
the connection's one timer, which also closes idle keep-alive connections. A head that comes
whole in one read, the common case, costs no timer and no byte count.

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
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import httptools

from ..domain.errors import UnavailableError
from ..ports import Route, RouteStats, Sample, Window
from .counters import Counters
from .exchange import _Exchange
from .limits import Limits
from .messages import (
    _CONTINUE,
    _parser_error,
    _Request,
    _scan_headers,
    _Stop,
    _text_response,
)
from .routing import RoutingTable
from .tls import Certificates, TlsError
from .tunnel import _Tunnel
from .upstream import Pool

__all__ = ["Ingress"]

log = logging.getLogger("warren.ingress")

_MAX_PIPELINE = 32
"""Queued pipelined requests per client before we stop reading from it (resumed below 8)."""

_HANDSHAKE_TIMEOUT = 10.0
"""A TLS handshake not done in this many seconds is dropped (asyncio's default is 60 s)."""

_BUFFERED_MAX = 256 * 1024
"""Request body bytes held for a client (its request not yet on an upstream connection, or
pipelined behind another) before we stop reading from it."""

_LINGER = 2.0
"""After refusing a request whose body may still be arriving (413, 400), keep reading and
discarding for this long before closing, so that the client reads our answer instead of a reset."""


# ── the client side ──────────────────────────────────────────────────────────────────────────────


class _Client(asyncio.Protocol):
    """One client connection: parses requests, queues them, serves them in order."""

    def __init__(self, ingress: Ingress, port: int | None, secure: bool = False) -> None:
        self._ingress = ingress
        self._loop = ingress._loop
        self.port = port
        """The published port this connection came in on; None for the shared port."""
        self._proto = b"https" if secure else b"http"
        """What the client spoke: TLS terminated here, or plain HTTP (X-Forwarded-Proto)."""
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = b""
        self._req = _Request()
        self._parsing = False
        self._in_head = False
        self._head_began = 0.0
        """When the request head now awaited began (its first byte; for the first request, the
        connection's opening); 0 when none is awaited. The head timeout counts from it."""
        self._read_len = 0
        """The length of the read being parsed."""
        self._queue: deque[_Request] = deque()
        self._queued_bytes = 0
        self._exchange: _Exchange | None = None
        self._in_next = False
        self.closed = False
        self.close_when_idle = False
        self._refusing = False
        """Parsing stopped (bad request, 413, upgrade): answer what is queued, then close."""
        self._discarding = False
        self._read_paused = False
        self._upstream_full = False
        self._upgrading = False
        """An upgrade was asked for: nothing more is read until the task answers it."""
        self._tunnel_pending = b""
        """What the client sent after its upgrade request: the new protocol's first bytes."""
        self.write_paused = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # (No more than 30 attributes: CPython 3.11 shares the keys of at most 30 attributes of
        # a class's instances; with more, every attribute access of a connection is slower —
        # measured: +2% instructions per proxied request. The per-request state is _Request's.)

    # asyncio callbacks ─────────────────────────────────────────────────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]).encode() if isinstance(peer, tuple) else b"unknown"
        self._ingress._clients.add(self)
        self._last = self._head_began = self._loop.time()
        limits = self._ingress._limits
        self._set_timer(min(limits.head_timeout, limits.idle_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.closed = True
            self._ingress._clients.discard(self)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._queue.clear()
            ex = self._exchange
            self._exchange = None
            if ex is not None:
                ex.abort()
        except Exception:
            log.exception("ingress: error while closing a client connection")

    def data_received(self, data: bytes) -> None:
        if self._discarding or self.closed:
            return
        self._last = self._loop.time()
        self._read_len = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            req = self._req
            if req.upgrade is not None and req.reject is None:
                # Its head is queued; what follows is the new protocol's, for the task if it
                # agrees (a 101), which is waited for without reading any further.
                self._upgrading = True
                self._tunnel_pending = data[exc.args[0] :]
                self._pause_reading()
            else:
                self._refuse(501, "upgrade is not supported")
        except httptools.HttpParserError as exc:
            if not self._refusing:
                if isinstance(exc, httptools.HttpParserCallbackError):
                    log.warning("ingress: error in a request callback", exc_info=exc.__context__)
                self._refuse(400, f"bad request: {_parser_error(exc)}")
        except Exception:
            log.exception("ingress: error while reading a request")
            self._refuse(400, "bad request")
        else:
            if self._parsing and self._req.reject is not None:
                # Too large: answer now rather than after reading a body we will not forward.
                self._refuse(*self._req.reject)
            elif self._in_head:
                self._head_incomplete(data)
        try:
            if self._queue and self._exchange is None:
                self._next()
        except Exception:
            log.exception("ingress: error while serving a request")
            self._close()

    def eof_received(self) -> bool:
        # The client finished sending: answer what is queued, then close. Returning True keeps
        # the transport open for those answers. A half-sent request is dropped.
        if self.closed:
            return False
        if self._parsing and not self._in_head:
            self._body_cut_short(self._req)
            if self.closed:
                return False
        self._parsing = self._in_head = False
        self._head_began = 0.0
        self.close_when_idle = True
        if self._exchange is None and not self._queue:
            self._close()
        return True

    def _body_cut_short(self, req: _Request) -> None:
        """The client closed in the middle of a request's body: it cannot be sent whole."""
        ex = self._serving(req)
        if ex is None:
            if req in self._queue:
                self._queue.remove(req)
            self._drop_body(req)
        elif not ex.done:
            ex.abort()
            self.abort_response()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self._exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self._exchange
        if ex is not None:
            ex.last_progress = self._loop.time()
            if ex.upstream is not None:
                ex.upstream.resume()

    # httptools callbacks ───────────────────────────────────────────────────────────────────────

    def on_message_begin(self) -> None:
        if self._refusing:
            raise _Stop
        self._req = _Request()
        self._parsing = True
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._req
        parser = self._parser
        self._in_head = False
        self._head_began = 0.0
        req.method = parser.get_method()
        req.head_only = req.method == b"HEAD"
        req.version10 = parser.get_http_version() == "1.0"
        req.keep_alive = parser.should_keep_alive()
        _scan_headers(req, self._peer, self._proto)
        ingress = self._ingress
        max_body = ingress._max_body
        if (
            # A head that came whole in a read no longer than this fits the size limits: the
            # common case counts no bytes.
            (
                self._read_len > ingress._small_head
                or req.line_bytes >= 0
                or len(req.headers) > ingress._max_header_fields
            )
            and (too_large := self._head_too_large()) is not None
        ):
            req.reject = too_large
        elif parser.should_upgrade() and (refused := self._upgrade(req)) is not None:
            req.reject = refused
        elif req.host is None and not req.version10:
            req.reject = (400, "bad request: missing Host header")
        elif max_body is not None and req.content_length > max_body:
            req.reject = (413, f"request body larger than {max_body} bytes")
        else:
            # Served from its head: the body follows it upstream as it comes.
            self._queue.append(req)
            if len(self._queue) >= _MAX_PIPELINE:
                self._pause_reading()

    def _upgrade(self, req: _Request) -> tuple[int, str] | None:
        """An upgrade asked for (WebSocket or any other protocol): passed to the task, with the
        headers that ask for it, and the connection becomes a tunnel if the task answers 101.
        If it answers anything else, the connection closes after that answer."""
        if req.method == b"CONNECT":
            return 501, "CONNECT is not supported"
        if req.has_body:
            return 501, "an upgrade with a request body is not supported"
        upgrade = b", ".join(v for n, v in req.headers if n.lower() == b"upgrade")
        req.upgrade = upgrade
        req.head += b"Connection: Upgrade\r\nUpgrade: %s\r\n" % upgrade
        req.keep_alive = False
        return None

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req.reject is not None:
            return
        req.body_size += len(body)
        max_body = self._ingress._max_body
        if max_body is not None and req.body_size > max_body:
            # Sent chunked: its length was not known from its head.
            self._refuse(413, f"request body larger than {max_body} bytes")
            raise _Stop
        ex = self._exchange
        if ex is not None and ex.streaming and ex.req is req:
            ex.send_body(body)
            return
        if req.done:
            return  # answered already: the rest is not wanted
        req.body.append(body)
        req.buffered += len(body)
        self._queued_bytes += len(body)
        if self._queued_bytes > _BUFFERED_MAX:
            self._pause_reading()

    def on_message_complete(self) -> None:
        req = self._req
        self._parsing = False
        req.complete = True
        if req.reject is not None:
            # Stop at this request: what follows it cannot be trusted.
            self._queue.append(req)
            self._refusing = True
            self._pause_reading()
            return
        ex = self._exchange
        if ex is not None and ex.streaming and ex.req is req:
            ex.end_body()

    def _body_failed(self, req: _Request, status: int, text: str) -> None:
        """``req`` was queued or is being served, and its body cannot be had whole (too large,
        malformed): answer ``status`` instead of what it was waiting for, then close."""
        self._drop_body(req)
        req.reject = (status, text)
        ex = self._serving(req)
        if ex is not None:
            ex.drop_upstream()
            if ex.head_sent:
                ex.give_up(text)
            else:
                ex.fail(status, text)
        elif req.done and self._exchange is None and not self.closed:
            self._linger()  # answered already, and its body will not be read to its end
        # (Otherwise still queued: answered when its turn comes.)

    def _serving(self, req: _Request) -> _Exchange | None:
        """The exchange serving ``req``, if it is being served."""
        ex = self._exchange
        return ex if ex is not None and ex.req is req else None

    def _drop_body(self, req: _Request) -> None:
        """Forget the body bytes held for ``req`` (sent, or not to be sent)."""
        if req.buffered:
            self._queued_bytes -= req.buffered
            req.body = []
            req.buffered = 0
            self._maybe_resume()

    def upstream_full(self, full: bool) -> None:
        """The upstream connection of the request being sent stopped (or resumed) taking its
        body: stop (or resume) reading it from the client."""
        self._upstream_full = full
        if full:
            self._pause_reading()
        else:
            self._maybe_resume()

    # serving ───────────────────────────────────────────────────────────────────────────────────

    def _refuse(self, status: int, text: str) -> None:
        """Stop parsing; the request being parsed (or a placeholder) is answered ``status`` after
        those queued before it, then the connection closes."""
        self._refusing = True
        in_head = self._in_head
        self._in_head = False
        if self._parsing:
            self._parsing = False
            req = self._req
            if in_head or req.reject is not None:  # not queued: a head unfinished or refused
                if req.reject is None:
                    req.reject = (status, text)
                self._queue.append(req)
            else:
                self._body_failed(req, status, text)
        elif not self._queue or self._queue[-1].reject is None:
            req = _Request()
            req.reject = (status, text)
            self._queue.append(req)
        self._pause_reading()

    def _next(self) -> None:
        """Serve queued requests until one is waiting for its upstream."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while self._queue and self._exchange is None and not self.closed:
                self._dispatch(self._queue.popleft())
        finally:
            self._in_next = False
        if self.closed:
            return
        idle = self._exchange is None and not self._queue and not self._parsing
        if idle and self.close_when_idle:
            self._close()
            return
        if self._read_paused:
            self._maybe_resume()

    def _maybe_resume(self) -> None:
        """Read from the client again, unless something still holds it back."""
        if (
            self._read_paused
            and not self._refusing
            and not self._upgrading
            and not self._upstream_full
            and len(self._queue) < 8
            and self._queued_bytes <= _BUFFERED_MAX
        ):
            self._resume_reading()

    def _dispatch(self, req: _Request) -> None:
        ingress = self._ingress
        if req.reject is not None:
            status, text = req.reject
            self._write_local(req, status, text, close=True)
            return
        if self.port is not None:
            entry = ingress._table.for_port(self.port)
            if entry is None:
                self._write_local(req, 404, f"no service for port {self.port}")
                return
        else:
            entry = ingress._table.for_host(req.host) if req.host is not None else None
            if entry is None:
                host = req.host.decode("latin-1") if req.host is not None else "(none)"
                self._write_local(req, 404, f"no service for host {host}")
                return
        ex = _Exchange(ingress, self, req, entry)
        self._exchange = ex
        if entry.steered:
            pinned, ex.sticky = entry.steer(req.headers)
        else:
            pinned = None
        endpoint = entry.pick(pinned)
        if endpoint is None:
            which = f" of revision {pinned}" if pinned is not None else ""
            ex.fail(503, f"service {entry.service} has no ready task{which}")
        else:
            ex.pinned = pinned is not None or bool(entry.route.weights)
            if req.expect_continue and not req.body_size and not req.complete:
                # The client waits for this before it sends the body: the request is routed, so
                # the body is wanted. (An answer of our own comes instead: 404, 503.)
                self.write(_CONTINUE)
            ex.send(endpoint)

    def exchange_done(self, close: bool, complete: bool = True) -> None:
        """The exchange is over; ``complete``: its request was received whole (if not, what is
        left of its body is unwanted, and the connection closes)."""
        self._exchange = None
        self._upstream_full = False
        self._last = self._loop.time()
        if not complete and not self.closed:
            self._linger()
        elif close or self.closed:
            self._close()
        elif not self._in_next and (self._queue or self._read_paused or self.close_when_idle):
            self._next()

    def _write_local(self, req: _Request, status: int, text: str, close: bool = False) -> None:
        close = close or not req.keep_alive or self.close_when_idle or not req.complete
        self._drop_body(req)
        assert self._transport is not None
        self._transport.write(
            _text_response(
                status, text, close=close, version10=req.version10, head_only=req.head_only
            )
        )
        if close:
            if req.reject is not None or not req.complete:
                self._linger()
            else:
                self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self._transport is not None
            self._transport.close()

    def _linger(self) -> None:
        """Close without losing the answer: send FIN, read and drop what the client still sends
        (the rest of a refused body), close for good when it closes or after ``_LINGER``."""
        transport = self._transport
        assert transport is not None
        self.closed = True
        self._discarding = True
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            self._resume_reading()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(_LINGER, transport.close)
        else:
            transport.close()

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
            if self._head_began and not self._discarding:
                # The rest of a head could not come while we did not read: it has its time again.
                self._head_began = self._loop.time()
                self._arm_head_timeout()

    # limits and timeouts ───────────────────────────────────────────────────────────────────────

    def _head_incomplete(self, data: bytes) -> None:
        """A read ended inside a request head, whose line not yet complete httptools keeps:
        refuse the head as soon as it cannot fit the limits, rather than buffer it whole; and
        make sure the timer fires at the head's deadline.

        The line's length is exact: the bytes after the last LF read or, in the read the head
        began in and without an LF after it, its request line so far."""
        req = self._req
        if req.line_bytes < 0 and not self._head_began:
            # The head began in this read (a connection's first counts from its opening).
            self._head_began = self._last
        nl = data.rfind(b"\n")
        if nl >= 0:
            line = len(data) - nl - 1
        elif req.line_bytes < 0:
            line = len(req.url)
        else:
            line = req.line_bytes + len(data)
        req.line_bytes = line
        ingress = self._ingress
        too_large = self._head_too_large()
        if too_large is None:
            room = ingress._max_header_bytes - req.header_bytes
            if not req.headers:
                room = max(room, ingress._limits.max_request_line)  # it may be the request line
            if line + 2 > room:
                too_large = (431, f"request headers larger than {ingress._max_header_bytes} bytes")
        if too_large is not None:
            self._refuse(*too_large)
        else:
            self._arm_head_timeout()

    def _head_too_large(self) -> tuple[int, str] | None:
        """414 or 431 if the head's request line or its complete headers are over the limits."""
        req = self._req
        ingress = self._ingress
        limit = ingress._limits.max_request_line
        # The URL comes in pieces as it arrives (``on_url``). 13 bytes are the shortest rest of a
        # request line: "GET", two spaces, "HTTP/1.1".
        if len(req.url) + 13 > limit and len(self._parser.get_method()) + len(req.url) + 10 > limit:
            return 414, f"request line longer than {limit} bytes"
        headers = req.headers
        if len(headers) > ingress._max_header_fields:
            return 431, f"request headers more than {ingress._max_header_fields} fields"
        size = req.header_bytes
        for name, value in headers[req.headers_counted :]:
            size += len(name) + len(value) + 4
        req.header_bytes, req.headers_counted = size, len(headers)
        if size > ingress._max_header_bytes:
            return 431, f"request headers larger than {ingress._max_header_bytes} bytes"
        return None

    def _arm_head_timeout(self) -> None:
        """Make the timer fire by the head deadline (it may be set for a later idle one)."""
        deadline = self._head_began + self._ingress._limits.head_timeout
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._set_timer(deadline - self._loop.time())

    def _set_timer(self, delay: float) -> None:
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        """The connection's one timer. While a request head is awaited, the head timeout; while
        no request is in progress, the idle timeout (from the last byte either way); while one
        is, the response timeout is in charge (``Ingress._sweep``). Checked when it fires, not
        re-armed per request: a keep-alive request that comes whole in one read costs no timer."""
        self._timer = None
        if self.closed:
            return
        limits = self._ingress._limits
        now = self._loop.time()
        wait = limits.idle_timeout
        if self._head_began and not self._read_paused:
            left = self._head_began + limits.head_timeout - now
            if left <= 0:
                self._head_timed_out(limits.head_timeout)
                return
            wait = min(wait, left)
        elif self._exchange is None and not self._queue:
            left = self._last + limits.idle_timeout - now
            if left <= 0:
                self._close()
                return
            wait = left
        self._set_timer(wait)

    def _head_timed_out(self, timeout: float) -> None:
        """408 for a head begun and not finished in time (after the responses queued before it),
        then close; a connection that sent nothing yet is closed without a word."""
        self._head_began = 0.0
        if not self._in_head:
            self._close()
            return
        self._refuse(408, f"request head not received within {timeout:g}s")
        if self._exchange is None:
            self._next()

    def close_if_idle(self) -> None:
        """The listener closed or the ingress stops: close now if idle, else after the current
        response."""
        self.close_when_idle = True
        if self._exchange is None and not self._queue and not self._parsing:
            self._close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.write(data)

    def shutdown(self) -> None:
        """The ingress stops: drop the request in progress and what is still to be written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ex = self._exchange
        self._exchange = None
        if ex is not None:
            ex.abort()
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def became_tunnel(self) -> bytes:
        """The task agreed to the upgrade: the connection is a tunnel's from now on (its
        transport has another protocol). What the client sent after its request is returned."""
        self.closed = True
        self._exchange = None
        self._queue.clear()
        self._ingress._clients.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._tunnel_pending = self._tunnel_pending, b""
        return pending

    def abort_response(self) -> None:
        """A response is partly forwarded and cannot be finished: all we can do is close."""
        self._exchange = None
        if not self.closed:
            self.closed = True
            assert self._transport is not None
            self._transport.close()


def _sockets(server: asyncio.Server) -> list[socket.socket]:
    """A server's listening sockets: a tuple under asyncio, a list under uvloop (typed a tuple),
    so read untyped, or the compiled ingress would insist on a tuple."""
    return list(getattr(server, "sockets"))  # noqa: B009


# ── the data plane ───────────────────────────────────────────────────────────────────────────────


class Ingress:
    """The built-in HTTP data plane (implements ``warren.ports.DataPlane``).

    Listens on ``shared_port`` (routed by Host; 0 picks a free port) and on every port a route
    publishes. Ports that cannot be bound are reported in ``problems`` and retried on the next
    ``update``. ``listeners``: listening sockets handed over by the ingress this one replaces,
    by port — served as they are instead of bound again, so that no connection is refused
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
        if self._shared_port is not None and self._shared_port in wanted:
            service = wanted.pop(self._shared_port)
            problems[self._shared_port] = (
                f"port {self._shared_port} is the shared port; {service} cannot publish it"
            )
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
