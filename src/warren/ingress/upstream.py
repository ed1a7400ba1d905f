"""The upstream side: ``_Upstream``, one connection to an upstream address, which serves one
exchange at a time and goes back to the ``Pool`` when both sides allow keep-alive; and the
``Pool`` of those connections, owned by the ingress: the idle ones per address (LIFO, at most
``_POOL_MAX``), those being opened, and all open.

The response parser only rewrites the head (hop-by-hop headers, ``Connection``) and finds the end
of the message; body bytes are forwarded as received (``_Dechunker`` takes the chunks off for an
HTTP/1.0 client). A 101 to an upgrade hands both connections to a ``_Tunnel``.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from .messages import (
    _CLOSE,
    _KEEP_ALIVE,
    _MAX_HEAD,
    _NATIVE,
    _SMALL_BODY,
    _parser_error,
    _ResponseHead,
)
from .tunnel import _Tunnel

if TYPE_CHECKING:
    from .exchange import _Exchange
    from .proxy import Ingress

__all__ = ["Pool", "_Dechunker", "_Upstream"]

log = logging.getLogger("warren.ingress")

_POOL_MAX = 64
"""Idle connections kept per upstream address. LIFO: the most recently used is the least likely
to have been closed by the upstream's own idle timeout."""


class _Upstream(asyncio.Protocol):
    """One connection to an upstream address; serves one exchange at a time, then goes back to
    the pool if both sides allow keep-alive."""

    def __init__(self, ingress: Ingress, address: str) -> None:
        self._ingress = ingress
        self.address = address
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._ex: _Exchange | None = None
        self.idle = False
        self.paused = False
        self.lost = False
        self._switching = False
        """The task answered 101 to an upgrade: the connection becomes a tunnel."""
        self._dechunk: _Dechunker | None = None
        """Takes the chunks off a response to an HTTP/1.0 client (the connection is then not
        used again)."""
        self._reset()

    def _reset(self) -> None:
        self._got = False
        self._status = 0
        self._interim = 0
        self._head_done = False
        self._head_sent = False
        self._msg_done = False
        self._keep = False
        self._violation = False
        self._until_close = False
        self._buf: bytearray | None = None
        """A response head that came in more than one read, until it is whole."""

    # asyncio callbacks ─────────────────────────────────────────────────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._ingress._pool.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.lost = True
            self._ingress._pool.open.discard(self)
            if self.idle:
                self.idle = False
                self._ingress._pool.remove(self)
                return
            ex = self._ex
            if ex is None:
                return
            self._ex = None
            if self._head_sent and self._until_close and not self._violation:
                # The body was delimited by the close: this is its normal end.
                ex.complete(self, keep=False)
                return
            if exc is None:
                reason = f"{self.address} closed the connection"
            else:
                reason = f"connection to {self.address} lost: {exc}"
            ex.upstream_failed(reason, nothing_received=not self._got)
        except Exception:
            log.exception("ingress: error while closing an upstream connection")

    def data_received(self, data: bytes) -> None:
        ex = self._ex
        if ex is None:
            # Nothing asked: an idle connection should be silent. Do not reuse it.
            self.discard()
            return
        try:
            self._got = True
            ex.last_progress = self._ingress._loop.time()
            if _NATIVE and self._buf is None and not self._head_sent and not self._interim:
                # (As Python, llhttp reads it at less cost: see ``_NATIVE``.)
                head = _ResponseHead.whole(data, ex.req.head_only)
                if head is not None:
                    # The common response, whole in this read: read without llhttp.
                    self._status = head.status
                    self._keep = head.keep
                    self._head_done = self._msg_done = True
                    self._send_head(ex, data, head)
                    self._ex = None
                    ex.complete(self, head.keep)
                    return
            try:
                self._parser.feed_data(data)
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                # llhttp stops after a 101 (raising HttpParserUpgrade, or a plain error when
                # the 101 has no "Connection: upgrade"): what follows is the new protocol's.
                if self._switching:
                    self._tunnel(ex, data)
                else:
                    self._broken(ex, f"bad response from {self.address}: {_parser_error(exc)}")
                return
            if self._head_sent:
                ex.client.write(data if self._dechunk is None else self._dechunk.feed(data))
            else:
                pending = self._buf
                if pending is not None:
                    pending += data
                if not self._head_done:
                    if pending is None:
                        self._buf = bytearray(data)
                    elif len(pending) > _MAX_HEAD:
                        self._broken(ex, f"response head from {self.address} is too large")
                    return
                if not self._send_head(ex, data if pending is None else bytes(pending)):
                    self._broken(ex, f"bad response head from {self.address}")
                    return
            if self._violation:
                # More than one response for one request: the upstream is confused, and the
                # client may have got bytes that are not ours to send. Close both.
                self._broken(ex, f"{self.address} sent more than one response")
                return
            if ex.client.write_paused and not self.paused:
                self.pause()
            if self._msg_done:
                self._ex = None
                if ex.req.head_only:
                    # llhttp cannot be told that a HEAD response has no body: start afresh.
                    self._parser = httptools.HttpResponseParser(self)
                ex.complete(self, self._keep)
        except Exception:
            log.exception("ingress: error while forwarding a response")
            self._broken(ex, "internal error")

    def _send_head(self, ex: _Exchange, buf: bytes, head: _ResponseHead | None = None) -> bool:
        """Forward the response head, rewritten, and the body bytes that came with it
        (``head``: the head of ``buf``, if already read)."""
        if head is None:
            # 1xx heads come first; they are dropped (Expect was answered by the ingress).
            start = 0
            for _ in range(self._interim):
                start = buf.find(b"\r\n\r\n", start) + 4
            end = buf.find(b"\r\n\r\n", start) + 2
            if end < 2:
                return False  # llhttp found a head we cannot: do not guess where it ends
            head = _ResponseHead(buf, start, end)
        end = head.end
        lines = head.kept
        encoding = head.encoding
        req = ex.req
        status = self._status
        if self._msg_done or req.head_only or status == 204 or status == 304:
            # A response already complete in this read is not delimited by the close.
            until_close = False
        elif encoding:
            until_close = not encoding[18:].strip().lower().endswith(b"chunked")
        else:
            until_close = not head.length
        self._until_close = until_close
        if not lines[0].startswith(b"HTTP/1.1 "):
            lines[0] = b"HTTP/1.1 " + lines[0][9:]  # we speak HTTP/1.1 to the client
        close = not req.keep_alive or until_close or ex.client.close_when_idle
        if req.version10 and not (req.head_only or status == 204 or status == 304) and encoding:
            # An HTTP/1.0 client cannot read chunks (the task should not have sent them: it was
            # asked in HTTP/1.0 too): their framing is taken off, and the close ends the body.
            lines = [line for line in lines if line is not encoding]
            self._dechunk = _Dechunker()
            self._keep = False
            close = True
        ex.close_client = close
        # The last line is empty (after the head's last LF): what the ingress adds goes there,
        # then the blank line.
        extra = _CLOSE if close else _KEEP_ALIVE if req.version10 else b""
        if ex.sticky is not None and ex.endpoint is not None:
            # Only the head grows: the body's framing (length, chunks, close) is untouched.
            extra += b"Set-Cookie: %s%d; Path=/; HttpOnly; SameSite=Lax\r\n" % (
                ex.sticky,
                ex.endpoint.revision,
            )
        lines[-1] = extra + b"\r\n"
        out = b"\n".join(lines)
        self._head_sent = True
        ex.head_sent = True
        ex.status = status
        self._buf = None
        rest = len(buf) - end - 2
        if rest == 0 or (self._msg_done and req.head_only):
            # (A HEAD response's Content-Length announces no body bytes.)
            ex.client.write(out)
        elif self._dechunk is not None:
            ex.client.write(out + self._dechunk.feed(buf[end + 2 :]))
        elif rest <= _SMALL_BODY:
            ex.client.write(out + buf[end + 2 :])
        else:
            ex.client.write(b"".join((out, memoryview(buf)[end + 2 :])))
        return True

    def _tunnel(self, ex: _Exchange, data: bytes) -> None:
        """Forward the 101 as it is (its Connection and Upgrade say what the client asked),
        and pipe both connections into each other from now on."""
        buf = data if self._buf is None else bytes(self._buf + data)
        start = 0
        for _ in range(self._interim):
            start = buf.find(b"\r\n\r\n", start) + 4
        end = buf.find(b"\r\n\r\n", start) + 2
        head = b"HTTP/1.1 " + buf[start + 9 : end]
        if ex.sticky is not None and ex.endpoint is not None:
            head += b"Set-Cookie: %s%d; Path=/; HttpOnly; SameSite=Lax\r\n" % (
                ex.sticky,
                ex.endpoint.revision,
            )
        client = ex.client
        client.write(b"".join((head, b"\r\n", memoryview(buf)[end + 2 :])))
        self._ex = None
        self.lost = True  # never pooled again
        self._ingress._pool.open.discard(self)
        address = ex.address
        ex.address = None  # the tunnel keeps the address's in-flight count (see Ingress.drain)
        ex.status = 101
        ex.head_sent = True
        ex.upstream = None
        ex._finish()  # the request is counted, with the time to its 101
        assert address is not None and self.transport is not None
        _Tunnel(self._ingress, address, client, self.transport, paused=self.paused)

    def _broken(self, ex: _Exchange, reason: str) -> None:
        self._ex = None
        self.discard()
        ex.upstream_failed(reason, nothing_received=False)

    def eof_received(self) -> bool:
        self.lost = True  # the transport closes now: never take it from the pool again
        return False  # connection_lost decides what the close means

    # httptools callbacks ───────────────────────────────────────────────────────────────────────

    def on_message_begin(self) -> None:
        if self._msg_done:
            self._violation = True
        self._status = 0

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            ex = self._ex
            if status == 101 and ex is not None and ex.req.upgrade is not None:
                self._switching = True  # (llhttp stops here: see ``data_received``)
            else:
                self._interim += 1
            return
        self._status = status
        self._head_done = True
        self._keep = self._parser.should_keep_alive()
        ex = self._ex
        if ex is not None and ex.req.head_only:
            self._msg_done = True

    def on_message_complete(self) -> None:
        if self._status:
            self._msg_done = True

    # used by the exchange and the pool ─────────────────────────────────────────────────────────

    def start(self, ex: _Exchange, data: bytes) -> None:
        self._ex = ex
        self.idle = False
        self._reset()
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        # The request's body comes faster than the upstream takes it.
        if self._ex is not None:
            self._ex.client.upstream_full(True)

    def resume_writing(self) -> None:
        if self._ex is not None:
            self._ex.client.upstream_full(False)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def discard(self) -> None:
        """Close for good, telling no one (the caller has dealt with the exchange)."""
        self._ex = None
        self.idle = False
        self.lost = True  # not usable from now on, even before connection_lost says so
        if self.transport is not None:
            self.transport.abort()


