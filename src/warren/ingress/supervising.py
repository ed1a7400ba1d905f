"""The ingress as a process of its own, as the server or worker that supervises it sees it.

``warren server`` and ``warren worker`` start ``warren ingress`` in a session of its own (so that
neither a SIGTERM nor a kill -9 of the server reaches it), and the ingress writes what it is to
``DATA_DIR/ingress/ingress.json``: pid, start time, version, settings. A server that starts
again finds it there and adopts it — same pid *and* start time, so never a stranger that got the
pid since — instead of starting a second one; one of another version or other settings is
replaced (``warren ingress --replace``: the new one takes the listening sockets over, the old
one drains and exits). One that exits is started again. In between, the ingress keeps serving
the routing it had, and follows the routing stream again as soon as the API answers.

``RemoteIngress`` is the ``DataPlane`` the server's agent and metrics use: routes reach the
process through the routing stream, so ``update`` has nothing to do; drains and counters go
through its admin socket (``ingress.admin``).

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..domain.errors import UnavailableError, WarrenError
from ..ports import Route, RouteStats
from ..processes import start_ticks
from .admin import AdminClient, stats_from_wire
from .limits import Limits

__all__ = [
    "ADMIN_SOCKET",
    "IngressRecord",
    "IngressSettings",
    "IngressSupervisor",
    "RemoteIngress",
    "read_token",
    "write_token",
]

log = logging.getLogger("warren.ingress")

RECORD = "ingress.json"
ADMIN_SOCKET = "admin.sock"
TOKEN = "token"
LOG = "ingress.log"
READY_TIMEOUT = 20.0
"""How long a starting ingress may take to serve (a loaded machine: a few seconds)."""
STOP_GRACE = 35.0
"""An ingress stopped finishes its requests in flight for up to its drain timeout (30 s)."""
RESTART_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Between attempts to start again an ingress that exited (then the last, for ever)."""


