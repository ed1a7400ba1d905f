"""The built-in ingress against real sockets: in-process upstream servers (their behaviour chosen
by request path), the demo app as real processes, httpx and raw sockets as clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx
import pytest
import websockets.asyncio.client
import websockets.asyncio.server
import websockets.exceptions

from warren.ingress import Ingress, Limits, RoutingTable, normalize_host
from warren.ports import LATENCY_BUCKETS, DataPlane, Endpoint, Pin, Route

pytestmark = pytest.mark.integration

WAIT = 5.0
"""Upper bound of every wait in these tests."""

LIMIT_FIELDS = {f.name for f in fields(Limits)}


# ── upstream servers ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Seen:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes
    conn: int


@dataclass
class Upstream:
    """A tiny HTTP/1.1 server. What it does depends on the path:

    ``/slow`` waits for ``release``; ``/sleep?s=0.01`` sleeps; ``/fail`` answers 500;
    ``/chunked`` answers chunked; ``/close`` answers with ``Connection: close``; ``/garbage``
    answers no HTTP at all; ``/early`` sends a 103 before its 200; ``/until-close`` has no
    length and closes; ``/reset`` closes without answering; ``/cut`` promises 100 bytes, sends
    10 and closes; ``/drip`` promises 10 bytes, sends 5 and waits for ``release`` before the rest;
    ``/big?n=`` sends n bytes; ``/nocontent`` answers 204; ``/count`` reads the request body as
    it streams and answers its length and SHA-256; ``/echo`` answers chunked, each chunk of the
    request body as it arrives; ``/refuse`` answers 401 before the body, which it never reads;
    ``/upgrade`` switches protocols (see ``_upgrade``);
    anything else answers 200 with a JSON echo. Request bodies may come with a Content-Length or
    chunked.

    ``close_idle``: close the connection right after each response (without saying so), as an
    upstream with a very short keep-alive timeout does. ``one_per_conn``: answer one request per
    connection and close the connection silently when a second one arrives (the request then
    never reaches the app: the race a pooled connection can lose)."""

    name: str
    close_idle: bool = False
    one_per_conn: bool = False
    connections: int = 0
    open: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    address: str = ""
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0) -> Upstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.release.set()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=WAIT)

    def die(self) -> None:
        """What stopping a task does to its server: it listens no more, and its connections
        close with their requests unanswered."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    def endpoint(self, revision: int = 1) -> Endpoint:
        return Endpoint(self.address, f"task-{self.name}", revision)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.target.split("?")[0] == path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        self.open += 1
        conn = self.connections
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if self.one_per_conn and served:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if target.startswith("/upgrade"):
                    self.requests.append(Seen(method, target, version, headers, b"", conn))
                    await self._upgrade(target, headers, reader, writer)
                    return
                if target.startswith("/refuse"):  # at once, without reading the body
                    self.requests.append(Seen(method, target, version, headers, b"", conn))
                    writer.write(b"HTTP/1.1 401 X\r\nContent-Length: 2\r\n\r\nno")
                    await writer.drain()
                    return
                if target.startswith(("/count", "/echo")):
                    self.requests.append(Seen(method, target, version, headers, b"", conn))
                    served += 1
                    await self._stream(target, headers, reader, writer)
                    continue
                body = b"".join([part async for part in request_body(headers, reader)])
                self.requests.append(Seen(method, target, version, headers, body, conn))
                served += 1
                if not await self._answer(method, target, version, headers, body, writer, conn):
                    return
                if self.close_idle:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            self.open -= 1
            self.closed.set()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _stream(
        self,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """``/count`` and ``/echo``: the request body is read as it comes, never whole."""
        if target.startswith("/echo"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            async for part in request_body(headers, reader):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            digest, size = hashlib.sha256(), 0
            async for part in request_body(headers, reader):
                digest.update(part)
                size += len(part)
            payload = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
        await writer.drain()

    async def _upgrade(
        self,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """``/upgrade``: 101 to the protocol asked for, then every byte back, prefixed with the
        server's name; ``/upgrade?no=1`` answers 400 instead (and keeps the connection)."""
        if "no=1" in target:
            writer.write(b"HTTP/1.1 400 X\r\nContent-Length: 2\r\n\r\nno")
            await writer.drain()
            await reader.read()
            return
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
            % headers["upgrade"].encode()
        )
        while data := await reader.read(65536):
            writer.write(self.name.encode() + b":" + data)
            await writer.drain()

    async def wait_all_closed(self) -> None:
        while self.open:
            self.closed.clear()
            await asyncio.wait_for(self.closed.wait(), WAIT)

    async def _answer(
        self,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
        conn: int,
    ) -> bool:
        """Write the response; False to close the connection."""
        path, _, query = target.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        status = 200
        if path == "/slow":
            self.slow_started.set()
            await self.release.wait()
        elif path == "/sleep":
            await asyncio.sleep(float(args.get("s", "0.01")))
        elif path == "/fail":
            status = 500
        elif path == "/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            await writer.drain()
            return True
        elif path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            return False
        elif path == "/reset":
            return False
        elif path == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            return False
        elif path == "/drip":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            await writer.drain()
            self.slow_started.set()
            await self.release.wait()
            writer.write(b"56789")
            await writer.drain()
            return True
        elif path == "/big":
            n = int(args["n"])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            block = bytes(range(256)) * 256
            for start in range(0, n, len(block)):
                writer.write(block[: min(len(block), n - start)])
                await writer.drain()
            return True
        elif path == "/early":
            writer.write(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()
            return True
        elif path == "/garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return False
        elif path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye")
            await writer.drain()
            return False
        elif path == "/nocontent":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            return True
        payload = json.dumps(
            {
                "name": self.name,
                "path": target,
                "conn": conn,
                "method": method,
                "body": body.decode("latin-1"),
            }
        ).encode()
        keep = headers.get("connection", "").lower() != "close" and (
            version == "HTTP/1.1" or headers.get("connection", "").lower() == "keep-alive"
        )
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Upstream: %s\r\n\r\n"
            % (status, len(payload), self.name.encode())
        )
        if method != "HEAD":
            writer.write(payload)
        await writer.drain()
        return keep


async def request_body(
    headers: dict[str, str], reader: asyncio.StreamReader
) -> AsyncIterator[bytes]:
    """A request body as it arrives: by its Content-Length, or chunk by chunk."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers: the blank line
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    left = int(headers.get("content-length", "0"))
    while left:
        part = await reader.read(min(left, 1 << 16))
        if not part:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(part)
        yield part


Factory = Callable[..., Awaitable[Upstream]]


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No exception may escape a Protocol callback: asyncio would log it ("Exception in
    callback"), and the ingress logs its own unexpected errors at ERROR."""
    yield
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("warren", "asyncio"))
    ]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def upstream() -> AsyncIterator[Factory]:
    made: list[Upstream] = []

    async def make(name: str, **kwargs: bool) -> Upstream:
        made.append(await Upstream(name, **kwargs).start())
        return made[-1]

    yield make
    for u in made:
        await u.stop()


IngressFactory = Callable[..., Awaitable[Ingress]]


