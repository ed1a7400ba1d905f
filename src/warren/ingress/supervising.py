"""The ingress as a process of its own, as the server or worker that supervises it sees it.

``warren server`` and ``warren worker`` start ``warren ingress`` in a session of its own (so that
neither a SIGTERM nor a kill -9 of the server reaches it), and the ingress writes what it is to
``DATA_DIR/ingress/ingress.json``: pid, start time, version, settings. A server that starts
again finds it there and adopts it — same pid *and* start time, so never a stranger that got the
pid since — instead of starting a second one; one of another version or other settings is
replaced (``warren ingress --replace``: the new one takes the listening sockets over, the old
one drains and exits). One that exits is started again. In between, the ingress keeps serving
the routing it had, and follows the routing stream again as soon as the API answers.

**Workers.** The ingress is ``workers`` such processes (``--ingress-workers``, default: one
per core), each serving every port on a socket of its own bound with SO_REUSEPORT: the kernel
spreads the connections among them. Each is started, adopted, replaced and started again on
its own, has its own record and admin socket — worker 0 under the plain names
(``ingress.json``, ``admin.sock``, ``ingress.log``), worker N under ``ingress-N.json``,
``admin-N.sock``, ``ingress-N.log`` — and reports its own traffic.

``RemoteIngress`` is the ``DataPlane`` the server's agent and metrics use: routes reach the
processes through the routing stream, so ``update`` has nothing to do; drains go to every
worker's admin socket (``ingress.admin``), and the counters are the sum of theirs.

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
from typing import Any, TypeVar

from .. import __version__
from ..domain.errors import UnavailableError, ValidationError, WarrenError
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
    "admin_path",
    "default_workers",
    "ingress_workers",
    "log_path",
    "read_token",
    "record_path",
    "write_token",
]

log = logging.getLogger("warren.ingress")

K = TypeVar("K")

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
MAX_WORKERS = 4096


def default_workers() -> int:
    """One ingress worker per core."""
    return os.cpu_count() or 1


def ingress_workers(data_plane: str, asked: int | None) -> int:
    """How many ``warren ingress`` processes a node runs: ``asked``, else one per core; one
    that drives HAProxy (which runs a thread per core itself)."""
    if data_plane == "haproxy":
        if asked not in (None, 1):
            raise ValidationError(
                "does not apply to --data-plane haproxy: HAProxy runs a thread per core itself",
                "--ingress-workers",
            )
        return 1
    return asked or default_workers()


def _named(name: str, worker: int) -> str:
    """Worker 0's files keep the names of a single ingress; worker N's carry its number."""
    if worker == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{worker}{dot}{suffix}"


def record_path(data_dir: Path, worker: int = 0) -> Path:
    return data_dir / _named(RECORD, worker)


def admin_path(data_dir: Path, worker: int = 0) -> Path:
    return data_dir / _named(ADMIN_SOCKET, worker)


def log_path(data_dir: Path, worker: int = 0) -> Path:
    return data_dir / _named(LOG, worker)


def _worker_of(record: Path) -> int | None:
    """The worker a record file belongs to (None: not a record)."""
    if record.name == RECORD:
        return 0
    stem, _, number = record.name.removesuffix(".json").rpartition("-")
    if stem != "ingress" or not number.isdigit() or not record.name.endswith(".json"):
        return None
    return int(number)


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
    manager_ca: str | None = None
    """The CA bundle that verifies managers served over https (None: the usual public CAs)."""
    manager_cert: str | None = None
    """A manager's own certificate chain file, trusted by that certificate alone: what the
    server that supervises the ingress gives it (``linking``)."""
    data_plane: str = "builtin"
    """``builtin``: it proxies itself; ``haproxy``: it drives an HAProxy (``warren.haproxy``)."""

    def to_args(self) -> list[str]:
        port = ["--http-port", str(self.http_port)] if self.http_port is not None else []
        limits = self.limits
        trust = [
            *(["--manager-ca", self.manager_ca] if self.manager_ca else []),
            *(["--manager-cert", self.manager_cert] if self.manager_cert else []),
        ]
        return [
            "--manager", ",".join(self.managers), *trust,
            "--ingress-host", self.host,
            *(port or ["--no-http-port"]),
            "--report-every", f"{round(self.report_every * 1000)}ms",
            "--ingress-head-timeout", f"{round(limits.head_timeout * 1000)}ms",
            "--ingress-idle-timeout", f"{round(limits.idle_timeout * 1000)}ms",
            "--ingress-max-request-line", str(limits.max_request_line),
            "--ingress-max-header-bytes", str(limits.max_header_bytes),
            "--ingress-max-header-fields", str(limits.max_header_fields),
            *(["--ingress-max-body", str(limits.max_body)] if limits.max_body is not None else []),
            "--data-plane", self.data_plane,
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
    worker: int = 0
    """Which of the ingress's workers it is."""

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
            "managerCa": self.settings.manager_ca,
            "managerCert": self.settings.manager_cert,
            "dataPlane": self.settings.data_plane,
            "sharedPort": self.shared_port,
            "worker": self.worker,
        }
        path = record_path(data_dir, self.worker)
        tmp = data_dir / f".{path.name}.{os.getpid()}"
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)

    @staticmethod
    def read(data_dir: Path, worker: int = 0) -> IngressRecord | None:
        try:
            body = json.loads(record_path(data_dir, worker).read_text())
            settings = IngressSettings(
                tuple(str(m) for m in body["managers"]),
                str(body["host"]),
                None if body["httpPort"] is None else int(body["httpPort"]),
                float(body.get("reportEvery", 0.5)),
                Limits(**body.get("limits", {})),
                body.get("managerCa"),
                body.get("managerCert"),
                str(body.get("dataPlane", "builtin")),
            )
            return IngressRecord(
                int(body["pid"]),
                None if body["startTicks"] is None else int(body["startTicks"]),
                str(body["version"]),
                settings,
                None if body["sharedPort"] is None else int(body["sharedPort"]),
                worker,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def running(data_dir: Path, worker: int = 0) -> IngressRecord | None:
        """The record of the ingress worker that runs now, if one does."""
        record = IngressRecord.read(data_dir, worker)
        return record if record is not None and record.alive() else None

    @staticmethod
    def all_running(data_dir: Path) -> dict[int, IngressRecord]:
        """Every worker that runs now, by number (however many the last server wanted)."""
        found = {}
        for path in data_dir.glob("ingress*.json"):
            worker = _worker_of(path)
            if worker is not None and (record := IngressRecord.running(data_dir, worker)):
                found[worker] = record
        return found


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
    """Starts or adopts the ``workers`` ingress processes of ``data_dir``, and starts each
    again when it exits. Stopping the supervisor leaves them running: they serve while no
    server does."""

    def __init__(
        self, data_dir: Path, settings: IngressSettings, token: str, workers: int = 1
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.token = token
        self.workers = workers
        self.pids: list[int | None] = [None] * workers
        """Each worker's pid, by number."""
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        """Worker 0's pid."""
        return self.pids[0]

    async def start(self) -> None:
        """Adopt the running workers, or start them (replacing one of another version or
        other settings). Raises UnavailableError, with the ingress's own words, when one
        cannot start."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_token(self.data_dir, self.token)
        running = IngressRecord.all_running(self.data_dir)
        elsewhere = [r for r in running.values() if r.settings.host != self.settings.host]
        if elsewhere:
            # Their sockets are bound to another address: of no use to new ones, in their way.
            log.info(
                "ingress: stopping pid %s (listening on %s)",
                ", ".join(str(r.pid) for r in elsewhere),
                elsewhere[0].settings.host,
            )
            await asyncio.gather(*(_stop(r.pid) for r in elsewhere))
            running = {w: r for w, r in running.items() if r not in elsewhere}
        for worker, record in running.items():
            if worker >= self.workers:
                # Fewer workers wanted: it stops accepting, finishes what it has and exits.
                log.info("ingress: stopping worker %d (pid %d): %d wanted", worker, record.pid,
                         self.workers)  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGTERM)
        # Worker 0 first: the others serve the shared port it picked, when asked for "any".
        await self._start_worker(0, running.get(0))
        await asyncio.gather(
            *(self._start_worker(w, running.get(w)) for w in range(1, self.workers))
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._supervise(w), name=f"ingress-{w}") for w in range(self.workers)
        ]

    async def stop(self) -> None:
        """Stop watching; the workers keep serving."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def _start_worker(self, worker: int, running: IngressRecord | None) -> None:
        if running is None:
            await self._launch(worker, replace=False)
        elif running.version != __version__ or running.settings != self.settings:
            why = (
                f"version {running.version}, this one {__version__}"
                if running.version != __version__
                else "other settings"
            )
            log.info("ingress: replacing worker %d, pid %d (%s)", worker, running.pid, why)
            await self._launch(worker, replace=True)
        else:
            self.pids[worker] = running.pid
            log.info("ingress: adopted worker %d (pid %d)", worker, running.pid)

    async def _launch(self, worker: int, replace: bool) -> None:
        """Start ``warren ingress`` and wait until it serves (it says so on a pipe)."""
        log_file = log_path(self.data_dir, worker)
        offset = log_file.stat().st_size if log_file.exists() else 0
        read_end, write_end = os.pipe()
        argv = [
            sys.executable, "-m", "warren", "ingress", "--data-dir", str(self.data_dir),
            "--worker", str(worker), *self.settings.to_args(), "--ready-fd", str(write_end),
            *(["--replace"] if replace else []),
        ]  # fmt: skip
        try:
            # Blocking on purpose: open and fork take well under a millisecond.
            with open(log_file, "ab") as out:  # noqa: ASYNC230
                popen = subprocess.Popen(  # noqa: ASYNC220
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the server's death (a signal to its group) spares it
                    close_fds=True,
                    pass_fds=(write_end,),
                    env=_ingress_env(),
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
            raise UnavailableError(f"the ingress did not start: {_last_line(log_file, offset)}")
        self._popens[worker], self.pids[worker] = popen, popen.pid
        log.info("ingress: started worker %d (pid %d, log in %s)", worker, popen.pid, log_file)

    # ── supervise ────────────────────────────────────────────────────────────────────────────

    async def _supervise(self, worker: int) -> None:
        while True:
            pid = self.pids[worker]
            assert pid is not None
            await _exit_of(pid)
            popen = self._popens.pop(worker, None)
            if popen is not None and popen.pid == pid:
                popen.wait()  # ours: reap it
            running = IngressRecord.running(self.data_dir, worker)
            if running is not None and running.pid != pid:
                log.info("ingress: worker %d: pid %d took over from pid %d", worker,
                         running.pid, pid)  # fmt: skip
                self.pids[worker] = running.pid
                continue
            log.warning("ingress: worker %d (pid %d) exited; starting it again", worker, pid)
            await self._start_again(worker)

    async def _start_again(self, worker: int) -> None:
        attempt = 0
        while True:
            try:
                await self._launch(worker, replace=False)
                return
            except WarrenError as exc:
                delay = RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)]
                log.warning("ingress: %s; trying again in %gs", exc.message, delay)
                await asyncio.sleep(delay)
                attempt += 1


KEPT_ENV = ("WARREN_PURE", "WARREN_DEBUG")
"""The WARREN_* variables an ingress started here inherits: how it runs, not what it does."""


def _ingress_env() -> dict[str, str]:
    """This process's environment without its WARREN_* settings: every flag of ``warren
    ingress`` may come from one (``WARREN_TOKEN``, ``WARREN_STOP`` …), and those of the shell
    that started the server are not the ingress's — the CLI's admin token, say, which it would
    take for a join token. Its settings are all on its command line."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WARREN_") or key in KEPT_ENV
    }


def stop_running(data_dir: Path) -> list[int]:
    """Stop every worker of the ingress that runs on ``data_dir``, at once, as ``_stop`` does
    (what ``warren ingress --stop`` and the demo do): their pids (none: none ran)."""
    pids = sorted(r.pid for r in IngressRecord.all_running(data_dir).values())

    async def stop_all() -> None:
        await asyncio.gather(*(_stop(pid) for pid in pids))

    asyncio.run(stop_all())
    return pids


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
    """The ``DataPlane`` of a server or worker whose ingress is ``workers`` processes of its
    own."""

    def __init__(self, data_dir: Path, workers: int = 1) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.admins = [AdminClient(admin_path(data_dir, w)) for w in range(workers)]
        self._stats: dict[str, RouteStats] = {}
        self._revision_stats: dict[tuple[str, int], RouteStats] = {}
        self._problems: dict[int, str] = {}

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        """Nothing to do: the ingress follows the routing stream itself."""

    async def drain(self, address: str, timeout: float) -> int:
        """Drain ``address`` on every worker (each has its own requests in flight to it)."""
        left = await asyncio.gather(*(self._drain(a, address, timeout) for a in self.admins))
        return sum(left)

    @staticmethod
    async def _drain(admin: AdminClient, address: str, timeout: float) -> int:
        try:
            answer = await admin.call("drain", wait=timeout + 5.0, address=address, timeout=timeout)
        except UnavailableError as exc:
            # No such worker runs (it is being started again): none has requests in flight.
            log.warning("ingress: cannot drain %s: %s", address, exc.message)
            return 0
        return int(answer.get("left", 0))

    async def refresh(self) -> None:
        """Read the workers' counters and problems, and add them up (before a scrape, an
        info). A worker that does not answer (being started again) counts for nothing."""
        answers = await asyncio.gather(*(self._stats_of(a) for a in self.admins))
        stats: dict[str, RouteStats] = {}
        revision_stats: dict[tuple[str, int], RouteStats] = {}
        problems: dict[int, str] = {}
        for answer in answers:
            if answer is None:
                continue
            for name, wire in answer.get("services", {}).items():
                _add_to(stats, name, stats_from_wire(wire))
            for service, revision, wire in answer.get("revisions", []):
                _add_to(revision_stats, (str(service), int(revision)), stats_from_wire(wire))
            problems.update({int(p): str(why) for p, why in answer.get("problems", {}).items()})
        if any(answer is not None for answer in answers):
            self._stats, self._revision_stats, self._problems = stats, revision_stats, problems

    @staticmethod
    async def _stats_of(admin: AdminClient) -> dict[str, Any] | None:
        try:
            return await admin.call("stats", wait=2.0)
        except UnavailableError as exc:
            log.debug("ingress: no counters: %s", exc.message)
            return None

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
        for worker in range(self.workers):
            record = IngressRecord.read(self.data_dir, worker)
            if record is not None:
                return record.shared_port
        return None


def _add_to(counters: dict[K, RouteStats], key: K, more: RouteStats) -> None:
    """Add one worker's counters to the sum."""
    have = counters.get(key)
    if have is None:
        counters[key] = more
        return
    counters[key] = RouteStats(
        requests=have.requests + more.requests,
        errors_5xx=have.errors_5xx + more.errors_5xx,
        in_flight=have.in_flight + more.in_flight,
        latency_counts=[
            a + b for a, b in zip(have.latency_counts, more.latency_counts, strict=True)
        ],
        latency_sum=have.latency_sum + more.latency_sum,
    )
