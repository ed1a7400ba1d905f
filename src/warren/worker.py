"""``warren worker``: a node that runs tasks for managers elsewhere.

It joins with the cluster's join token (once: the node's own token is kept in its data dir),
registers its node, keeps the node's heartbeat lease alive through the managers' API, follows
its assignments on a stream (its tasks, and the routing table for its own ingress — which routes
to the tasks of every node), runs them with the same agent as ``warren server``, and reports
their observed state. Several managers can be given: it moves to the next one when one stops
answering.

Its ingress runs in its own loop (``ingress="embedded"``), or as a process of its own that it
supervises (``"process"``, the command line's default): that one follows the routing stream
itself, reports its own traffic, and outlives the worker.

Cut off from every manager for longer than the heartbeat lease, the worker stops its tasks on
its own (``Agent.fence``): the managers have declared the node down and started the tasks
elsewhere, and a task must not run twice for longer than its stop grace. When the link comes
back it registers again and reports those tasks stopped.

Stopped (SIGTERM, Ctrl-C), it drains its node first when given a drain timeout (``leave``,
``agent.leaving``): its tasks move to other nodes, then it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent, LeaseWatch, LogRotation
from .agent.leaving import Leaving, Outcome
from .agent.runtimes import close_runtimes, local_runtimes
from .api.metrics import build_metrics
from .api.nodes import node_app, node_routes
from .api.serving import HttpServer, api_tls
from .client import verifying
from .clocks import SystemClock
from .domain.errors import (
    AuthError,
    ConflictError,
    UnavailableError,
    ValidationError,
    WarrenError,
)
from .domain.events import Level
from .domain.logs import LogLine
from .domain.nodes import DrainStatus, Node
from .domain.services import Revision
from .domain.tasks import Task
from .ingress import Ingress, Limits
from .ingress.supervising import (
    IngressSettings,
    IngressSupervisor,
    RemoteIngress,
    ingress_workers,
)
from .linking import ManagerLink
from .ports import Clock, Route
from .reporting import TrafficReporter
from .server import lock_data_dir, node_record, start_ingress
from .tokens import NODE_TOKEN_PREFIX

__all__ = ["ManagerLink", "RemoteDispatcher", "Worker", "WorkerConfig"]

log = logging.getLogger("warren.worker")

NODE_TOKEN_FILE = "node.token"
LOGS_TOKEN_FILE = "logs.token"
RETRY = 0.5
"""Seconds between attempts to reach a manager again."""


@dataclass
class WorkerConfig:
    managers: tuple[str, ...]
    """The managers' API URLs; the first that answers is used."""
    token: str
    """The cluster's join token (or, already joined, the node's own token)."""
    data_dir: Path
    node_name: str
    advertise: str = "127.0.0.1"
    """This node's address: tasks listen on it, and other nodes' ingresses reach them there."""
    ingress_host: str = "127.0.0.1"
    http_port: int | None = 8000
    ingress_limits: Limits = field(default_factory=Limits)
    heartbeat_ttl: float = 10.0
    api: str | None = None
    """``HOST:PORT`` where the managers read this node's tasks' logs, and Prometheus its
    ingress's ``/metrics``; None: not served."""
    docker_network: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ingress: str = "embedded"
    """``server.INGRESS_MODES``: ``warren worker`` runs it as a "process"."""
    ingress_workers: int | None = None
    data_plane: str = "builtin"
    """With ``ingress="process"``: how many ingress processes; None: one per core."""
    drain_timeout: float = 0.0
    """Stopping (``leave``): how long the node may take to move its tasks to other nodes
    before it stops them anyway; 0: it leaves at once, its tasks left running for a
    restarted worker to adopt. ``warren worker`` drains (``--drain-timeout``, 60 s)."""
    log_rotation: LogRotation = field(default_factory=LogRotation)
    """How much of each process task's output is kept."""
    manager_ca: str | None = None
    """The CA bundle that verifies managers served over https; None: the usual public CAs."""
    api_tls_cert: str | None = None
    api_tls_key: str | None = None
    """Serve ``api`` over HTTPS with this certificate chain and key (PEM)."""


