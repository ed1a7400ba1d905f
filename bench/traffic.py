"""A load generator that logs every response, for the benchmarks that need to know *when* each
revision answered: ``python -m bench.traffic HOST:PORT --connections N [--rate R] --out FILE``.

Runs in a process of its own (so that its timestamps are not delayed by the benchmark's own
work), on uvloop, over ``connections`` keep-alive connections. With ``--rate`` 0 every connection
sends its next request as soon as the previous one is answered (a closed loop, like wrk); with a
rate, the connections share it (each sends every ``connections / rate`` seconds, staggered).

Per response it logs the ``time.monotonic()`` the request was sent and the response received
(``CLOCK_MONOTONIC``, the same clock in every process of the machine, so they compare with times
taken by the proxies and the benchmark), the status (0: no response — connection refused, closed
or timed out), and a label: the ``version`` the body names, ``injected`` for the demo app's
injected failures, else ``""``. Prints ``ready`` once every connection is open; on SIGTERM it
stops, writes the log to ``--out`` and exits. Standard library and uvloop only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

__all__ = ["Traffic", "TrafficLog", "read_line", "read_log", "stop_process", "traffic"]

_VERSION = re.compile(rb'"version":\s*"([^"]*)"')
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
TIMEOUT = 5.0


@dataclass
class TrafficLog:
    """One row per request: ``sent[i]``, ``received[i]`` (monotonic seconds), ``status[i]`` (0: no
    response) and ``labels[label[i]]``."""

    labels: list[str] = field(default_factory=list)
    sent: array[float] = field(default_factory=lambda: array("d"))
    received: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("h"))
    label: array[int] = field(default_factory=lambda: array("h"))

    def add(self, sent: float, received: float, status: int, label: str) -> None:
        try:
            code = self.labels.index(label)
        except ValueError:
            code = len(self.labels)
            self.labels.append(label)
        self.sent.append(sent)
        self.received.append(received)
        self.status.append(status)
        self.label.append(code)

    def __len__(self) -> int:
        return len(self.sent)

    def failed(self, i: int) -> bool:
        return self.status[i] == 0 or self.status[i] >= 500

    def write(self, path: Path) -> None:
        with open(path, "wb") as f:
            f.write(json.dumps({"labels": self.labels, "n": len(self)}).encode() + b"\n")
            for a in (self.sent, self.received, self.status, self.label):
                a.tofile(f)


def read_log(path: Path) -> TrafficLog:
    log = TrafficLog()
    with open(path, "rb") as f:
        head = json.loads(f.readline())
        log.labels = list(head["labels"])
        for a in (log.sent, log.received, log.status, log.label):
            a.fromfile(f, head["n"])
    return log


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line a child prints on its (unbuffered) stdout, waiting at most ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise SystemExit(f"{proc.args!r}: no answer within {timeout:g}s")
        byte = proc.stdout.read(1)
        if not byte:
            raise SystemExit(f"{proc.args!r} exited (status {proc.wait(5)})")
        line += byte
    return line.decode().strip()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Traffic:
    """The load generator child, seen from the benchmark."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc = proc
        self.out = out

    def stop(self) -> TrafficLog:
        stop_process(self.proc, 30)
        if self.proc.returncode != 0 or not self.out.exists():
            raise SystemExit(f"the load generator failed (status {self.proc.returncode})")
        return read_log(self.out)