@dataclass(frozen=True, slots=True)
class IngressSettings:
    """What an ingress process is started with (besides its data dir and token)."""

    managers: tuple[str, ...]
    """The API URLs it follows the routing stream of, and reports its traffic to."""
    host: str = "127.0.0.1"
    http_port: int | None = 8000
    """The shared port; None: none."""
    report_every: float = 0.5
    """Seconds between its traffic reports: 0.1 to the server that supervises it (on the same
    machine), 0.5 as a worker's to managers elsewhere."""
    limits: Limits = field(default_factory=Limits)

    def to_args(self) -> list[str]:
        port = ["--http-port", str(self.http_port)] if self.http_port is not None else []
        limits = self.limits
        return [
            "--manager", ",".join(self.managers),
            "--ingress-host", self.host,
            *(port or ["--no-http-port"]),
            "--report-every", f"{round(self.report_every * 1000)}ms",
            "--ingress-head-timeout", f"{round(limits.head_timeout * 1000)}ms",
            "--ingress-idle-timeout", f"{round(limits.idle_timeout * 1000)}ms",
            "--ingress-max-request-line", str(limits.max_request_line),
            "--ingress-max-header-bytes", str(limits.max_header_bytes),
            "--ingress-max-header-fields", str(limits.max_header_fields),
            *(["--ingress-max-body", str(limits.max_body)] if limits.max_body is not None else []),
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class IngressRecord:
    """What a running ingress wrote about itself in its data dir."""

    pid: int
    start_ticks: int | None
    version: str
    settings: IngressSettings
    shared_port: int | None
    """The shared port it serves (the one it picked, when asked for port 0)."""

    def alive(self) -> bool:
        return self.start_ticks is not None and start_ticks(self.pid) == self.start_ticks

    def write(self, data_dir: Path) -> None:
        body = {
            "pid": self.pid,
            "startTicks": self.start_ticks,
            "version": self.version,
            "managers": list(self.settings.managers),
            "host": self.settings.host,
            "httpPort": self.settings.http_port,
            "reportEvery": self.settings.report_every,
            "limits": asdict(self.settings.limits),
            "sharedPort": self.shared_port,
        }
        tmp = data_dir / f".{RECORD}.{os.getpid()}"
        tmp.write_text(json.dumps(body))
        os.replace(tmp, data_dir / RECORD)

    @staticmethod
    def read(data_dir: Path) -> IngressRecord | None:
        try:
            body = json.loads((data_dir / RECORD).read_text())
            settings = IngressSettings(
                tuple(str(m) for m in body["managers"]),
                str(body["host"]),
                None if body["httpPort"] is None else int(body["httpPort"]),
                float(body.get("reportEvery", 0.5)),
                Limits(**body.get("limits", {})),
            )
            return IngressRecord(
                int(body["pid"]),
                None if body["startTicks"] is None else int(body["startTicks"]),
                str(body["version"]),
                settings,
                None if body["sharedPort"] is None else int(body["sharedPort"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def running(data_dir: Path) -> IngressRecord | None:
        """The record of the ingress that runs now, if one does."""
        record = IngressRecord.read(data_dir)
        return record if record is not None and record.alive() else None


def write_token(data_dir: Path, token: str) -> None:
    """The node token the ingress follows the routing stream with: in a file (0600), never on
    a command line."""
    fd = os.open(data_dir / TOKEN, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def read_token(data_dir: Path) -> str:
    with contextlib.suppress(OSError):
        return (data_dir / TOKEN).read_text().strip()
    return ""


class IngressSupervisor:
    """Starts or adopts the ingress process of ``data_dir``, and starts it again when it exits.
    Stopping the supervisor leaves the ingress running: it serves while no server does."""

    def __init__(self, data_dir: Path, settings: IngressSettings, token: str) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.token = token
        self.pid: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Adopt the running ingress, or start one (replacing one of another version or other
        settings). Raises UnavailableError, with the ingress's own words, when it cannot."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_token(self.data_dir, self.token)
        running = IngressRecord.running(self.data_dir)
        if running is not None and running.settings.host != self.settings.host:
            # Its sockets are bound to another address: of no use to a new one, and in its way.
            log.info(
                "ingress: stopping pid %d (it listens on %s)", running.pid, running.settings.host
            )
            await _stop(running.pid)
            running = None
        if running is None:
            await self._launch(replace=False)
        elif running.version != __version__ or running.settings != self.settings:
            why = (
                f"version {running.version}, this one {__version__}"
                if running.version != __version__
                else "other settings"
            )
            log.info("ingress: replacing pid %d (%s)", running.pid, why)
            await self._launch(replace=True)
        else:
            self.pid = running.pid
            log.info("ingress: adopted the running one (pid %d)", running.pid)
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="ingress")

    async def stop(self) -> None:
        """Stop watching; the ingress keeps serving."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def _launch(self, replace: bool) -> None:
        """Start ``warren ingress`` and wait until it serves (it says so on a pipe)."""
        log_path = self.data_dir / LOG
        offset = log_path.stat().st_size if log_path.exists() else 0
        read_end, write_end = os.pipe()
        argv = [
            sys.executable, "-m", "warren", "ingress", "--data-dir", str(self.data_dir),
            *self.settings.to_args(), "--ready-fd", str(write_end),
            *(["--replace"] if replace else []),
        ]  # fmt: skip
        try:
            # Blocking on purpose: open and fork take well under a millisecond.
            with open(log_path, "ab") as out:  # noqa: ASYNC230
                popen = subprocess.Popen(  # noqa: ASYNC220
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the server's death (a signal to its group) spares it
                    close_fds=True,
                    pass_fds=(write_end,),
                )
        finally:
            os.close(write_end)
        try:
            ready = await _readable(read_end, READY_TIMEOUT)
        finally:
            os.close(read_end)
        if not ready:
            if popen.poll() is None:
                popen.kill()
            popen.wait()
            raise UnavailableError(f"the ingress did not start: {_last_line(log_path, offset)}")
        self._popen, self.pid = popen, popen.pid
        log.info("ingress: started (pid %d, log in %s)", popen.pid, log_path)

    # ── supervise ────────────────────────────────────────────────────────────────────────────

    async def _supervise(self) -> None:
        while True:
            assert self.pid is not None
            await _exit_of(self.pid)
            if self._popen is not None and self._popen.pid == self.pid:
                self._popen.wait()  # ours: reap it
            self._popen = None
            running = IngressRecord.running(self.data_dir)
            if running is not None and running.pid != self.pid:
                log.info("ingress: pid %d took over from pid %d", running.pid, self.pid)
                self.pid = running.pid
                continue
            log.warning("ingress: pid %d exited; starting it again", self.pid)
            await self._start_again()

    async def _start_again(self) -> None:
        attempt = 0
        while True:
            try:
                await self._launch(replace=False)
                return
            except WarrenError as exc:
                delay = RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)]
                log.warning("ingress: %s; trying again in %gs", exc.message, delay)
                await asyncio.sleep(delay)
                attempt += 1


def stop_running(data_dir: Path) -> int | None:
    """Stop the ingress that runs on ``data_dir`` as ``_stop`` does (what ``warren ingress
    --stop`` and the demo do): its pid, or None if none runs."""
    running = IngressRecord.running(data_dir)
    if running is None:
        return None
    asyncio.run(_stop(running.pid))
    return running.pid


async def _stop(pid: int) -> None:
    """SIGTERM, time for its requests in flight to finish, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_GRACE):
            await _exit_of(pid)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await _exit_of(pid)


async def _readable(fd: int, timeout: float) -> bool:
    """Whether the ingress wrote its "ready" byte on ``fd`` within ``timeout`` (EOF: it exited
    first)."""
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bool] = loop.create_future()

    def read() -> None:
        if not said.done():
            said.set_result(os.read(fd, 1) == b"1")

    loop.add_reader(fd, read)
    try:
        async with asyncio.timeout(timeout):
            return await said
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def _exit_of(pid: int) -> None:
    """Return when ``pid`` exits (a pidfd: works for a process that is not our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _last_line(path: Path, offset: int) -> str:
    """The last line the ingress wrote to its log (after ``offset``): its reason."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return f"see {path}"
    said = [line for line in lines if line]
    return said[-1] if said else f"it exited without a word (see {path})"


class RemoteIngress:
    """The ``DataPlane`` of a server or worker whose ingress is a process of its own."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.admin = AdminClient(data_dir / ADMIN_SOCKET)
        self._stats: dict[str, RouteStats] = {}
        self._revision_stats: dict[tuple[str, int], RouteStats] = {}
        self._problems: dict[int, str] = {}

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        """Nothing to do: the ingress follows the routing stream itself."""

    async def drain(self, address: str, timeout: float) -> int:
        try:
            answer = await self.admin.call(
                "drain", wait=timeout + 5.0, address=address, timeout=timeout
            )
        except UnavailableError as exc:
            # No ingress runs (it is being started again): none has requests in flight.
            log.warning("ingress: cannot drain %s: %s", address, exc.message)
            return 0
        return int(answer.get("left", 0))

    async def refresh(self) -> None:
        """Read the ingress's counters and problems (before a scrape, an info)."""
        try:
            answer = await self.admin.call("stats", wait=2.0)
        except UnavailableError as exc:
            log.debug("ingress: no counters: %s", exc.message)
            return
        self._stats = {
            name: stats_from_wire(wire) for name, wire in answer.get("services", {}).items()
        }
        self._revision_stats = {
            (str(service), int(revision)): stats_from_wire(wire)
            for service, revision, wire in answer.get("revisions", [])
        }
        self._problems = {int(p): str(why) for p, why in answer.get("problems", {}).items()}

    def stats(self) -> Mapping[str, RouteStats]:
        """As of the last ``refresh``."""
        return self._stats

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        return self._revision_stats

    @property
    def problems(self) -> dict[int, str]:
        return dict(self._problems)

    @property
    def shared_port(self) -> int | None:
        record = IngressRecord.read(self.data_dir)
        return record.shared_port if record is not None else None