class RemoteDispatcher:
    """The agent's dispatcher on a remote worker: the managers' ``/v1/worker`` API. Reports
    wait for a manager to answer (the task's supervisor waits with them); the worker fences
    its tasks if that lasts longer than the lease."""

    def __init__(self, link: ManagerLink, clock: Clock) -> None:
        self.link = link
        self.clock = clock
        self.tasks: dict[str, tuple[Task, int]] = {}
        """The node's tasks as last seen, with their mod revisions (from the stream and from
        our own reports)."""
        self.renewed_at = 0.0
        """time.monotonic() when the lease was last known alive (the request's start)."""
        self._lease = 0
        self._ttl = 0.0

    def seen(self, task: Task, mod_revision: int) -> None:
        known = self.tasks.get(task.id)
        if known is None or known[1] <= mod_revision:
            self.tasks[task.id] = (task, mod_revision)

    async def _patiently(self, call: Callable[[], Any]) -> Any:
        """``call()`` until a manager answers; an answer that is an error is raised."""
        delay = 0.1
        while True:
            try:
                return await call()
            except UnavailableError as exc:
                log.debug("waiting for a manager: %s", exc)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def register(self, node: Node, ttl: float) -> None:
        sent = time.monotonic()
        body = {"node": node.to_wire(), "ttl": ttl}
        answer = await self.link.call("PUT", "/v1/worker/node", body)
        self._lease, self._ttl, self.renewed_at = int(answer["lease"]), ttl, sent

    async def heartbeat(self) -> bool:
        sent = time.monotonic()
        body = {"lease": self._lease, "ttl": self._ttl}
        answer = await self.link.call("POST", "/v1/worker/heartbeat", body)
        self._lease, self.renewed_at = int(answer["lease"]), sent
        return bool(answer["renewed"])

    async def revision(self, service: str, number: int) -> Revision:
        path = f"/v1/worker/revisions/{service}/{number}"
        data = await self._patiently(lambda: self.link.call("GET", path))
        return Revision.model_validate(data)

    async def _fetch(self, task_id: str) -> tuple[Task, int]:
        data = await self._patiently(lambda: self.link.call("GET", f"/v1/worker/tasks/{task_id}"))
        found = Task.model_validate(data["task"]), int(data["modRevision"])
        self.seen(*found)
        return found

    async def update_task(self, task_id: str, change: Callable[[Task], Task | None]) -> Task | None:
        for _ in range(20):
            task, revision = self.tasks.get(task_id) or await self._fetch(task_id)
            new = change(task)
            if new is None or new == task:
                return task
            body = {"task": new.to_wire(), "modRevision": revision}
            path = f"/v1/worker/tasks/{task_id}"
            try:
                answer = await self._patiently(lambda: self.link.call("PUT", path, body))  # noqa: B023
            except ConflictError:
                self.tasks.pop(task_id, None)  # changed meanwhile: read it again
                continue
            self.seen(new, int(answer["modRevision"]))
            return new
        raise ConflictError(f"task {task_id} kept changing under us")

    async def record(self, kind: str, message: str, level: Level, task: Task) -> None:
        body = {"kind": kind, "message": message, "level": level, "task": task.id}
        try:
            await self.link.call("POST", "/v1/worker/events", body)
        except WarrenError as exc:  # an event is worth a try, not a wait
            log.warning("event %s not recorded: %s", kind, exc)

    async def leave(self) -> None:
        await self.link.call("POST", "/v1/worker/leave")

    async def drain_progress(self) -> AsyncIterator[DrainStatus]:
        async for message in self.link.lines("/v1/worker/drain"):
            if message.get("type") == "drain":
                yield DrainStatus.model_validate(message["drain"])


