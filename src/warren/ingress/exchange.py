"""One request on its way to an upstream: an ``_Exchange`` is made as soon as the request's head
is in. It picks an endpoint from the routing table (its client has found the route), takes a
pooled ``_Upstream`` connection (or has one opened), writes the head and the body received so
far, and then the rest of the body as it comes (with its Content-Length, or chunked as the client
sent it); the response streams back through the upstream connection to the client as it
arrives. A pooled connection the upstream had closed while idle is retried once on a fresh one
(the request is kept while it is under ``_REPLAY_MAX``); a refused connection, on the route's
next endpoint. When the response is forwarded, or the exchange fails or gives up, it is counted
(``Counters.answered``) and its client serves its next request.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..ports import Endpoint
from .counters import Counts
from .messages import _Request, _text_response
from .routing import ServiceEntry
from .upstream import _Upstream

if TYPE_CHECKING:
    from .downstream import _Client
    from .proxy import Ingress

__all__ = ["_Exchange"]

log = logging.getLogger("warren.ingress")

_REPLAY_MAX = 64 * 1024
"""Request bytes kept after they are sent, so that a request sent on a pooled connection the
upstream had just closed can be sent again on a fresh one. A request that sent more is not."""


class _Exchange:
    """A request being served: which endpoint it went to, on which connection, and what of the
    response the client has already seen."""

    __slots__ = (
        "address",
        "client",
        "close_client",
        "done",
        "ended",
        "endpoint",
        "entry",
        "head_sent",
        "ingress",
        "last_progress",
        "payload",
        "pinned",
        "req",
        "retried",
        "reused",
        "rev_stats",
        "started",
        "status",
        "sticky",
        "streamed",
        "streamed_bytes",
        "streaming",
        "tried",
        "upstream",
    )

    def __init__(self, ingress: Ingress, client: _Client, req: _Request, entry: ServiceEntry):
        self.ingress = ingress
        self.client = client
        self.req = req
        self.entry = entry
        self.started = ingress._counters.clock()
        self.rev_stats: Counts | None = None
        """The counters of the revision the request went to (see ``Counters``)."""
        self.endpoint: Endpoint | None = None
        self.address: str | None = None
        """The address counted as in flight for this request."""
        self.upstream: _Upstream | None = None
        self.payload = b""
        """What was written first on the upstream connection: the head, and the body so far."""
        self.streamed: list[bytes] | None = None
        """The body written after it (framed), kept while it is small enough to send again
        (made when needed: most requests stream nothing)."""
        self.streamed_bytes = 0
        self.streaming = False
        """On an upstream connection, with more of the body to come: sent as it comes."""
        self.ended = not req.has_body
        """The end of the body was written upstream."""
        self.pinned = False
        self.sticky: bytes | None = None
        """``NAME=`` of the sticky cookie the response sets to the revision that answers."""
        self.reused = False
        self.retried = False
        self.tried: list[str] | None = None
        """Addresses that refused a connection for this request (created on the first)."""
        self.head_sent = False
        self.close_client = False
        self.done = False
        self.status = 0
        self.last_progress = 0.0

    def send(self, endpoint: Endpoint, fresh: bool = False) -> None:
        """Send the request to ``endpoint``: on a pooled connection, or a new one."""
        ingress = self.ingress
        if endpoint is not self.endpoint:
            self._count(endpoint)
        conn = None if fresh else ingress._pool.take(endpoint.address)
        if conn is not None:
            self.reused = True
            self.attach(conn)
        else:
            self.reused = False
            ingress._pool.connect(self, endpoint.address)

    def _count(self, endpoint: Endpoint) -> None:
        """Count the request in flight to ``endpoint`` (and no longer to the previous one)."""
        counters = self.ingress._counters
        if self.address is not None:
            counters.add_in_flight(self.address, -1)
        if self.rev_stats is not None:
            self.rev_stats.in_flight -= 1
        self.endpoint = endpoint
        address = self.address = endpoint.address
        self.rev_stats = counters.sent(self.entry.service, endpoint.revision, address)

    def attach(self, conn: _Upstream) -> None:
        self.upstream = conn
        ingress = self.ingress
        self.last_progress = ingress._loop.time()
        # Watched for the response timeout by the periodic sweep, not by a timer of its own.
        ingress._waiting.add(self)
        if ingress._sweeper is None:
            ingress._start_sweep()
        req = self.req
        if not self.payload:
            # (Most requests have no body: their head is all.)
            data = self.payload = self._first_bytes(req) if req.has_body else req.head + b"\r\n"
        else:
            data = self._again(req)  # on a fresh connection, after a pooled one failed
        conn.start(self, data)
        self.streaming = not req.complete

    def _first_bytes(self, req: _Request) -> bytes:
        """The head, with the framing of the body, and the body received so far (whole, for
        most requests: they are sent in one write)."""
        body = req.body
        self.client._drop_body(req)  # sent: no longer held
        if not req.chunked:
            self.ended = req.complete
            length = b"Content-Length: %d\r\n\r\n" % req.content_length
            return b"".join([req.head, length, *body])
        # Chunked from the client, chunked upstream: its length is not known before its end.
        parts = [req.head, b"Transfer-Encoding: chunked\r\n\r\n"]
        for piece in body:
            parts += (b"%x\r\n" % len(piece), piece, b"\r\n")
        if req.complete:
            parts.append(b"0\r\n\r\n")
            self.ended = True
        return b"".join(parts)

    def _again(self, req: _Request) -> bytes:
        """All that was sent on the failed connection, then what came meanwhile."""
        parts = [self.payload, *(self.streamed or ())]
        pieces = req.body
        self.client._drop_body(req)
        for piece in pieces:
            self._log(self._frame(piece))
            parts.append(self._frame(piece))
        if req.complete and not self.ended:
            self.ended = True
            if req.chunked:
                self._log(b"0\r\n\r\n")
                parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    def _frame(self, piece: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(piece), piece) if self.req.chunked else piece

    def _log(self, data: bytes) -> None:
        """Keep ``data``, sent upstream, while the request is small enough to be sent again."""
        self.streamed_bytes += len(data)
        if self.streamed_bytes > _REPLAY_MAX:
            self.streamed = None
        elif self.streamed is None:
            self.streamed = [data]
        else:
            self.streamed.append(data)

    def send_body(self, piece: bytes) -> None:
        """More of the body, straight to the upstream connection (``streaming``)."""
        data = self._frame(piece)
        assert self.upstream is not None and self.upstream.transport is not None
        self.upstream.transport.write(data)
        self.last_progress = self.client._last
        if self.streamed_bytes <= _REPLAY_MAX:
            self._log(data)

    def end_body(self) -> None:
        self.streaming = False
        self.ended = True
        if self.req.chunked:
            assert self.upstream is not None and self.upstream.transport is not None
            self.upstream.transport.write(b"0\r\n\r\n")
            self._log(b"0\r\n\r\n")

    def drop_upstream(self) -> None:
        """Let the upstream connection go, whatever it was doing (a connection still being
        opened is let go when it comes)."""
        self.streaming = False
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.discard()

    def connect_failed(self, address: str, exc: BaseException) -> None:
        """Connecting failed before anything was sent: try the next endpoint of the route."""
        if self.done:
            return
        timed_out = isinstance(exc, TimeoutError)
        if timed_out:
            reason = f"timed out connecting to {address}"
        elif isinstance(exc, ConnectionRefusedError):
            reason = f"connection refused by {address}"
        else:
            reason = f"cannot connect to {address}: {exc}"
        log.debug("ingress: %s (service %s)", reason, self.entry.service)
        if self.tried is None:
            self.tried = []
        self.tried.append(address)
        # A weighted or pinned request keeps its revision when it retries another endpoint.
        revision = self.endpoint.revision if self.pinned and self.endpoint else None
        endpoint = self.entry.pick_other(self.tried, revision)
        if endpoint is not None:
            self.send(endpoint)
        elif timed_out:
            self.fail(504, f"gateway timeout: {reason}")
        else:
            self.fail(502, f"bad gateway: {reason}")

    def upstream_failed(self, reason: str, nothing_received: bool) -> None:
        """The upstream connection broke (closed, reset, bad response) during this request."""
        self.upstream = None
        self.streaming = False
        if self.done:
            return
        if (
            nothing_received
            and self.reused
            and not self.retried
            and self.endpoint is not None
            and self.streamed_bytes <= _REPLAY_MAX
        ):
            # A pooled connection the upstream had closed while idle: the request never reached
            # it. Once, on a fresh connection.
            self.retried = True
            log.debug("ingress: retrying on a fresh connection after: %s", reason)
            self.send(self.endpoint, fresh=True)
        elif not self.head_sent:
            log.debug("ingress: bad gateway: %s (service %s)", reason, self.entry.service)
            self.fail(502, f"bad gateway: {reason}")
        else:
            log.debug("ingress: response cut short: %s (service %s)", reason, self.entry.service)
            self.status = self.status or 502
            self._finish()
            self.client.abort_response()

    def complete(self, conn: _Upstream, keep: bool) -> None:
        """The whole response has been forwarded (the request's body may not have been, if the
        upstream answered before its end: that connection then goes)."""
        self.upstream = None
        self.ingress._pool.release(conn, keep and self.ended)
        self._finish()
        # (The response's last bytes have just come: ``last_progress`` is now.)
        self.client.exchange_done(self.close_client, self.req.complete, self.last_progress)

    def fail(self, status: int, text: str) -> None:
        """Answer the client with an error of our own (nothing of a response was sent yet)."""
        self.status = status
        req = self.req
        close = not req.keep_alive or self.client.close_when_idle or not req.complete
        self._finish()
        self.client._drop_body(req)
        self.client.write(
            _text_response(
                status, text, close=close, version10=req.version10, head_only=req.head_only
            )
        )
        self.client.exchange_done(close, req.complete)

    def abort(self) -> None:
        """The client went away: drop the upstream connection (its response is unwanted)."""
        if self.done:
            return
        self.drop_upstream()
        self._finish()

    def _finish(self) -> None:
        self.done = self.req.done = True
        self.streaming = False
        ingress = self.ingress
        ingress._waiting.discard(self)
        address = self.address
        self.address = None
        ingress._counters.answered(
            self.rev_stats, self.entry.service, address, self.started, self.status >= 500
        )

    def time_out(self, timeout: float) -> None:
        """Nothing moved for ``timeout`` seconds (see ``Ingress._sweep``)."""
        conn = self.upstream
        if conn is not None and conn.paused:
            reason = f"client read nothing for {timeout:g}s"
        else:
            reason = f"{self.address} sent nothing for {timeout:g}s"
        self.give_up(reason)

    def give_up(self, reason: str) -> None:
        """Stop waiting on the upstream (a connection being opened for this request included:
        it is let go when it comes) and answer 504; a response already under way is cut."""
        self.drop_upstream()
        log.debug("ingress: timeout: %s (service %s)", reason, self.entry.service)
        if not self.head_sent:
            self.fail(504, f"gateway timeout: {reason}")
        else:
            self.status = self.status or 504
            self._finish()
            self.client.abort_response()