@pytest.fixture
async def make_ingress() -> AsyncIterator[IngressFactory]:
    made: list[Ingress] = []

    async def make(**kwargs: float) -> Ingress:
        """``Ingress``'s own arguments, and the fields of its ``Limits``."""
        kwargs.setdefault("connect_timeout", 1.0)
        kwargs.setdefault("response_timeout", WAIT)
        limits = {k: kwargs.pop(k) for k in list(kwargs) if k in LIMIT_FIELDS}
        ingress = Ingress(shared_port=0, limits=Limits(**limits), **kwargs)  # type: ignore[arg-type]
        await ingress.start()
        made.append(ingress)
        return ingress

    yield make
    for ingress in made:
        await ingress.close()


@pytest.fixture
async def ingress(make_ingress: IngressFactory) -> Ingress:
    return await make_ingress()


def client(ingress: Ingress, host: str = "web.test", **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ingress.shared_port}",
        headers={"Host": host},
        trust_env=False,
        timeout=WAIT,
        **kwargs,  # type: ignore[arg-type]
    )


def web(*upstreams: Upstream, host: str = "web.test", **kwargs: object) -> dict[str, Route]:
    endpoints = tuple(u.endpoint() for u in upstreams)
    return {"web": Route("web", host=host, endpoints=endpoints, **kwargs)}  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ── a raw HTTP/1.x client, for what httpx hides ──────────────────────────────────────────────────


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_only or status in (100, 204, 304):
        return Response(status, headers, b"")
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT)
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), WAIT)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), WAIT)
    return Response(status, headers, body)


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), WAIT) == b""
    except ConnectionResetError:
        return True


# ── routing ──────────────────────────────────────────────────────────────────────────────────────


def test_ingress_is_a_data_plane() -> None:
    plane: DataPlane = Ingress()
    assert plane.stats() == {}


async def test_round_robin_spreads_over_three_endpoints(
    ingress: Ingress, upstream: Factory
) -> None:
    ups = [await upstream(f"u{i}") for i in range(3)]
    await ingress.update(web(*ups))
    async with client(ingress) as c:
        names = [(await c.get("/")).json()["name"] for _ in range(30)]
    assert [names.count(u.name) for u in ups] == [10, 10, 10]
    assert names[:3] == ["u0", "u1", "u2"]


async def test_round_robin_over_demo_app_processes(ingress: Ingress) -> None:
    ports = [free_port() for _ in range(3)]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for i, port in enumerate(ports):
            env = dict(os.environ, PORT=str(port), VERSION=f"v{i + 1}", WARREN_TASK_ID=f"web-{i}")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "warren.demo.app",
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            assert b"listening" in line
        endpoints = tuple(Endpoint(f"127.0.0.1:{p}", f"web-{i}", 1) for i, p in enumerate(ports))
        await ingress.update({"web": Route("web", host="web.test", endpoints=endpoints)})
        async with client(ingress) as c:
            versions = [(await c.get("/")).json()["version"] for _ in range(30)]
        assert sorted(set(versions)) == ["v1", "v2", "v3"]
        assert all(versions.count(v) == 10 for v in ("v1", "v2", "v3"))
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, 9)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), WAIT)


async def test_host_routing_on_shared_port(ingress: Ingress, upstream: Factory) -> None:
    exact, wild, deep = await upstream("exact"), await upstream("wild"), await upstream("deep")
    await ingress.update(
        {
            "exact": Route("exact", host="api.example.com", endpoints=(exact.endpoint(),)),
            "wild": Route("wild", host="*.example.com", endpoints=(wild.endpoint(),)),
            "deep": Route("deep", host="*.eu.example.com", endpoints=(deep.endpoint(),)),
        }
    )

    async def who(host: str) -> str:
        async with client(ingress, host=host) as c:
            r = await c.get("/")
        return str(r.json()["name"]) if r.status_code == 200 else f"{r.status_code}: {r.text}"

    assert await who("api.example.com") == "exact"
    assert await who("API.Example.COM:8080") == "exact"
    assert await who("shop.example.com") == "wild"
    assert await who("a.b.example.com") == "wild"
    assert await who("x.eu.example.com") == "deep"
    assert await who("example.com") == "404: no service for host example.com\n"
    assert await who("other.test") == "404: no service for host other.test\n"


async def test_path_prefixes_on_shared_port(ingress: Ingress, upstream: Factory) -> None:
    api, site = await upstream("api"), await upstream("site")
    await ingress.update(
        {
            "api": Route("api", host="shop.test", paths=("/api",), endpoints=(api.endpoint(),)),
            "copy": Route("copy", host="shop.test", paths=("/api/",)),
            "site": Route("site", host="shop.test", endpoints=(site.endpoint(),)),
        }
    )

    async def who(target: str) -> str:
        async with client(ingress, host="shop.test") as c:
            r = await c.get(target)
        return f"{r.json()['name']} {r.json()['path']}" if r.status_code == 200 else r.text

    assert await who("/api/users?page=2") == "api /api/users?page=2"  # not stripped
    assert await who("/api") == "api /api"
    assert await who("/apis") == "site /apis"
    assert await who("/") == "site /"
    shared = ingress.shared_port or 0
    assert ingress.problems == {
        shared: "host shop.test path /api is claimed by copy too; api has it"
    }
    await ingress.update({"site": None, "copy": None})
    assert await who("/x?y") == "no service for host shop.test and path /x\n"
    assert await who("/api/x") == "api /api/x"
    assert ingress.problems == {}


async def test_published_port_listener_follows_routes(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    port = free_port()
    await ingress.update(web(u, ports=(port,)))
    assert port in ingress.listening
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as c:
        r = await c.get(f"http://127.0.0.1:{port}/", headers={"Host": "anything"})
        assert r.json()["name"] == "u"
    await ingress.update({"web": None})
    assert port not in ingress.listening
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)