class _Dechunker:
    """Chunked framing taken off a body, as it comes. (llhttp parses the same bytes and refuses
    bad framing: this only has to cut.)"""

    __slots__ = ("left", "line", "state")

    # Where in the framing it is (one name each: mypyc compiles no unpacking in a class body).
    _SIZE = 0
    _DATA = 1
    _DATA_END = 2
    _TRAILERS = 3
    _DONE = 4

    def __init__(self) -> None:
        self.state = self._SIZE
        self.left = 0
        """Bytes of the current chunk still to come."""
        self.line = b""
        """A size or trailer line not yet whole."""

    def feed(self, data: bytes) -> bytes:
        out = []
        i, n = 0, len(data)
        while i < n and self.state != self._DONE:
            if self.state == self._DATA:
                take = min(self.left, n - i)
                out.append(data[i : i + take])
                i += take
                self.left -= take
                if not self.left:
                    self.state = self._DATA_END
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += data[i:]
                break
            line = (self.line + data[i:j]).rstrip(b"\r")
            self.line = b""
            i = j + 1
            if self.state == self._SIZE:
                self.left = int(line.split(b";")[0], 16)
                self.state = self._DATA if self.left else self._TRAILERS
            elif self.state == self._DATA_END:
                self.state = self._SIZE
            elif not line:  # the blank line after the trailers
                self.state = self._DONE
        return b"".join(out)