@contextlib.contextmanager
def traffic(
    port: int, connections: int = 16, rate: float = 0.0, core: int | None = None
) -> Iterator[Traffic]:
    """A load generator on ``127.0.0.1:port`` (pinned to ``core``), started and connected."""
    out = Path(tempfile.mkdtemp(prefix="warren-traffic-")) / "log"
    args = [sys.executable, "-m", "bench.traffic", f"127.0.0.1:{port}"]
    args += ["--connections", str(connections), "--rate", str(rate), "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, bufsize=0)
    try:
        if core is not None and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(proc.pid, {core})
        if read_line(proc, 20) != "ready":
            raise SystemExit("the load generator did not start")
        yield Traffic(proc, out)
    finally:
        stop_process(proc)
        out.unlink(missing_ok=True)
        out.parent.rmdir()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.sent_at = 0.0
        self.due = 0.0
        """When its next request is due (with a rate)."""
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.sent_at = time.monotonic()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[: end + 2]
        m = _LENGTH.search(head)
        length = int(m.group(1)) if m else 0
        if len(self.buf) < end + 4 + length:
            return
        now = time.monotonic()
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        try:
            status = int(head[9:12])
        except ValueError:
            status = 0
        v = _VERSION.search(body)
        label = v.group(1).decode() if v else ("injected" if b"injected failure" in body else "")
        self.busy = False
        self.gen.log.add(self.sent_at, now, status, label)
        if _CLOSE.search(head):
            self.close()
            self.gen.reopen()
        else:
            self.gen.next(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.open.discard(self)
        if self.busy and not self.gen.stopping:
            self.busy = False
            self.gen.log.add(self.sent_at, time.monotonic(), 0, "")
        if self.transport is not None:
            self.transport = None
            self.gen.reopen()

    def close(self) -> None:
        self.gen.open.discard(self)
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()


class _Generator:
    def __init__(self, host: str, port: int, connections: int, rate: float) -> None:
        self.host, self.port = host, port
        self.connections = connections
        self.interval = connections / rate if rate > 0 else 0.0
        self.request = (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: warren-bench\r\n\r\n"
        ).encode()
        self.log = TrafficLog()
        self.open: set[_Connection] = set()
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> _Connection:
        async with asyncio.timeout(TIMEOUT):
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        self.open.add(conn)
        return conn

    def next(self, conn: _Connection) -> None:
        """Send ``conn``'s next request: now (closed loop), or at its next turn. Turns are
        ``interval`` apart from the connection's first one, whenever the answers come, so that
        the connections stay spread evenly (at most one late turn is caught up)."""
        if self.stopping:
            return
        if self.interval <= 0:
            conn.send()
            return
        now = time.monotonic()
        conn.due = max(conn.due + self.interval, now - self.interval)
        if conn.due <= now:
            conn.send()
        else:
            self.loop.call_later(conn.due - now, self._send_later, conn)

    def _send_later(self, conn: _Connection) -> None:
        if not self.stopping and conn.transport is not None and not conn.busy:
            conn.send()

    def reopen(self) -> None:
        """A connection closed (by the server, or after a failure): open another one."""
        if self.stopping:
            return
        task = self.loop.create_task(self._reopen())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reopen(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                conn = await self.connect()
            except (OSError, TimeoutError):
                self.log.add(started, time.monotonic(), 0, "")
                await asyncio.sleep(0.01)
                continue
            conn.due = time.monotonic() - self.interval
            self.next(conn)
            return

    def sweep(self) -> None:
        """Fail the requests that have waited more than TIMEOUT (and drop their connection)."""
        now = time.monotonic()
        for conn in list(self.open):
            if conn.busy and now - conn.sent_at > TIMEOUT:
                conn.busy = False
                self.log.add(conn.sent_at, now, 0, "")
                conn.close()
                self.reopen()
        if not self.stopping:
            self.loop.call_later(0.5, self.sweep)

    async def run(self, out: Path) -> None:
        conns = [await self.connect() for _ in range(self.connections)]
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        start = time.monotonic()
        for i, conn in enumerate(conns):
            conn.due = start + self.interval * (i / self.connections - 1)
            self.next(conn)
        self.sweep()
        await stop.wait()
        self.stopping = True
        for conn in list(self.open):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)
        # Requests still unanswered at the stop are not failures: drop them.
        self.log.write(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.traffic")
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: closed loop")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    gen_args = (host or "127.0.0.1", int(port), args.connections, args.rate)

    async def run() -> None:
        await _Generator(*gen_args).run(args.out)

    try:
        uvloop.run(run())
    except OSError as exc:
        sys.exit(f"traffic: {exc}")


if __name__ == "__main__":
    main()