async def test_port_in_use_lands_in_problems(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    other = free_port()
    try:
        await ingress.update(
            {
                "web": Route("web", ports=(busy,), endpoints=(u.endpoint(),)),
                "api": Route("api", ports=(other,), endpoints=(u.endpoint(),)),
            }
        )
        assert list(ingress.problems) == [busy]
        assert f"cannot listen on 127.0.0.1:{busy}" in ingress.problems[busy]
        assert "\n" not in ingress.problems[busy]
        async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as c:
            assert (await c.get(f"http://127.0.0.1:{other}/")).status_code == 200
    finally:
        taken.close()
    await ingress.update({})  # retried on the next update
    assert ingress.problems == {}
    assert busy in ingress.listening
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as c:
        assert (await c.get(f"http://127.0.0.1:{busy}/")).status_code == 200


async def test_two_services_on_one_port_is_a_problem(ingress: Ingress, upstream: Factory) -> None:
    a, b = await upstream("a"), await upstream("b")
    port = free_port()
    await ingress.update({"a": Route("a", ports=(port,), endpoints=(a.endpoint(),))})
    await ingress.update({"b": Route("b", ports=(port,), endpoints=(b.endpoint(),))})
    assert "b" in ingress.problems[port]
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as c:
        assert (await c.get(f"http://127.0.0.1:{port}/")).json()["name"] == "a"


def test_routing_table_hosts_ports_and_round_robin() -> None:
    table = RoutingTable()
    e = [Endpoint(f"10.0.0.{i}:80", f"t{i}", 1) for i in range(3)]
    table.apply(
        {
            "a": Route("a", ports=(8080,), host="A.example.com", endpoints=(e[0], e[1])),
            "b": Route("b", ports=(8080, 9090), host="*.example.com", endpoints=(e[2],)),
        }
    )
    assert normalize_host(" Web.Example.COM.:8080") == "web.example.com"
    assert normalize_host("[::1]:80") == "[::1]"
    assert table.for_host(b"a.EXAMPLE.com:80") is table.service("a")
    assert table.for_host(b"z.example.com") is table.service("b")
    assert table.for_host(b"example.com") is None
    assert table.ports == {8080: "a", 9090: "b"}
    assert list(table.port_conflicts) == [8080]
    a = table.service("a")
    assert a is not None
    assert [a.pick() for _ in range(4)] == [e[0], e[1], e[0], e[1]]
    table.drain(e[0].address)
    assert [a.pick() for _ in range(2)] == [e[1], e[1]]
    assert a.pick_other([e[1].address]) is None
    table.apply({"a": Route("a", endpoints=(e[0], e[1]))})  # still listed: still draining
    assert a.active == (e[1],)
    assert table.for_host(b"a.example.com") is table.service("b")  # a gave up its host
    table.apply({"a": Route("a", endpoints=(e[1],))})
    table.apply({"a": Route("a", endpoints=(e[0], e[1]))})  # left, came back: not draining
    assert a.active == (e[0], e[1])
    table.drain("10.9.9.9:80")  # in no route: not remembered
    table.apply({"c": Route("c", endpoints=(Endpoint("10.9.9.9:80", "t9", 1),))})
    assert not table.is_draining("10.9.9.9:80")
    table.apply({"b": None})
    assert table.ports == {}
    assert table.for_host(b"z.example.com") is None


# ── connections ──────────────────────────────────────────────────────────────────────────────────


async def test_keep_alive_on_both_sides(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with client(ingress) as c:
        for _ in range(20):
            assert (await c.get("/")).status_code == 200
    assert u.connections == 1
    async with raw(ingress.shared_port or 0) as (reader, writer):
        for i in range(3):
            writer.write(f"GET /{i} HTTP/1.1\r\nHost: web.test\r\n\r\n".encode())
            r = await read_response(reader)
            assert json.loads(r.body)["path"] == f"/{i}"
            assert "connection" not in r.headers
            assert "keep-alive" not in r.headers
    assert u.connections == 1


async def test_http10_with_and_without_keep_alive(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        for i in range(2):
            writer.write(
                f"GET /{i} HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n".encode()
            )
            r = await read_response(reader)
            assert r.status == 200
            assert r.headers["connection"] == "keep-alive"
            assert json.loads(r.body)["path"] == f"/{i}"
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /plain HTTP/1.0\r\nHost: web.test\r\n\r\n")
        r = await read_response(reader)
        assert r.status == 200
        assert r.headers["connection"] == "close"
        assert await at_eof(reader)
    assert u.requests[0].version == "HTTP/1.0"


async def test_connection_close_is_honoured(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        r = await read_response(reader)
        assert r.status == 200
        assert r.headers["connection"] == "close"
        assert await at_eof(reader)


async def test_pipelined_requests_are_answered_in_order(
    ingress: Ingress, upstream: Factory
) -> None:
    a, b = await upstream("a"), await upstream("b")
    await ingress.update(web(a, b))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(
            b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: web.test\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /three HTTP/1.1\r\nHost: web.test\r\n\r\n"
            b"GET /four HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
            b"GET /five HTTP/1.1\r\nHost: web.test\r\n\r\n"
        )
        paths = []
        for _ in range(4):
            r = await read_response(reader)
            paths.append(json.loads(r.body)["path"] if r.status == 200 else r.status)
        assert paths == ["/sleep?s=0.05", "/two", "/three", 404]
        assert json.loads((await read_response(reader)).body)["path"] == "/five"
    two = next(s for s in a.requests + b.requests if s.target == "/two")
    assert two.body == b"abc"


async def test_bad_requests_are_400_and_close(ingress: Ingress, upstream: Factory) -> None:
    await ingress.update(web(await upstream("u")))
    for request in (b"NOT A REQUEST\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"):
        async with raw(ingress.shared_port or 0) as (reader, writer):
            writer.write(request)
            r = await read_response(reader)
            assert r.status == 400
            assert r.body.startswith(b"bad request")
            assert r.headers["connection"] == "close"
            assert await at_eof(reader)


async def test_upstream_connection_close_is_honoured(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with client(ingress) as c:
        r = await c.get("/close")
        assert r.text == "bye"
        assert "connection" not in r.headers  # the client connection stays open
        assert (await c.get("/")).status_code == 200
    assert u.connections == 2


async def test_client_idle_timeout(make_ingress: IngressFactory, upstream: Factory) -> None:
    ingress = await make_ingress(idle_timeout=0.2)
    await ingress.update(web(await upstream("u")))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await at_eof(reader)


# ── headers and bodies ───────────────────────────────────────────────────────────────────────────


async def test_forwarded_headers_and_hop_by_hop(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with client(ingress) as c:
        r = await c.get(
            "/h",
            headers={
                "X-Custom": "1",
                "Keep-Alive": "timeout=1",
                "TE": "trailers",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "secret",
                "X-Forwarded-For": "10.0.0.1",
                "Proxy-Connection": "keep-alive",
            },
        )
    assert r.status_code == 200
    assert r.headers["x-upstream"] == "u"
    assert "keep-alive" not in r.headers
    seen = u.requests[0].headers
    assert seen["x-custom"] == "1"
    assert seen["host"] == "web.test"
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "web.test"
    for hop in ("keep-alive", "te", "connection", "x-hop", "proxy-connection"):
        assert hop not in seen


async def test_a_chunked_request_body_is_forwarded_chunked(
    ingress: Ingress, upstream: Factory
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"chunked ", b"world"):
            yield part

    async with client(ingress) as c:
        r = await c.post("/upload", content=parts())
    assert r.status_code == 200
    assert r.json()["body"] == "hello chunked world"
    seen = u.requests[0]
    assert seen.headers["transfer-encoding"] == "chunked"  # streamed: its length is not known
    assert "content-length" not in seen.headers


async def test_expect_continue_is_answered_by_the_ingress(
    ingress: Ingress, upstream: Factory
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(
            b"PUT /x HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert (await read_response(reader)).status == 100
        writer.write(b"data")
        r = await read_response(reader)
        assert json.loads(r.body)["body"] == "data"
    assert "expect" not in u.requests[0].headers


async def test_body_too_large_is_413(make_ingress: IngressFactory, upstream: Factory) -> None:
    ingress = await make_ingress(max_body=1000)
    u = await upstream("u")
    await ingress.update(web(u))

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 400

    async with client(ingress) as c:
        r = await c.post("/", content=b"x" * 1001)
        assert r.status_code == 413
        assert r.text == "request body larger than 1000 bytes\n"
        assert r.headers["content-type"].startswith("text/plain")
    async with client(ingress) as c:
        assert (await c.post("/", content=parts())).status_code == 413
    async with client(ingress) as c:
        assert (await c.post("/", content=b"x" * 1000)).status_code == 200
    assert len(u.requests) == 1


async def test_connect_is_501(ingress: Ingress, upstream: Factory) -> None:
    # A reverse proxy does not open tunnels to anywhere a client names.
    await ingress.update(web(await upstream("u")))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        r = await read_response(reader)
        assert (r.status, r.body) == (501, b"CONNECT is not supported\n")
        assert await at_eof(reader)


async def test_response_framings_pass_through(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with client(ingress) as c:
        r = await c.get("/chunked")
        assert r.text == "hello world"
        assert r.headers["transfer-encoding"] == "chunked"
        r = await c.head("/")
        assert r.status_code == 200
        assert int(r.headers["content-length"]) > 0
        assert r.content == b""
        assert (await c.get("/nocontent")).status_code == 204
        big = await c.get("/big?n=3000000")
        assert big.content == (bytes(range(256)) * 256 * 46)[:3000000]
        assert (await c.get("/early")).text == "ok"  # the 103 is not forwarded
        r = await c.get("/until-close")
        assert r.text == "until the end"
        assert r.headers["connection"] == "close"
        assert (await c.get("/")).status_code == 200
    # chunked, HEAD, 204 and the big body all reused the first upstream connection
    assert [s.conn for s in u.requests[:5]] == [1, 1, 1, 1, 1]


async def test_slow_reader_gets_the_whole_body(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    n = 4_000_000
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /big?n=%d HTTP/1.1\r\nHost: web.test\r\n\r\n" % n)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert b"200" in head.split(b"\r\n")[0]
        got = 0
        while got < n:
            chunk = await asyncio.wait_for(reader.read(4096), WAIT)
            assert chunk
            got += len(chunk)
            if got % (64 * 4096) < 4096:
                # Pacing, not waiting for anything: a slow reader, so that the ingress's write
                # buffer fills and it must pause reading the upstream.
                await asyncio.sleep(0.005)
        assert got == n


# ── streaming ────────────────────────────────────────────────────────────────────────────────────


async def test_chunked_both_ways_streams_each_chunk_through(
    ingress: Ingress, upstream: Factory
) -> None:
    # The upstream echoes each chunk of the request body as it arrives: each must come back
    # before the next is sent, so neither direction is buffered whole.
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i, word in enumerate((b"hello", b"chunked", b"world")):
            writer.write(b"%x\r\n%s\r\n" % (len(word), word))
            if i == 0:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert b"transfer-encoding: chunked" in head.lower()
            size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT), 16)
            assert await asyncio.wait_for(reader.readexactly(size + 2), WAIT) == word + b"\r\n"
        writer.write(b"0\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT) == b"0\r\n\r\n"
        # The connection is still good for another request.
        writer.write(b"GET /after HTTP/1.1\r\nHost: web.test\r\n\r\n")
        assert json.loads((await read_response(reader)).body)["path"] == "/after"
    assert u.requests[0].headers["transfer-encoding"] == "chunked"
    assert "content-length" not in u.requests[0].headers


async def test_a_chunked_upload_reaches_the_task_whole(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()

    async def parts() -> AsyncIterator[bytes]:
        for i in range(20):
            part = block[i:] + block[:i]
            digest.update(part)
            yield part

    async with client(ingress) as c:
        r = await c.post("/count", content=parts())
    assert r.json() == {"size": 20 * len(block), "sha256": digest.hexdigest()}


async def test_an_answer_before_the_whole_body_is_forwarded_then_the_connection_closes(
    ingress: Ingress, upstream: Factory
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"PUT /refuse HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10000000\r\n\r\n")
        writer.write(b"x" * 100_000)
        r = await read_response(reader)
        assert (r.status, r.body) == (401, b"no")
        assert await at_eof(reader)  # the rest of the body is not wanted
    async with client(ingress) as c:  # and the ingress is fine
        assert (await c.get("/")).status_code == 200


INGRESS_PROCESS = """
import asyncio, sys, uvloop
from warren.ingress import Ingress
from warren.ports import Endpoint, Route

async def main() -> None:
    ingress = Ingress(shared_port=0)
    await ingress.start()
    endpoint = Endpoint(sys.argv[1], "task-u", 1)
    await ingress.update({"web": Route("web", host="web.test", endpoints=(endpoint,))})
    print(ingress.shared_port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until it closes
    await ingress.close()

uvloop.run(main())
"""
"""An ingress of its own, as ``warren server`` runs it (uvloop), for measuring its memory."""


def memory_kib(pid: int, field_: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak so far) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith(field_ + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_} for {pid}")


async def test_a_large_upload_streams_through_with_bounded_memory(upstream: Factory) -> None:
    u = await upstream("u")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", INGRESS_PROCESS, u.address,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), WAIT))
        async with raw(port) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")  # warm: all imported
            assert (await read_response(reader)).status == 200
            before = memory_kib(proc.pid, "VmRSS")
            size = 200 * 1024 * 1024
            block = bytes(range(256)) * 4096
            writer.write(
                b"PUT /count HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n" % size
            )
            for _ in range(size // len(block)):
                writer.write(block)
                await asyncio.wait_for(writer.drain(), WAIT)
            r = await asyncio.wait_for(read_response(reader), 4 * WAIT)
            grew = memory_kib(proc.pid, "VmHWM") - before
        digest = hashlib.sha256(block * 8)  # 8 MiB, 25 times: the same hash as the stream
        for _ in range(24):
            digest.update(block * 8)
        assert r.status == 200, r
        assert json.loads(r.body) == {"size": size, "sha256": digest.hexdigest()}
        print(f"ingress RSS grew {grew} KiB over a {size >> 20} MiB upload")
        assert grew < 16 * 1024, f"the ingress grew {grew} KiB"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), WAIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ── real clients: curl ───────────────────────────────────────────────────────────────────────────


async def curl(*args: str) -> tuple[str, str]:
    """``curl ARGS``: its output, and what ``-w`` wrote (on stderr, after a marker)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", str(3 * WAIT), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 4 * WAIT)
    assert proc.returncode == 0, err
    return out.decode("latin-1"), err.decode()


needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None and os.environ.get("CI") != "true", reason="needs curl"
)


@needs_curl
async def test_expect_100_continue_with_curl(
    ingress: Ingress, upstream: Factory, tmp_path: Path
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    upload = tmp_path / "upload"
    upload.write_bytes(bytes(range(256)) * 20_000)  # 5 MB
    base = f"http://127.0.0.1:{ingress.shared_port}"
    # curl waits for the 100 before it sends the body (here up to 10 s: the test's bound would
    # end first). Routed, the request gets its 100 at once; its body reaches the task.
    expect = ["-H", "Expect: 100-continue", "--expect100-timeout", "10", "-T", str(upload)]
    host = ["-H", "Host: web.test"]
    out, written = await curl(*expect, *host, "-w", "%{stderr}%{size_upload}", f"{base}/count")
    assert json.loads(out)["size"] == 5_120_000
    assert written == "5120000"
    # A request the ingress answers itself gets that answer instead of a 100: the body is never
    # sent.
    nowhere = ["-H", "Host: nowhere.test"]
    out, written = await curl(
        *expect, *nowhere, "-w", "%{stderr}%{http_code} %{size_upload}", f"{base}/x"
    )
    assert out == "no service for host nowhere.test\n"
    assert written == "404 0"


@needs_curl
async def test_http10_clients_with_curl(
    ingress: Ingress, upstream: Factory, tmp_path: Path
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    base = f"http://127.0.0.1:{ingress.shared_port}"
    # A chunked answer cannot go to an HTTP/1.0 client: its framing is taken off, and the end
    # of the body is the end of the connection. (The task should not have sent it chunked: it
    # was asked in HTTP/1.0 too; /chunked always answers chunked.)
    out, _ = await curl("--http1.0", "-D", "-", "-H", "Host: web.test", f"{base}/chunked")
    head, _, body = out.partition("\r\n\r\n")
    assert body == "hello world"
    assert "transfer-encoding" not in head.lower()
    assert "connection: close" in head.lower()
    # A body up, streamed with its Content-Length.
    upload = tmp_path / "upload"
    upload.write_bytes(b"0123456789" * 300_000)
    out, _ = await curl("--http1.0", "-H", "Host: web.test", "--data-binary", f"@{upload}",
                        f"{base}/count")  # fmt: skip
    assert json.loads(out) == {
        "size": 3_000_000, "sha256": hashlib.sha256(upload.read_bytes()).hexdigest()
    }  # fmt: skip
    # Keep-alive when asked for: two requests, one connection.
    keep = ["-H", "Host: web.test", "-H", "Connection: keep-alive"]
    out, written = await curl(
        "--http1.0", *keep, "-w", "%{stderr}%{num_connects} ", f"{base}/a", f"{base}/b"
    )
    assert written == "1 0 "
    assert [json.loads(x)["path"] for x in out.replace("}{", "}\n{").splitlines()] == ["/a", "/b"]
    assert {s.version for s in u.requests} == {"HTTP/1.0"}


# ── limits and timeouts ──────────────────────────────────────────────────────────────────────────


async def ask_raw(ingress: Ingress, request: bytes) -> tuple[Response, bool]:
    """Send ``request`` on a new connection: its response, and whether the connection was then
    closed (only looked at when the answer is not a 200)."""
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(request)
        r = await read_response(reader)
        return r, r.status != 200 and await at_eof(reader)


async def test_a_request_line_over_the_limit_is_414(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    # "GET " + target + " HTTP/1.1" is 8 KiB, the default limit, with a target of 8179 bytes.
    fits = b"/" + b"a" * 8178
    r, _ = await ask_raw(ingress, b"GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n" % fits)
    assert r.status == 200
    for target in (fits + b"a", b"/" + b"a" * 100_000):
        r, closed = await ask_raw(ingress, b"GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n" % target)
        assert (r.status, r.body) == (414, b"request line longer than 8192 bytes\n")
        assert r.headers["connection"] == "close"
        assert closed
    assert len(u.requests) == 1


async def test_headers_over_the_limits_are_431(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))

    def request(*lines: bytes) -> bytes:
        return b"GET / HTTP/1.1\r\nHost: web.test\r\n" + b"".join(lines) + b"\r\n"

    # 32 KiB of header lines, "Name: value\r\n" each: "Host: web.test\r\n" is 16 bytes.
    value = b"v" * (32 * 1024 - 16 - len(b"X-Big: \r\n"))
    fields_ = [b"X-%d: 1\r\n" % i for i in range(99)]  # with Host: 100 fields
    cases = {
        request(b"X-Big: %s\r\n" % value): 200,
        request(b"X-Big: %sv\r\n" % value): 431,
        request(*fields_): 200,
        request(*fields_, b"X-One-More: 1\r\n"): 431,
        request(b"X-Huge: %s\r\n" % (b"v" * 1_000_000)): 431,  # refused before it is whole
    }
    for req, status in cases.items():
        r, closed = await ask_raw(ingress, req)
        assert r.status == status, (len(req), r)
        if status == 431:
            assert r.body.startswith(b"request headers ")
            assert closed
    assert len(u.requests) == 2


async def test_a_head_not_received_in_time_is_408(
    make_ingress: IngressFactory, upstream: Factory
) -> None:
    ingress = await make_ingress(head_timeout=0.3)
    await ingress.update(web(await upstream("u")))
    loop = asyncio.get_running_loop()
    async with raw(ingress.shared_port or 0) as (reader, writer):
        began = loop.time()
        writer.write(b"GET / HTTP/1.1\r\nHost: web.test\r\n")  # no blank line: not whole
        r = await read_response(reader)
        took = loop.time() - began
        assert (r.status, r.body) == (408, b"request head not received within 0.3s\n")
        assert r.headers["connection"] == "close"
        assert await at_eof(reader)
        assert 0.3 <= took < 1.0, took
    async with raw(ingress.shared_port or 0) as (reader, writer):
        # A connection that sends nothing is closed at the head timeout, without an answer.
        began = loop.time()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        assert 0.3 <= loop.time() - began < 1.0
    async with raw(ingress.shared_port or 0) as (reader, writer):
        # A later head on a keep-alive connection counts from its first byte.
        writer.write(b"GET /1 HTTP/1.1\r\nHost: web.test\r\n\r\n")
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(0.2)
        began = loop.time()
        writer.write(b"GET /2 HTTP/1.1\r\n")
        r = await read_response(reader)
        assert r.status == 408
        assert 0.3 <= loop.time() - began < 1.0


async def test_idle_keep_alive_is_the_idle_timeout_not_the_head_timeout(
    make_ingress: IngressFactory, upstream: Factory
) -> None:
    ingress = await make_ingress(head_timeout=0.1, idle_timeout=0.6)
    await ingress.update(web(await upstream("u")))
    loop = asyncio.get_running_loop()
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /1 HTTP/1.1\r\nHost: web.test\r\n\r\n")
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(0.3)  # idle for more than the head timeout: still open
        writer.write(b"GET /2 HTTP/1.1\r\nHost: web.test\r\n\r\n")
        assert (await read_response(reader)).status == 200
        idle_from = loop.time()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, without a word
        assert 0.6 <= loop.time() - idle_from < 1.2


async def test_slow_heads_are_closed_at_the_head_timeout_while_others_are_served(
    make_ingress: IngressFactory, upstream: Factory
) -> None:
    # Slowloris: 500 connections that start a head and never finish it, one byte at a time
    # to look alive. Each must be answered 408 and closed at the head timeout, and a normal
    # client served all along.
    ingress = await make_ingress(head_timeout=1.0)
    await ingress.update(web(await upstream("u")))
    loop = asyncio.get_running_loop()
    began = loop.time()
    stop = asyncio.Event()

    async def slow() -> tuple[bytes, float]:
        async with raw(ingress.shared_port or 0) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Slow: ")
            reading = asyncio.ensure_future(asyncio.wait_for(reader.read(), 3 * WAIT))
            while not reading.done() and not stop.is_set():
                with contextlib.suppress(ConnectionError):
                    writer.write(b"x")
                await asyncio.wait([reading], timeout=0.2)
            return await reading, loop.time() - began

    slowloris = asyncio.gather(*(slow() for _ in range(500)))
    try:
        async with client(ingress) as c:
            served = 0
            while not slowloris.done() and loop.time() - began < 3 * WAIT:
                r = await c.get("/")
                assert r.status_code == 200
                served += 1
        assert served >= 10  # (all the while the slow heads were held, however loaded the machine)
        answers = await asyncio.wait_for(slowloris, 3 * WAIT)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(slowloris, return_exceptions=True), 3 * WAIT)
    assert {data.split(b"\r\n")[0] for data, _ in answers} == {b"HTTP/1.1 408 Request Timeout"}
    closed_at = sorted(at for _, at in answers)
    assert closed_at[0] >= 1.0
    assert closed_at[-1] < 2.5, closed_at[-1]


# ── upgrades ─────────────────────────────────────────────────────────────────────────────────────


@dataclass
class EchoServer:
    """A WebSocket server (the ``websockets`` package) that answers each message with its name."""

    name: str
    server: websockets.asyncio.server.Server | None = None
    connections: int = 0

    async def start(self) -> EchoServer:
        async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
            self.connections += 1
            async for message in ws:
                await ws.send(f"{self.name}:{message}")

        self.server = await websockets.asyncio.server.serve(echo, "127.0.0.1", 0)
        return self

    def endpoint(self, revision: int) -> Endpoint:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return Endpoint(f"127.0.0.1:{port}", f"task-{self.name}", revision)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), WAIT)


@pytest.fixture
async def echo_servers() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    stable, canary = await EchoServer("stable").start(), await EchoServer("canary").start()
    yield stable, canary
    for server in (stable, canary):
        await server.stop()


async def test_a_websocket_echo_through_a_canary(
    ingress: Ingress, echo_servers: tuple[EchoServer, EchoServer]
) -> None:
    # The route is chosen at the handshake, like any request's: by weight, or by a pin; then
    # the connection stays with the task that answered it.
    stable, canary = echo_servers
    port = free_port()
    endpoints = (stable.endpoint(1), canary.endpoint(2))
    pins = (Pin(2, header="X-Warren-Preview"),)
    await ingress.update(
        {"web": Route("web", (port,), None, endpoints, ((1, 75), (2, 25)), pins=pins)}
    )

    async def talk(**headers: str) -> str:
        async with websockets.asyncio.client.connect(
            f"ws://127.0.0.1:{port}/chat", additional_headers=headers, open_timeout=WAIT
        ) as ws:
            answers = []
            for i in range(3):
                await ws.send(f"m{i}")
                answers.append(await asyncio.wait_for(ws.recv(), WAIT))
            name = str(answers[0]).split(":")[0]
            assert answers == [f"{name}:m{i}" for i in range(3)]
            return name

    names = [await talk() for _ in range(40)]
    assert names.count("canary") == 10  # exactly its weight
    assert await talk(**{"X-Warren-Preview": "1"}) == "canary"
    assert (stable.connections, canary.connections) == (30, 11)
    revisions = ingress.revision_stats()
    assert (revisions[("web", 1)].requests, revisions[("web", 2)].requests) == (30, 11)
    assert revisions[("web", 1)].in_flight == revisions[("web", 2)].in_flight == 0


async def test_upgraded_connections_get_the_drain_timeout_then_close(
    ingress: Ingress, echo_servers: tuple[EchoServer, EchoServer]
) -> None:
    stable, canary = echo_servers
    port = free_port()
    old, new = stable.endpoint(1), canary.endpoint(2)
    await ingress.update({"web": Route("web", (port,), None, (old,))})
    loop = asyncio.get_running_loop()
    async with websockets.asyncio.client.connect(
        f"ws://127.0.0.1:{port}/", open_timeout=WAIT
    ) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "stable:before"
        await ingress.update({"web": Route("web", (port,), None, (old, new))})
        began = loop.time()
        draining = asyncio.create_task(ingress.drain(old.address, 0.5))
        await ws.send("during")  # still served while the drain lasts
        assert await asyncio.wait_for(ws.recv(), WAIT) == "stable:during"
        async with websockets.asyncio.client.connect(
            f"ws://127.0.0.1:{port}/", open_timeout=WAIT
        ) as other:  # a new one goes elsewhere
            await other.send("hi")
            assert await asyncio.wait_for(other.recv(), WAIT) == "canary:hi"
        assert await asyncio.wait_for(draining, WAIT) == 1  # the upgraded connection, closed
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        assert 0.5 <= loop.time() - began < 2.0
    assert ingress.in_flight(old.address) == 0


async def test_any_upgrade_is_passed_through(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(
            b"GET /upgrade HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo/1\r\n\r\n"
        )
        r = await read_response(reader, head_only=True)
        assert r.status == 101
        assert (r.headers["connection"].lower(), r.headers["upgrade"]) == ("upgrade", "echo/1")
        for data in (b"any bytes\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x00\xff" * 40000):
            writer.write(data)
            expected = b"u:" + data
            got = b""
            while len(got) < len(expected):
                got += await asyncio.wait_for(reader.read(1 << 20), WAIT)
            assert got.replace(b"u:", b"") == data
        writer.write_eof()  # a half-close is passed on too: the upstream then closes
        assert await at_eof(reader)
    seen = u.requests[0].headers
    assert (seen["connection"].lower(), seen["upgrade"]) == ("upgrade", "echo/1")
    await u.wait_all_closed()


async def test_a_half_close_before_the_101_is_passed_on(
    ingress: Ingress, upstream: Factory
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(
            b"GET /upgrade HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo/1\r\n\r\nlast words"
        )
        writer.write_eof()  # before the task's 101 has come
        assert (await read_response(reader, head_only=True)).status == 101
        assert await asyncio.wait_for(reader.read(), WAIT) == b"u:last words"  # then the end
    await u.wait_all_closed()


async def test_an_upgrade_refused_by_the_task_is_answered_then_closed(
    ingress: Ingress, upstream: Factory
) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(
            b"GET /upgrade?no=1 HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        r = await read_response(reader)
        assert (r.status, r.body) == (400, b"no")
        assert r.headers["connection"] == "close"
        assert await at_eof(reader)


# ── errors ───────────────────────────────────────────────────────────────────────────────────────


async def test_error_answers_have_clear_bodies(
    make_ingress: IngressFactory, upstream: Factory
) -> None:
    ingress = await make_ingress(response_timeout=0.3)
    slow = await upstream("slow")
    dead = Endpoint(f"127.0.0.1:{free_port()}", "dead", 1)
    await ingress.update(
        {
            "empty": Route("empty", host="empty.test"),
            "dead": Route("dead", host="dead.test", endpoints=(dead,)),
            "slow": Route("slow", host="slow.test", endpoints=(slow.endpoint(),)),
            "reset": Route("reset", host="reset.test", endpoints=(slow.endpoint(),)),
        }
    )
    cases = {
        ("nowhere.test", "/"): (404, "no service for host nowhere.test\n"),
        ("empty.test", "/"): (503, "service empty has no ready task\n"),
        ("dead.test", "/"): (502, f"bad gateway: connection refused by {dead.address}\n"),
        ("reset.test", "/reset"): (502, f"bad gateway: {slow.address} closed the connection\n"),
        ("slow.test", "/slow"): (
            504,
            f"gateway timeout: {slow.address} sent nothing for 0.3s\n",
        ),
    }
    for (host, path), (status, text) in cases.items():
        async with client(ingress, host=host) as c:
            r = await c.get(path)
            assert (r.status_code, r.text) == (status, text)
            assert r.headers["content-type"].startswith("text/plain")
            # the client connection survives an error answer
            assert (await c.get(path)).status_code == status


async def test_garbage_from_upstream_is_502(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    await ingress.update(web(u))
    async with client(ingress) as c:
        r = await c.get("/garbage")
        assert r.status_code == 502
        assert r.text.startswith(f"bad gateway: bad response from {u.address}")


async def test_next_endpoint_when_connecting_fails(ingress: Ingress, upstream: Factory) -> None:
    u = await upstream("u")
    dead = Endpoint(f"127.0.0.1:{free_port()}", "dead", 1)
    await ingress.update({"web": Route("web", host="web.test", endpoints=(dead, u.endpoint()))})
    async with client(ingress) as c:
        for _ in range(6):
            assert (await c.get("/")).status_code == 200


async def test_response_cut_short_closes_the_client(ingress: Ingress, upstream: Factory) -> None:
    await ingress.update(web(await upstream("u")))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /cut HTTP/1.1\r\nHost: web.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert b"Content-Length: 100" in head
        assert await asyncio.wait_for(reader.read(), WAIT) == b"0123456789"


@pytest.mark.parametrize("mode", ["one_per_conn", "close_idle"])
async def test_stale_pooled_connection_is_retried(
    ingress: Ingress, upstream: Factory, mode: str
) -> None:
    u = await upstream("u", **{mode: True})
    await ingress.update(web(u))
    async with client(ingress) as c:
        statuses = [(await c.get(f"/{i}")).status_code for i in range(30)]
        statuses += [(await c.post(f"/p{i}", content=b"body")).status_code for i in range(10)]
    assert statuses == [200] * 40
    assert [s.target for s in u.requests] == [f"/{i}" for i in range(30)] + [
        f"/p{i}" for i in range(10)
    ]


# ── drain and updates ────────────────────────────────────────────────────────────────────────────


async def test_drain_waits_for_in_flight_and_sends_nothing_new(
    ingress: Ingress, upstream: Factory
) -> None:
    a, b = await upstream("a"), await upstream("b")
    await ingress.update(web(a, b))
    async with client(ingress) as slow_client, client(ingress) as c:
        slow = asyncio.create_task(slow_client.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        assert (await c.get("/warm")).json()["name"] == "b"  # a's pooled connection: none idle
        drain = asyncio.create_task(ingress.drain(a.address, WAIT))
        for _ in range(5):
            assert (await c.get("/")).json()["name"] == "b"
        await ingress.update(web(a, b))  # still listed: still drained
        for _ in range(5):
            assert (await c.get("/")).json()["name"] == "b"
        assert not drain.done()
        assert ingress.in_flight(a.address) == 1
        a.release.set()
        assert (await asyncio.wait_for(slow, WAIT)).status_code == 200
        assert await asyncio.wait_for(drain, WAIT) == 0
    assert [s.target for s in a.requests] == ["/slow"]


async def test_drain_closes_idle_pooled_connections(ingress: Ingress, upstream: Factory) -> None:
    a, b = await upstream("a"), await upstream("b")
    await ingress.update(web(a, b))
    async with client(ingress) as c:
        for _ in range(4):
            assert (await c.get("/")).status_code == 200
    assert (a.open, b.open) == (1, 1)
    assert await ingress.drain(a.address, WAIT) == 0
    await a.wait_all_closed()
    assert b.open == 1


async def test_client_reset_mid_request_ends_it(ingress: Ingress, upstream: Factory) -> None:
    a = await upstream("a")
    await ingress.update(web(a))
    async with raw(ingress.shared_port or 0) as (_, writer):
        writer.write(b"GET /slow HTTP/1.1\r\nHost: web.test\r\n\r\n")
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        assert ingress.in_flight(a.address) == 1
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # closing with SO_LINGER 0 sends a reset
    assert await ingress.drain(a.address, WAIT) == 0  # returns when the count reaches 0
    stats = ingress.stats()["web"]
    assert (stats.requests, stats.errors_5xx, stats.in_flight) == (1, 0, 0)
    a.release.set()
    await a.wait_all_closed()  # its upstream connection was dropped, not pooled


async def test_half_closed_client_still_gets_its_answer(
    ingress: Ingress, upstream: Factory
) -> None:
    await ingress.update(web(await upstream("a")))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: web.test\r\n\r\n")
        writer.write_eof()
        r = await read_response(reader)
        assert r.status == 200
        assert r.headers["connection"] == "close"
        assert await at_eof(reader)


async def test_a_request_that_outlives_the_drain_gets_504(
    ingress: Ingress, upstream: Factory
) -> None:
    # The drain ends with the request unanswered; the agent then stops the task, and its
    # connection dies with it. The client must get the ingress's 504 at the drain timeout, not
    # the 502 of a connection cut when the process goes.
    a = await upstream("a")
    await ingress.update(web(a))
    loop = asyncio.get_running_loop()
    async with client(ingress) as c:
        slow = asyncio.create_task(c.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        began = loop.time()
        assert await ingress.drain(a.address, 0.3) == 1  # answered 504 by the ingress
        a.die()  # what the agent does next: SIGTERM, the process is gone
        r = await asyncio.wait_for(slow, WAIT)
        took = loop.time() - began
        assert (r.status_code, r.text) == (
            504,
            f"gateway timeout: {a.address} was drained and did not answer within 0.3s\n",
        )
        assert 0.3 <= took < 2.0, took
        assert ingress.in_flight(a.address) == 0
        async with client(ingress) as other:
            r = await other.get("/")
            assert (r.status_code, r.text) == (503, "service web has no ready task\n")
    stats = ingress.stats()["web"]
    assert (stats.requests, stats.errors_5xx, stats.in_flight) == (2, 2, 0)
    assert await ingress.drain(a.address, 0.05) == 0  # nothing left in flight


async def test_a_request_still_connecting_at_the_drain_timeout_gets_504(
    make_ingress: IngressFactory,
) -> None:
    ingress = await make_ingress(connect_timeout=WAIT)
    with contextlib.ExitStack() as stack:
        # A listener whose accept queue is full: the kernel drops new SYNs, so connecting to it
        # hangs (until the ingress's connect timeout, far beyond the drain).
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
        route = Route("web", host="web.test", endpoints=(Endpoint(address, "task-full", 1),))
        await ingress.update({"web": route})
        async with client(ingress) as c:
            asking = asyncio.create_task(c.get("/"))
            async with asyncio.timeout(WAIT):
                while not ingress.in_flight(address):
                    await asyncio.sleep(0.005)
            assert await ingress.drain(address, 0.05) == 1
            assert ingress.in_flight(address) == 0
            r = await asyncio.wait_for(asking, WAIT)
            assert (r.status_code, r.text) == (
                504,
                f"gateway timeout: {address} was drained and did not answer within 0.05s\n",
            )


async def test_a_response_still_streaming_at_the_drain_timeout_is_cut(
    ingress: Ingress, upstream: Factory
) -> None:
    # Its head is with the client: no 504 can follow it. The ingress closes the client's
    # connection (the short body tells the client the response is incomplete) and forgets the
    # upstream, so that stopping the task finds nothing in flight.
    a = await upstream("a")
    await ingress.update(web(a))
    async with raw(ingress.shared_port or 0) as (reader, writer):
        writer.write(b"GET /drip HTTP/1.1\r\nHost: web.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"01234"
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        assert await ingress.drain(a.address, 0.05) == 1
        assert ingress.in_flight(a.address) == 0
        assert await at_eof(reader)


async def test_route_updates_under_load_lose_no_request(
    ingress: Ingress, upstream: Factory
) -> None:
    blue = [await upstream(f"blue{i}") for i in range(2)]
    green = [await upstream(f"green{i}") for i in range(2)]
    await ingress.update(web(*blue))
    done = 0
    tick = asyncio.Event()
    statuses: list[int] = []

    async def worker() -> None:
        nonlocal done
        async with client(ingress) as c:
            for _ in range(10):
                statuses.append((await c.get("/sleep?s=0.002")).status_code)
                done += 1
                if done % 10 == 0:
                    tick.set()

    async def swapper() -> int:
        swaps = 0
        while done < 200:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), 0.5)
            tick.clear()
            await ingress.update(web(*(green if swaps % 2 == 0 else blue)))
            swaps += 1
        return swaps

    swaps = asyncio.create_task(swapper())
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(20))), 4 * WAIT)
    assert await asyncio.wait_for(swaps, WAIT) >= 5
    assert statuses == [200] * 200
    assert sum(len(u.requests) for u in blue + green) == 200
    assert all(u.requests for u in blue + green)


# ── stats ────────────────────────────────────────────────────────────────────────────────────────


async def test_stats_per_service_and_revision(ingress: Ingress, upstream: Factory) -> None:
    v1, v2 = await upstream("v1"), await upstream("v2")
    await ingress.update(
        {
            "web": Route("web", host="web.test", endpoints=(v1.endpoint(1), v2.endpoint(2))),
            "empty": Route("empty", host="empty.test"),
        }
    )
    async with client(ingress) as c:
        for path in ["/", "/", "/", "/", "/fail", "/fail"]:
            await c.get(path)
    async with client(ingress, host="empty.test") as c:
        assert (await c.get("/")).status_code == 503

    stats = ingress.stats()
    assert stats["web"].requests == 6
    assert stats["web"].errors_5xx == 2
    assert stats["web"].in_flight == 0
    assert len(stats["web"].latency_counts) == len(LATENCY_BUCKETS) + 1
    assert sum(stats["web"].latency_counts) == 6
    assert 0 < stats["web"].latency_sum < 6 * LATENCY_BUCKETS[-1]
    assert (stats["empty"].requests, stats["empty"].errors_5xx) == (1, 1)

    revisions = ingress.revision_stats()
    assert set(revisions) == {("web", 1), ("web", 2)}
    for key in revisions:
        assert (revisions[key].requests, revisions[key].errors_5xx) == (3, 1)
        assert sum(revisions[key].latency_counts) == 3


async def test_stats_count_in_flight(ingress: Ingress, upstream: Factory) -> None:
    a = await upstream("a")
    await ingress.update(web(a))
    async with client(ingress) as c:
        slow = asyncio.create_task(c.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        assert ingress.stats()["web"].in_flight == 1
        assert ingress.revision_stats()[("web", 1)].in_flight == 1
        a.release.set()
        await asyncio.wait_for(slow, WAIT)
    assert ingress.stats()["web"].in_flight == 0
    assert ingress.stats()["web"].requests == 1


async def test_close_ends_everything(make_ingress: IngressFactory, upstream: Factory) -> None:
    ingress = await make_ingress()
    a = await upstream("a")
    port = free_port()
    await ingress.update(web(a, ports=(port,)))
    async with client(ingress) as c:
        slow = asyncio.create_task(c.get("/slow"))
        await asyncio.wait_for(a.slow_started.wait(), WAIT)
        await ingress.close()
        with pytest.raises(httpx.HTTPError):
            await asyncio.wait_for(slow, WAIT)
    for p in (port, ingress.shared_port):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", p), WAIT)


# ── under uvloop, as the server runs it ──────────────────────────────────────────────────────────


def test_under_uvloop() -> None:
    """The suite runs on the default loop; the server runs the ingress on uvloop, whose
    transports differ in the details (write-after-close, half-close, flow control). The whole
    module also passes with uvloop as the policy; this keeps a representative scenario on it."""
    import uvloop

    async def scenario() -> None:
        ingress = Ingress(shared_port=0, response_timeout=0.5, limits=Limits(max_body=1000))
        ups = [await Upstream(f"u{i}").start() for i in range(3)]
        try:
            await ingress.start()
            await ingress.update(web(*ups))
            async with client(ingress) as c:
                names = [(await c.get("/")).json()["name"] for _ in range(9)]
                assert sorted(names) == ["u0", "u0", "u0", "u1", "u1", "u1", "u2", "u2", "u2"]
                assert (await c.get("/chunked")).text == "hello world"
                assert (await c.get("/big?n=2000000")).content[:256] == bytes(range(256))
                assert (await c.post("/", content=b"x" * 1001)).status_code == 413
            async with client(ingress) as c:
                assert (await c.get("/slow")).status_code == 504
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.get("/cut")
            async with raw(ingress.shared_port or 0) as (reader, writer):
                writer.write(
                    b"GET /1 HTTP/1.1\r\nHost: web.test\r\n\r\n"
                    b"GET /2 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n"
                )
                first, second = await read_response(reader), await read_response(reader)
                assert json.loads(first.body)["path"] == "/1"
                assert json.loads(second.body)["path"] == "/2"
                assert await at_eof(reader)
            drained = ups[0]
            assert await ingress.drain(drained.address, WAIT) == 0
            before = len(drained.requests)
            async with client(ingress) as c:
                for _ in range(6):
                    assert (await c.get("/")).status_code == 200
            assert len(drained.requests) == before
        finally:
            await ingress.close()
            for u in ups:
                await u.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 6 * WAIT))


async def test_weighted_split_and_preview_pin_through_the_proxy(
    ingress: Ingress, upstream: Factory
) -> None:
    stable = await upstream("stable")
    canary = await upstream("canary")
    endpoints = (stable.endpoint(1), canary.endpoint(2))
    pins = (Pin(2, header="X-Warren-Preview"),)
    split = Route(
        "web", host="web.test", endpoints=endpoints, weights=((1, 90), (2, 10)), pins=pins
    )
    await ingress.update({"web": split})
    async with client(ingress) as c:
        names = [(await c.get("/")).json()["name"] for _ in range(100)]
        assert names.count("canary") == 10  # exactly the weight, with one canary replica
        headers = {"X-Warren-Preview": "1"}
        preview = [(await c.get("/", headers=headers)).json()["name"] for _ in range(5)]
        assert preview == ["canary"] * 5
        for _ in range(10):
            await c.get("/fail")
    back = Route("web", host="web.test", endpoints=endpoints, weights=((1, 100), (2, 0)))
    await ingress.update({"web": back})
    async with client(ingress) as c:
        assert {(await c.get("/")).json()["name"] for _ in range(20)} == {"stable"}
    # The sliding windows canary analysis reads.
    canary_window, stable_window = ingress.window("web", 2, 60), ingress.window("web", 1, 60)
    assert canary_window.requests == 10 + 5 + 1  # 10% of 100, the previews, 10% of the fails
    assert (canary_window.errors, stable_window.errors) == (1, 9)
    assert stable_window.requests == 90 + 9 + 20
    assert ingress.window("web", 3, 60).requests == 0
    assert all(latency > 0 for latency in canary_window.latencies)