class Pool:
    """The connections to upstream addresses of one ingress."""

    def __init__(self, ingress: Ingress, connect_timeout: float) -> None:
        self._ingress = ingress
        self._connect_timeout = connect_timeout
        self.idle: dict[str, list[_Upstream]] = {}
        """Per address, the connections kept for the next request: the last one is taken first."""
        self.connecting: dict[asyncio.Task[_Upstream], _Exchange] = {}
        """Connections being opened, and the exchange each is for."""
        self.open: set[_Upstream] = set()
        """Every connection open, idle or not."""

    def take(self, address: str) -> _Upstream | None:
        """An idle connection to ``address``, the most recently used (None: open one)."""
        pool = self.idle.get(address)
        while pool:
            conn = pool.pop()
            conn.idle = False
            if not conn.lost:
                return conn
        return None

    def remove(self, conn: _Upstream) -> None:
        """An idle connection closed."""
        pool = self.idle.get(conn.address)
        if pool is not None and conn in pool:
            pool.remove(conn)

    def release(self, conn: _Upstream, keep: bool) -> None:
        """A connection done with its exchange: kept idle if ``keep`` and its address is still
        routed to, else closed."""
        address = conn.address
        ingress = self._ingress
        if keep and not ingress._closing and not conn.lost and ingress._table.routes_to(address):
            pool = self.idle.get(address)
            if pool is None:
                pool = self.idle[address] = []
            if len(pool) < _POOL_MAX:
                if conn.paused:
                    conn.resume()
                conn.idle = True
                pool.append(conn)
                return
        conn.discard()

    def close_address(self, address: str) -> None:
        """Close the idle connections to ``address``."""
        for conn in self.idle.pop(address, []):
            conn.discard()

    def connect(self, ex: _Exchange, address: str) -> None:
        """Open a connection to ``address`` for ``ex``, which it is given when it comes."""
        task = self._ingress._loop.create_task(self._open(address))
        self.connecting[task] = ex
        task.add_done_callback(lambda t: self._connected(t, ex, address))

    async def _open(self, address: str) -> _Upstream:
        host, port = _split_address(address)
        ingress = self._ingress
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await ingress._loop.create_connection(
                lambda: _Upstream(ingress, address), host, port
            )
        return conn

    def _connected(self, task: asyncio.Task[_Upstream], ex: _Exchange, address: str) -> None:
        self.connecting.pop(task, None)
        ingress = self._ingress
        try:
            if task.cancelled():
                if not ingress._closing:
                    ex.connect_failed(address, ConnectionAbortedError("cancelled"))
                return
            exc = task.exception()
            if exc is not None:
                if not ingress._closing:
                    ex.connect_failed(address, exc)
                return
            conn = task.result()
            if ex.done or ingress._closing:
                self.release(conn, True)
            else:
                ex.attach(conn)
        except Exception:
            log.exception("ingress: error after connecting to %s", address)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
