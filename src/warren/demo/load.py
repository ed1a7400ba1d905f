"""A steady HTTP load through the ingress, for the demo, the tests and the benchmarks: ``rate``
requests per second over ``connections`` keep-alive connections, in a thread of its own.

Counts every request, every failure (connection error, timeout, or a 5xx status — the
ingress's own 502/503/504 included) and every answer's ``version``, so a rollout's effect on
real traffic can be shown and asserted. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadGenerator", "LoadSnapshot"]


@dataclass
class LoadSnapshot:
    requests: int = 0
    failed: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    """The first few failures, for the record."""

    def since(self, earlier: LoadSnapshot) -> LoadSnapshot:
        return LoadSnapshot(
            self.requests - earlier.requests,
            self.failed - earlier.failed,
            self.versions - earlier.versions,
            self.errors[len(earlier.errors) :],
        )


class LoadGenerator:
    def __init__(
        self,
        url: str,
        rate: float = 200.0,
        connections: int = 8,
        timeout: float = 10.0,
        host: str | None = None,
    ) -> None:
        """``host``: the Host header to send (a service on the shared port is routed by it);
        default: the URL's."""
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = host or f"{self.host}:{self.port}"
        self.path = parts.path or "/"
        self.rate = rate
        self.connections = connections
        self.timeout = timeout
        self._counts = LoadSnapshot()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LoadSnapshot:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        return self.snapshot()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> LoadSnapshot:
        with self._lock:
            c = self._counts
            return LoadSnapshot(c.requests, c.failed, Counter(c.versions), list(c.errors))

    def _count(self, version: str | None, error: str | None) -> None:
        with self._lock:
            self._counts.requests += 1
            if error is not None:
                self._counts.failed += 1
                if len(self._counts.errors) < 20:
                    self._counts.errors.append(error)
            elif version is not None:
                self._counts.versions[version] += 1

    async def _run(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(self.connections)))

    async def _worker(self, index: int) -> None:
        interval = self.connections / self.rate
        next_at = time.monotonic() + interval * index / self.connections
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "User-Agent: warren-load\r\n\r\n"
        ).encode()
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - interval)
            try:
                if conn is None:
                    async with asyncio.timeout(self.timeout):
                        conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(request)
                async with asyncio.timeout(self.timeout):
                    status, body, close = await self._response(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                self._count(None, f"{type(exc).__name__}: {exc}")
                await _close(conn)
                conn = None
                continue
            if status >= 500:
                self._count(None, f"HTTP {status}: {body[:120].decode('latin-1')}")
            else:
                try:
                    version = str(json.loads(body).get("version"))
                except (ValueError, AttributeError):
                    version = "?"
                self._count(version, None)
            if close:
                await _close(conn)
                conn = None
        await _close(conn)

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        return status, body, headers.get("connection") == "close"


async def _close(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
) -> None:
    if conn is not None:
        conn[1].close()
        with contextlib.suppress(Exception):
            await conn[1].wait_closed()
