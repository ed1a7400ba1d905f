"""An ASGI app served by uvicorn inside our own event loop, on a socket bound up front — so that
a taken port is one clear error before anything else starts — for the API of ``warren server``
(over HTTPS when given a server context: ``--api-tls-cert``) and the log endpoint of
``warren worker``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.responses import JSONResponse

from ..domain.errors import UnavailableError, ValidationError
from ..ingress.tls import TlsError, server_context

__all__ = ["MAX_BODY", "HttpServer", "api_tls", "parse_address"]

MAX_BODY = 8 * 1024 * 1024
"""The largest request body the APIs take (a service spec is a few kB, a traffic report of a
busy node under 1 MB)."""


def parse_address(value: str, field_name: str = "--api") -> tuple[str, int]:
    """``127.0.0.1:7070`` → ("127.0.0.1", 7070); ``:7070`` → ("127.0.0.1", 7070)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(f"expected HOST:PORT, got {value!r}", field_name)
    return host.strip("[]") or "127.0.0.1", int(port)


def api_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The TLS context of an API served over HTTPS (``--api-tls-cert``, ``--api-tls-key``), or
    None for plain HTTP; a file that cannot be loaded, or one flag without the other, is a
    ValidationError in one line."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValidationError("give both --api-tls-cert and --api-tls-key, or neither")
    try:
        return server_context(cert, key)
    except TlsError as exc:
        raise ValidationError(f"{exc} (--api-tls-cert, --api-tls-key)") from None


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our own loop: the process, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the app reads it — FastAPI
    parses a JSON body before a route's token check, so without this anyone who reaches the port
    could make the server hold any amount. A chunked body (no Content-Length) is read here, up
    to the limit, and handed on whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        first: list[Any] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay() -> Any:
            return first.pop() if first else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        error = {"code": "too_large", "message": f"request body larger than {self.limit} bytes"}
        await JSONResponse({"error": error}, status_code=413)(scope, receive, send)


class HttpServer:
    def __init__(
        self, address: str, flag: str = "--api", tls: ssl.SSLContext | None = None
    ) -> None:
        """Bind ``address`` (``HOST:PORT``, port 0: any free one) now; ``tls``: serve HTTPS
        with this server context (its files loaded already: a bad one is refused before the
        port is bound)."""
        host, port = parse_address(address, flag)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise UnavailableError(
                f"cannot listen on {host}:{port} ({flag}): {exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        self.socket: socket.socket | None = sock
        self.address = (host, int(sock.getsockname()[1]))
        self.tls = tls
        self._server: _EmbeddedUvicorn | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{self.scheme}://{host}:{port}"

    async def start(self, app: Any) -> None:
        host, port = self.address
        config = uvicorn.Config(
            _BodyLimit(app, MAX_BODY), host=host, port=port, log_level="warning", lifespan="off"
        )
        # uvicorn makes its context from file names, with a traceback for a bad file; ours is
        # loaded already. serve() loads a config only once: set the context after that.
        config.load()
        config.ssl = self.tls
        self._server = _EmbeddedUvicorn(config)
        assert self.socket is not None
        self.task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self.socket])
        )
        for _ in range(500):
            if self._server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            raise UnavailableError("the API did not start")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await self.task
        elif self.socket is not None:
            self.socket.close()
        self.socket = None