class Worker:
    def __init__(self, config: WorkerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._verify = verifying(config.manager_ca)  # a bad file: one line, before anything
        self.link = ManagerLink(
            config.managers, timeout=min(5.0, config.heartbeat_ttl / 3), verify=self._verify
        )
        self.dispatcher = RemoteDispatcher(self.link, self.clock)
        self.ingress: Ingress | RemoteIngress | None = None
        self.supervisor: IngressSupervisor | None = None
        self.agent: Agent | None = None
        self._lock_fd: int | None = None
        self._api_tls: ssl.SSLContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        """The agent runs (started, and not fenced since)."""
        self._starting: asyncio.Task[None] | None = None
        self.lease_watch: LeaseWatch | None = None
        self._reconnect = False
        self.connected = asyncio.Event()
        """Set while the agent runs (started, not fenced)."""
        self._stopped = asyncio.Event()
        self._interrupted = asyncio.Event()
        """A second stop request: a drain under way stops at once."""
        self.reporter: TrafficReporter | None = None
        self.http: HttpServer | None = None
        self._logs_token: str | None = None

    # ── start and stop ───────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        # First: a file that cannot load is said before anything starts.
        self._api_tls = api_tls(cfg.api_tls_cert, cfg.api_tls_key)
        self._lock_fd = lock_data_dir(cfg.data_dir)
        await self._join()
        if cfg.ingress == "process":
            workers = ingress_workers(cfg.data_plane, cfg.ingress_workers)
            self.ingress = RemoteIngress(cfg.data_dir / "ingress", workers)
            settings = IngressSettings(
                tuple(self.link.managers),
                cfg.ingress_host,
                cfg.http_port,
                limits=cfg.ingress_limits,
                manager_ca=cfg.manager_ca,
                data_plane=cfg.data_plane,
            )
            self.supervisor = IngressSupervisor(
                cfg.data_dir / "ingress", settings, self.link.token, workers
            )
            await self.supervisor.start()
        else:
            self.ingress = await start_ingress(cfg.ingress_host, cfg.http_port, cfg.ingress_limits)
        drivers = local_runtimes(
            cfg.data_dir, cfg.node_name, self.clock, cfg.advertise, cfg.docker_network,
            cfg.log_rotation,
        )  # fmt: skip
        node = node_record(cfg.node_name, tuple(drivers), self.clock, cfg.advertise)
        node = node.model_copy(update={"labels": cfg.labels, "api": await self._serve_api()})
        self.agent = Agent(
            node, self.dispatcher, drivers, self.clock, self.ingress, cfg.heartbeat_ttl
        )
        if isinstance(self.ingress, Ingress):  # a process of its own reports its traffic itself
            self.reporter = TrafficReporter(
                self.ingress, lambda: self.link.managers, self._token, verify=self._verify
            )
            self.reporter.start()
        self.lease_watch = LeaseWatch(
            self.agent,
            lambda: self.dispatcher.renewed_at,
            cfg.heartbeat_ttl,
            self.clock,
            self._fenced,
            self._lost,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self.lease_watch.run())]

    async def _token(self) -> str:
        return self.link.token

    async def _serve_api(self) -> str | None:
        """Serve the node's API on ``--api``: its tasks' logs (to the managers) and
        ``/metrics``; its URL."""
        cfg = self.config
        if cfg.api is None or self._logs_token is None:
            return None
        self.http = HttpServer(cfg.api, "--api", tls=self._api_tls)
        routes = node_routes(
            cfg.node_name, self._expected_logs_token, self._logs, self._follow_logs
        )
        scrape = build_metrics(None, self.ingress)

        async def metrics() -> bytes:
            if isinstance(self.ingress, RemoteIngress):
                await self.ingress.refresh()
            return scrape()

        await self.http.start(node_app(routes, metrics))
        host, port = self.http.address
        scheme = "https" if self._api_tls is not None else "http"
        return f"{scheme}://{cfg.advertise if host in ('0.0.0.0', '::') else host}:{port}"

    async def _expected_logs_token(self) -> str | None:
        return self._logs_token

    async def _logs(self, task: Task, tail: int | None, since: str | None) -> list[LogLine]:
        assert self.agent is not None
        return await self.agent.logs(task, tail, since)

    async def _follow_logs(
        self, task: Task, tail: int | None, since: str | None
    ) -> AsyncIterator[list[LogLine]]:
        assert self.agent is not None
        async for batch in self.agent.follow(task, tail, since):
            yield batch

    async def _join(self) -> None:
        """The node's token: kept from an earlier join, else got with the join token."""
        cfg = self.config
        path = cfg.data_dir / NODE_TOKEN_FILE
        with contextlib.suppress(OSError):
            self._logs_token = (cfg.data_dir / LOGS_TOKEN_FILE).read_text().strip() or None
        if cfg.token.startswith(NODE_TOKEN_PREFIX):
            owner = cfg.token[len(NODE_TOKEN_PREFIX) :].rpartition(".")[0]
            if owner != cfg.node_name:
                raise ValidationError(
                    f"this is node {owner}'s token: give --node-name {owner}, or a join token",
                    "--token",
                )
            self.link.token = cfg.token
            return
        with contextlib.suppress(OSError):
            saved = path.read_text().strip()
            if saved.startswith(f"{NODE_TOKEN_PREFIX}{cfg.node_name}."):
                self.link.token = saved
                return
        try:
            answer = await self.link.call(
                "POST", "/v1/worker/join", {"node": cfg.node_name}, token=cfg.token
            )
        except AuthError as exc:
            raise AuthError(f"cannot join: {exc.message}") from None
        self.link.token = answer["nodeToken"]
        self._logs_token = answer.get("logsToken")
        _write_secret(path, self.link.token)
        if self._logs_token:
            _write_secret(cfg.data_dir / LOGS_TOKEN_FILE, self._logs_token)
        log.info("joined as node %s", cfg.node_name)

    def request_stop(self) -> None:
        """The first call ends ``wait``; a second one cuts ``leave`` short."""
        if self._stopped.is_set():
            self._interrupted.set()
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def leave(self, say: Callable[[str], None]) -> Outcome | None:
        """Drain the node before it stops (``agent.leaving``), up to ``drain_timeout``; None
        when it does not drain (a timeout of 0, an agent not running)."""
        if self.config.drain_timeout <= 0 or self.agent is None or not self._running:
            return None
        leaving = Leaving(self.agent, self.clock, say, self._interrupted)
        return await leaving.run(self.config.drain_timeout)

    async def stop(self) -> None:
        """Stop serving; the tasks keep running (a restarted worker adopts them)."""
        for task in [*self._tasks, *([self._starting] if self._starting else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.reporter is not None:
            await self.reporter.close()
        if self.http is not None:
            await self.http.stop()
        if self.agent is not None:
            with contextlib.suppress(WarrenError):
                await self.agent.stop()
            await close_runtimes(self.agent.drivers)
        if self.supervisor is not None:  # the ingress keeps serving: the next worker adopts it
            await self.supervisor.stop()
        if isinstance(self.ingress, Ingress):
            await self.ingress.close()
        await self.link.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ── assignments ──────────────────────────────────────────────────────────────────────────

    async def _follow(self) -> None:
        """Follow the assignment stream of one manager after another, for ever."""
        said = ""
        while True:
            try:
                await self._follow_once()
                problem = f"{self.link.url} ended the stream"
            except UnavailableError as exc:
                problem = exc.message
            except AuthError as exc:  # a removed node, a new cluster: say it, keep trying
                token = self.config.data_dir / NODE_TOKEN_FILE
                problem = f"{exc.message}; this node's token is in {token}"
            except WarrenError as exc:
                problem = exc.message
            except Exception as exc:  # a message we cannot read: never stop following
                log.exception("assignments: unexpected error")
                problem = f"{type(exc).__name__}: {exc}"
            if problem != said:
                log.warning("assignments: %s; trying again", problem)
                said = problem
            await self.clock.sleep(RETRY)

    async def _follow_once(self) -> None:
        assert self.ingress is not None
        fresh: set[str] = set()
        routes: set[str] = set()
        synced = False
        url = self.link.url
        async for message in self.link.lines("/v1/worker/assignments"):
            if self.link.url != url:
                return  # calls moved to another manager: follow that one's stream
            kind = message.get("type")
            if kind == "task":
                task = Task.model_validate(message["task"])
                self._put(task, int(message["modRevision"]))
                fresh.add(task.id)
            elif kind == "gone":
                self._gone(message["id"])
            elif kind == "route" and isinstance(self.ingress, Ingress):
                # (An ingress of its own process follows the routing stream itself.)
                name, wire = message["service"], message["route"]
                await self.ingress.update({name: Route.from_wire(wire) if wire else None})
                routes.add(name)
            elif kind == "synced" and not synced:
                synced = True
                # The snapshot is the truth: what it did not mention is gone — unless we know
                # it at a later revision than the snapshot's (a manager whose cache lags).
                for tid in not_in_snapshot(self.dispatcher.tasks, fresh, message.get("revision")):
                    self._gone(tid)
                if isinstance(self.ingress, Ingress):
                    stale = set(self.ingress.routes) - routes
                    await self.ingress.update(dict.fromkeys(stale))
                fencing = self.lease_watch is not None and self.lease_watch.fencing
                # Stopping: registering again would end the node's own drain (``leave``).
                stopping = self._stopped.is_set()
                if not self._running and self._starting is None and not fencing and not stopping:
                    self._starting = asyncio.get_running_loop().create_task(self._start_agent())
            if self._reconnect:
                self._reconnect = False
                return  # fenced: start again from a fresh snapshot

    def _put(self, task: Task, mod_revision: int) -> None:
        old = self.dispatcher.tasks.get(task.id)
        if old is not None and old[1] > mod_revision:
            return  # our own report already said more
        self.dispatcher.tasks[task.id] = (task, mod_revision)
        if self.agent is not None and (old is None or old[0] != task):
            self.agent.task_changed(old[0] if old else None, task)

    def _gone(self, task_id: str) -> None:
        old = self.dispatcher.tasks.pop(task_id, None)
        if old is not None and self.agent is not None:
            self.agent.task_changed(old[0], None)

    async def _start_agent(self) -> None:
        assert self.agent is not None
        try:
            await self.agent.start(lambda: [t for t, _ in self.dispatcher.tasks.values()])
            self._running = True
            self.connected.set()
            log.info("node %s: running %d task(s)", self.agent.name, len(self.agent.supervisors))
        except WarrenError as exc:
            log.warning("node %s: cannot start: %s", self.config.node_name, exc)
            with contextlib.suppress(WarrenError):
                await self.agent.stop()
            self._reconnect = True
        finally:
            self._starting = None

    def _lost(self) -> None:
        self._running = False
        self.connected.clear()

    async def _fenced(self) -> None:
        """The lease watch stopped every task: start again from a fresh snapshot."""
        self._reconnect = True


def not_in_snapshot(
    known: dict[str, tuple[Task, int]], snapshot: set[str], revision: int | None
) -> list[str]:
    """The tasks a manager's snapshot (at store ``revision``) shows gone: those it did not
    mention, except what we know at a later revision — the manager's cache lags (it has just
    taken over, or its watch has just resumed), and dropping them would stop healthy tasks."""
    return [
        tid
        for tid, (_, mod_revision) in known.items()
        if tid not in snapshot and (not revision or mod_revision <= revision)
    ]


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
