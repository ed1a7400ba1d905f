"""An ASGI app served by uvicorn inside our own event loop, on a socket bound up front — so that
a taken port is one clear error before anything else starts — for the API of ``warren server``
and the log endpoint of ``warren worker``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from ..domain.errors import UnavailableError, ValidationError

__all__ = ["HttpServer", "parse_address"]


def parse_address(value: str, field_name: str = "--api") -> tuple[str, int]:
    """``127.0.0.1:7070`` → ("127.0.0.1", 7070); ``:7070`` → ("127.0.0.1", 7070)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(f"expected HOST:PORT, got {value!r}", field_name)
    return host.strip("[]") or "127.0.0.1", int(port)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our own loop: the process, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    def __init__(self, address: str, flag: str = "--api") -> None:
        """Bind ``address`` (``HOST:PORT``, port 0: any free one) now."""
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
        self._server: _EmbeddedUvicorn | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    async def start(self, app: Any) -> None:
        host, port = self.address
        self._server = _EmbeddedUvicorn(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
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
