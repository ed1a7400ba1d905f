"""The client side: one ``_Client`` per client connection parses requests (httptools), queues
pipelined ones and serves them one at a time, each through an ``_Exchange``; or answers a request
itself (404 without a route, the refusals below). A request body is not held whole: it follows
its head upstream as it comes, a client whose request is not yet on an upstream connection is
not read past ``_BUFFERED_MAX`` bytes, and one whose upstream stops taking the body stops being
read (``upstream_full``).

What a client may send, and how long it may take, is bounded by ``Limits``: a head over the
size limits is refused (414, 431) as soon as it crosses them, and one not whole in time (408) by
the connection's one timer, which also closes idle keep-alive connections. A head that comes
whole in one read, the common case, costs no timer and no byte count.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from .exchange import _Exchange
from .messages import (
    _CONTINUE,
    _HTTP10,
    _HTTP11,
    _forwarded,
    _parser_error,
    _Request,
    _scan_headers,
    _Stop,
    _text_response,
)
from .routing import RoutingTable, ServiceEntry

if TYPE_CHECKING:
    from .proxy import Ingress

__all__ = ["_Client"]

log = logging.getLogger("warren.ingress")

_MAX_PIPELINE = 32
"""Queued pipelined requests per client before we stop reading from it (resumed below 8)."""

_BUFFERED_MAX = 256 * 1024
"""Request body bytes held for a client (its request not yet on an upstream connection, or
pipelined behind another) before we stop reading from it."""

_CLOCK_STEP = 0.001
"""The loop's clock step: uvloop's time is whole milliseconds, rounded down, so a time read from
it may stand up to 1 ms before the moment it was read. The head and idle deadlines, counted from
such times, are moved by one step: never reached before their timeout has passed."""

_LINGER = 2.0
"""After refusing a request whose body may still be arriving (413, 400), keep reading and
discarding for this long before closing, so that the client reads our answer instead of a reset."""


def _no_service(table: RoutingTable, host: bytes | None, target: bytes) -> str:
    """Why a request on the shared port has no service: its host has none, or (some of its
    services claim path prefixes) none of them claims its path."""
    if host is None:
        return "no service for host (none)"
    name = host.decode("latin-1")
    if table.for_host(host) is None:
        return f"no service for host {name}"
    path = target.partition(b"?")[0].decode("latin-1")
    return f"no service for host {name} and path {path}"


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
        self._forwarded = b""
        """X-Forwarded-For and -Proto for the requests that have no X-Forwarded-For."""
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
        self._forwarded = _forwarded(self._peer, self._proto)
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
        req.keep_alive = parser.should_keep_alive()
        # Kept alive with no Connection header, a request is HTTP/1.1 (or later): the version,
        # a string llhttp's binding formats on each call, is asked only otherwise.
        if _scan_headers(req, self._peer, self._proto, self._forwarded) or not req.keep_alive:
            req.version10 = parser.get_http_version() == "1.0"
            if req.version10:
                # An HTTP/1.0 client cannot read a chunked response: ask in HTTP/1.0 upstream too.
                req.head = req.head.replace(_HTTP11, _HTTP10, 1)
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
            table = ingress._table
            # RoutingTable.for_request, inlined: a host without path prefixes costs one call.
            hit = table.for_host(req.host) if req.host is not None else None
            entry = hit if hit is None or isinstance(hit, ServiceEntry) else hit.match(req.url)
            if entry is None:
                self._write_local(req, 404, _no_service(table, req.host, req.url))
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

    def exchange_done(self, close: bool, complete: bool = True, now: float = 0.0) -> None:
        """The exchange is over; ``complete``: its request was received whole (if not, what is
        left of its body is unwanted, and the connection closes). ``now``: the loop's time, if
        the caller has just read it."""
        self._exchange = None
        self._upstream_full = False
        self._last = now or self._loop.time()
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
        deadline = self._head_began + self._ingress._limits.head_timeout + _CLOCK_STEP
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
            left = self._head_began + limits.head_timeout + _CLOCK_STEP - now
            if left <= 0:
                self._head_timed_out(limits.head_timeout)
                return
            wait = min(wait, left)
        elif self._exchange is None and not self._queue:
            left = self._last + limits.idle_timeout + _CLOCK_STEP - now
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
