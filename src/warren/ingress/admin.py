"""The admin socket of a ``warren ingress`` process: a unix socket in its data dir (0700), where
the server or worker that supervises it drains an endpoint and reads its counters, and where an
ingress that replaces it takes over its listening sockets.

One JSON object a line each way, requests answered in order::

    {"op": "info"}               → {"pid": 4242, "version": "0.1.0", "sharedPort": 8000, …}
    {"op": "drain", "address": "127.0.0.1:41234", "timeout": 10}   → {"left": 0}
    {"op": "stats"}              → the counters per service and per revision, "problems" …
    {"op": "handover"}           → {"ports": [8000, 8080], "sharedPort": 8000, "routes": {…}},
                                   then the listening sockets of those ports (SCM_RIGHTS)
    {"op": "release"}            → {"released": true} once the old ingress accepts no more
    anything wrong               → {"error": "one line"}

A handover (``take_over``) gives the new ingress the very sockets the old one listens on —
one accept queue, no instant where a port is not listening, nothing refused — and the old one
stops accepting only once the new one serves them (``release``); it then finishes what it has
in flight and exits. A replacement that dies before ``release`` leaves the old one serving.

Must not import control, agent, api or store: only ``ports``, ``domain`` and the standard
library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..domain.errors import UnavailableError, WarrenError
from ..ports import LATENCY_BUCKETS, RouteStats

__all__ = [
    "AdminClient",
    "AdminServer",
    "HandingOver",
    "Handover",
    "stats_from_wire",
    "stats_to_wire",
    "take_over",
]

log = logging.getLogger("warren.ingress")

LINE_LIMIT = 64 * 1024 * 1024
"""The longest answer read (the counters of many services, a large routing table)."""
FDS_PER_MESSAGE = 200
"""Linux passes at most 253 descriptors in one message."""

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class HandingOver(Protocol):
    """What the old ingress gives the one that takes over from it."""

    def offer(self) -> tuple[dict[str, Any], list[int]]:
        """The handover message (``ports`` in the order of the descriptors), and the
        descriptors of the listening sockets."""
        ...

    async def release(self) -> None:
        """The new ingress serves: stop accepting (and go on to finish and exit)."""
        ...


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class AdminServer:
    def __init__(
        self, path: Path, handlers: Mapping[str, Handler], handing: HandingOver | None = None
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.handing = handing
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on ``path``. Bound under another name first, then renamed over it: an ingress
        that replaces another takes the name only once it serves, and the old one's
        connections in progress are not cut."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            sock.listen(64)
            sock.setblocking(False)
            os.replace(tmp, self.path)
        except OSError as exc:
            sock.close()
            raise UnavailableError(
                f"cannot serve the ingress's admin socket {self.path}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept(sock))

    async def close(self) -> None:
        """Stop answering; the socket's name is left to whoever holds it now."""
        tasks = [*self._conns, *([self._accepting] if self._accepting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(sock)
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buffered = b""
        try:
            while True:
                while b"\n" not in buffered:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:
                        return
                    buffered += data
                raw, buffered = buffered.split(b"\n", 1)
                await self._answer(conn, raw)
        except OSError:
            pass  # the client went away
        finally:
            conn.close()

    async def _answer(self, conn: socket.socket, raw: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            request = json.loads(raw)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            await loop.sock_sendall(conn, _line({"error": 'expected {"op": …}'}))
            return
        if op == "handover" and self.handing is not None:
            await self._hand_over(conn, self.handing)
            return
        if op == "release" and self.handing is not None:
            await self.handing.release()
            await loop.sock_sendall(conn, _line({"released": True}))
            return
        handler = self.handlers.get(op)
        if handler is None:
            answer: dict[str, Any] = {"error": f"unknown op {op!r}"}
        else:
            try:
                answer = await handler(request)
            except WarrenError as exc:
                answer = {"error": exc.message}
            except Exception as exc:  # one bad request must not end the admin socket
                log.exception("ingress admin: %s failed", op)
                answer = {"error": f"{type(exc).__name__}: {exc}"}
        await loop.sock_sendall(conn, _line(answer))

    async def _hand_over(self, conn: socket.socket, handing: HandingOver) -> None:
        message, fds = handing.offer()
        await asyncio.get_running_loop().sock_sendall(conn, _line(message))
        for i in range(0, len(fds), FDS_PER_MESSAGE):
            batch = fds[i : i + FDS_PER_MESSAGE]
            # One byte with each batch: small enough never to block on a fresh connection.
            socket.send_fds(conn, [b"F"], batch)


class AdminClient:
    """The supervisor's side: one connection per request (a unix socket costs ~0.1 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def call(self, op: str, wait: float = 5.0, **args: Any) -> dict[str, Any]:
        """Raises UnavailableError when no ingress answers within ``wait`` seconds."""
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.path), limit=LINE_LIMIT
                )
                try:
                    writer.write(_line({"op": op, **args}))
                    raw = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise UnavailableError(f"the ingress does not answer ({self.path}): {exc}") from None
        try:
            answer = dict(json.loads(raw))
        except (ValueError, TypeError):
            raise UnavailableError(f"the ingress answered {raw[:200]!r} to {op}") from None
        if "error" in answer:
            raise UnavailableError(f"the ingress: {answer['error']}")
        return answer


@dataclass
class Handover:
    """What the new ingress got from the old one: its listening sockets by port, its shared
    port and its routing table (wire form); ``release`` tells the old one to stop accepting."""

    sockets: dict[int, socket.socket]
    shared_port: int | None
    routes: dict[str, Any]
    conn: socket.socket
    pid: int | None = None

    def release(self, timeout: float = 10.0) -> None:
        """Blocking: the old ingress stops accepting before this returns."""
        try:
            self.conn.settimeout(timeout)
            self.conn.sendall(_line({"op": "release"}))
            answer = b""
            while b"\n" not in answer:
                data = self.conn.recv(4096)
                if not data:
                    break
                answer += data
            if b'"released":true' not in answer:
                log.warning("the old ingress answered %r to release", answer[:200])
        except OSError as exc:
            log.warning("the old ingress did not confirm it stopped accepting: %s", exc)
        finally:
            self.conn.close()

    def cancel(self) -> None:
        """Give up: close everything received; the old ingress goes on serving."""
        for sock in self.sockets.values():
            sock.close()
        self.conn.close()


def take_over(path: Path, timeout: float = 10.0) -> Handover | None:
    """Blocking: the listening sockets of the ingress that answers at ``path``, or None when
    none does (nothing to take over: the new ingress binds its ports itself)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    try:
        conn.sendall(_line({"op": "handover"}))
        data, fds = b"", []
        while b"\n" not in data:
            chunk, got, _, _ = socket.recv_fds(conn, 65536, FDS_PER_MESSAGE)
            fds += got
            if not chunk:
                raise ConnectionError("the old ingress closed the connection")
            data += chunk
        message = json.loads(data.split(b"\n", 1)[0])
        if "error" in message:
            raise ConnectionError(message["error"])
        ports = [int(p) for p in message["ports"]]
        while len(fds) < len(ports):
            chunk, got, _, _ = socket.recv_fds(conn, 16, FDS_PER_MESSAGE)
            if not chunk and not got:
                raise ConnectionError("the old ingress closed the connection")
            fds += got
    except (OSError, ValueError, KeyError, TypeError) as exc:
        conn.close()
        raise UnavailableError(f"cannot take over from the ingress at {path}: {exc}") from None
    for fd in fds[len(ports) :]:
        os.close(fd)
    sockets = {port: socket.socket(fileno=fd) for port, fd in zip(ports, fds, strict=False)}
    shared = message.get("sharedPort")
    return Handover(
        sockets=sockets,
        shared_port=int(shared) if shared is not None else None,
        routes=dict(message.get("routes") or {}),
        conn=conn,
        pid=message.get("pid"),
    )


def stats_to_wire(stats: RouteStats) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "errors5xx": stats.errors_5xx,
        "inFlight": stats.in_flight,
        "latencyCounts": list(stats.latency_counts),
        "latencySum": stats.latency_sum,
    }


def stats_from_wire(data: Mapping[str, Any]) -> RouteStats:
    counts = [int(n) for n in data.get("latencyCounts", ())]
    if len(counts) != len(LATENCY_BUCKETS) + 1:
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
    return RouteStats(
        requests=int(data.get("requests", 0)),
        errors_5xx=int(data.get("errors5xx", 0)),
        in_flight=int(data.get("inFlight", 0)),
        latency_counts=counts,
        latency_sum=float(data.get("latencySum", 0.0)),
    )
