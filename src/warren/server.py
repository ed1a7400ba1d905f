"""The composition root: builds the store, the control plane, the embedded agent, the ingress and
the API of one ``warren server``, and starts and stops them in order.

Start-up fails early with one clear message (a certificate that cannot load, data dir in use by
another server, a port taken) before anything is half-started; shutdown leaves the tasks
running — a restarted server re-adopts them — unless the server drains its node first
(``leave``, ``agent.leaving``). The ingress runs in this process (``ingress="embedded"``), or as
a process of its own that outlives this one (``"process"``, the command line's default:
``warren ingress``, supervised here, ``ingress.supervising``): shutdown leaves it serving, and a
restarted server adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import secrets
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from .agent import Agent, FakeDriver, LeaseWatch, LogRotation, StoreDispatcher
from .agent.leaving import Leaving, Outcome
from .agent.runtimes import close_runtimes, local_runtimes
from .api import ApiContext, create_app
from .api.events import PING, EventStreams
from .api.metrics import build_metrics
from .api.serving import HttpServer, api_tls, parse_address
from .api.workers import TrafficBatch
from .client import Client, verifying
from .clocks import SystemClock
from .control.assigning import AssignmentFeed, RouteBroadcast
from .control.leading import DEFAULT_TTL, Election
from .control.plane import ControlPlane
from .control.roster import Roster
from .control.traffic import ClusterTraffic, ReportedTraffic
from .domain.deployments import DeploymentStatus
from .domain.errors import UnavailableError, WarrenError
from .domain.logs import LogLine
from .domain.nodes import Node
from .domain.services import Service
from .domain.specs import ServiceSpec
from .domain.tasks import Task
from .ingress import Ingress, Limits
from .ingress.supervising import (
    IngressSettings,
    IngressSupervisor,
    RemoteIngress,
    ingress_workers,
)
from .paths import token_path
from .peers import NodeLogs
from .planning.notifications import server_receiver
from .plugins import load_strategies
from .ports import Clock, StateStore
from .reporting import TrafficReporter
from .store import MemoryStore, open_store
from .store.cluster import ClusterStore
from .store.fencing import FencedStore
from .tokens import logs_token, node_token

__all__ = [
    "DATA_PLANES",
    "INGRESS_MODES",
    "EmbeddedServer",
    "LocalManager",
    "Server",
    "ServerConfig",
    "lock_data_dir",
    "node_record",
    "parse_address",
    "start_ingress",
]

log = logging.getLogger("warren.server")
T = TypeVar("T")

LOCAL_REPORTS = 0.1
"""Seconds between the traffic reports of the ingress process to the server that supervises
it: what its analysis judges (``control.traffic.ReportedTraffic``)."""
DATA_PLANES = ("builtin", "haproxy")
"""What proxies the traffic: Warren's own ingress, or an HAProxy it drives (``warren.haproxy``)."""
INGRESS_MODES = ("process", "embedded")
"""Where the ingress runs: a process of its own (``warren ingress``, which outlives the server
or worker that supervises it), or in the server's or worker's own event loop."""


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def lock_data_dir(data: Path) -> int:
    """Create ``data`` (0700) and hold its lock for this process's life: one server or worker
    per data dir. Returns the lock's fd."""
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(data / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UnavailableError(f"cannot use data dir {data}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UnavailableError(
            f"another warren process is using {data}; stop it or pick another --data-dir"
        ) from None
    return fd


async def start_ingress(host: str, http_port: int | None, limits: Limits) -> Ingress:
    ingress = Ingress(host=host, shared_port=http_port, limits=limits)
    try:
        await ingress.start()
    except OSError as exc:
        raise UnavailableError(
            f"cannot listen on {host}:{http_port} (--http-port): {exc.strerror or exc}"
        ) from None
    return ingress


def node_record(
    name: str,
    drivers: tuple[str, ...],
    clock: Clock,
    address: str = "127.0.0.1",
    cpus: float | None = None,
    memory: int | None = None,
) -> Node:
    """The node an agent registers: by default, this machine's CPUs and memory."""
    now = clock.now()
    return Node(
        name=name,
        address=address,
        cpus=cpus if cpus is not None else os.cpu_count() or 1,
        memory=memory if memory is not None else _memory_bytes(),
        drivers=drivers,
        registered_at=now,
        updated_at=now,
    )


@dataclass
class ServerConfig:
    data_dir: Path
    api: str = "127.0.0.1:7070"
    ingress_host: str = "127.0.0.1"
    http_port: int | None = 8000
    """The shared ingress port (services routed by host); 0 picks a free one, None disables."""
    ingress_limits: Limits = field(default_factory=Limits)
    """What the ingress accepts from a client, and how long it waits on one."""
    store: str = "sqlite"
    node_name: str = field(default_factory=socket.gethostname)
    worker: bool = True
    advertise: str = "127.0.0.1"
    """This node's address: its tasks listen on it, and other nodes' ingresses reach them."""
    docker_network: str | None = None
    """The engine network containers join; None: the engine's default."""
    simulate_nodes: int = 0
    """Extra fake-driver nodes, for benchmarks and tests."""
    heartbeat_ttl: float = 10.0
    """The node's lease: the leader replaces this node's tasks this long after its heartbeats
    stop; with a shared store, a manager cut off from it that long stops them itself."""
    leader_ttl: float = DEFAULT_TTL
    """With a shared store (etcd): how long a crashed leader's lease outlives it."""
    ingress: str = "embedded"
    """One of INGRESS_MODES. ``warren server`` runs it as a "process"; a server embedded in a
    Python program keeps it in its own thread's loop."""
    ingress_workers: int | None = None
    data_plane: str = "builtin"
    """``haproxy``: the ingress process drives an HAProxy (one per node; it uses every core)."""
    """With ``ingress="process"``: how many ingress processes serve the ports (SO_REUSEPORT);
    None: one per core."""
    drain_timeout: float = 0.0
    """Stopping (``leave``), a server that runs tasks drains its node first: how long its
    tasks may take to move to other nodes before they are stopped anyway; 0: it leaves at
    once, its tasks left running for a restarted server to adopt. ``warren server`` drains
    (``--drain-timeout``, 60 s)."""
    event_ping: float = PING
    """Seconds between keep-alive pings on a quiet event stream (``GET /v1/events/stream``)."""
    notify: tuple[str, ...] = ()
    """URLs told of every deployment event of every service (JSON; ``control.notifying``)."""
    log_rotation: LogRotation = field(default_factory=LogRotation)
    """How much of each process task's output is kept."""
    api_tls_cert: str | None = None
    """The API over HTTPS: its certificate chain (PEM); with ``api_tls_key``."""
    api_tls_key: str | None = None
    manager_ca: str | None = None
    """The CA bundle that verifies the other managers' APIs served over https (their logs,
    their traffic reports); None: the usual public CAs. The ingress process this server
    supervises is given it too, and this server's own certificate."""
    etcd_ca: str | None = None
    """An ``etcds://`` store: the CA bundle (PEM) that verifies etcd's members; None: the
    system's CAs."""
    etcd_cert: str | None = None
    """An ``etcds://`` store: the certificate chain (PEM) this manager presents to etcd (its
    ``--client-cert-auth``); with ``etcd_key``."""
    etcd_key: str | None = None


class _PlaneView:
    """The API's read-only view of the control plane's caches."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    def services(self) -> list[Service]:
        return self._plane.services.values()

    def tasks_by_service(self) -> Mapping[str, Iterable[Task]]:
        return {name: tasks.values() for name, tasks in self._plane.index.by_service.items()}


class Server:
    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.token = ""
        self.store: StateStore | None = None
        self.cluster: ClusterStore | None = None
        self.plane: ControlPlane | None = None
        self.election: Election | None = None
        self.roster: Roster | None = None
        self.ingress: Ingress | RemoteIngress | None = None
        self.supervisor: IngressSupervisor | None = None
        self.own_traffic: ReportedTraffic | None = None
        """What the ingress process reports of its traffic (the ingress is a process)."""
        self.reporter: TrafficReporter | None = None
        self.node_logs: NodeLogs | None = None
        self._verify: ssl.SSLContext | bool = True
        """How this server verifies the other managers (``--manager-ca``)."""
        self.event_streams = EventStreams()
        self.agents: dict[str, Agent] = {}
        self.feed: AssignmentFeed | None = None
        self._watches: list[asyncio.Task[None]] = []
        self._app: Any = None
        """The API app, once built (a rotated admin token goes into its state)."""
        """The agents' lease watches (shared store only), and their restarts after a fence."""
        self.http: HttpServer | None = None
        self._lock_fd: int | None = None
        self._stopped = asyncio.Event()
        self._interrupted = asyncio.Event()
        """A second stop request: a drain under way stops at once."""

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        # First: a file that cannot load is said before anything starts.
        tls = api_tls(cfg.api_tls_cert, cfg.api_tls_key)
        self._verify = verifying(cfg.manager_ca)
        self.node_logs = NodeLogs(verify=self._verify)
        load_strategies()  # before any spec is read: each names its strategy
        self._prepare_data_dir()
        self.http = HttpServer(cfg.api, tls=tls)
        self.store = open_store(
            cfg.store,
            cfg.data_dir,
            self.clock,
            etcd_ca=cfg.etcd_ca,
            etcd_cert=cfg.etcd_cert,
            etcd_key=cfg.etcd_key,
        )
        self.cluster = ClusterStore(self.store, self.clock)
        if cfg.ingress == "process":
            # Before the API serves: the server is not up before its ingress is. (The API's
            # socket is bound already: the ingress's first call waits in its backlog.)
            workers = ingress_workers(cfg.data_plane, cfg.ingress_workers)
            self.ingress = RemoteIngress(cfg.data_dir / "ingress", workers)
            await self._supervise_ingress(workers)
        else:
            self.ingress = await start_ingress(cfg.ingress_host, cfg.http_port, cfg.ingress_limits)
        # A store only this process opens has one manager, which leads; on a shared one (etcd)
        # the managers elect a leader, whose controllers write through a fenced store.
        shared = not isinstance(self.store, MemoryStore)
        if shared:
            # One admin token for the cluster: the first manager's, which the others take
            # (and keep in their data dir), so the CLI's token works with every manager.
            cluster_token = await self.cluster.admin_token(self.token)
            if cluster_token != self.token:
                log.info("using the cluster's admin token (%s)", token_path(cfg.data_dir))
                self.token = cluster_token
                self._write_token()
        fenced = FencedStore(self.store) if shared else None
        writer = ClusterStore(fenced, self.clock) if fenced else self.cluster
        routes = RouteBroadcast(self.ingress)
        # The analysis judges the traffic of every node's ingress, this one's and the rest.
        local = self.ingress if isinstance(self.ingress, Ingress) else ReportedTraffic()
        self.own_traffic = local if isinstance(local, ReportedTraffic) else None
        self.traffic = ClusterTraffic(local)
        receivers = [server_receiver(url) for url in cfg.notify]
        self.plane = ControlPlane(writer, self.clock, routes, self.traffic, receivers)
        self.plane.tasks.on_change(self._dispatch)
        feed = self.feed = AssignmentFeed(self.plane.tasks, routes)
        await self.plane.start(lead=not shared)
        if fenced is not None:
            self.election = Election(
                self.store,
                fenced,
                cfg.node_name,
                self.clock,
                self.plane.lead,
                self.plane.follow,
                cfg.leader_ttl,
                api=self.reachable_api_url,
            )
            self.election.start()
            self.roster = Roster(self.store, cfg.node_name, self.reachable_api_url, self.clock)
            await self.roster.start()
            self.reporter = TrafficReporter(
                local, self._report_to, self._own_token, verify=self._verify
            )
            self.reporter.start()
        for agent in self._build_agents():
            self.agents[agent.name] = agent
            await agent.start(functools.partial(self._assigned, agent.name))
            if shared:
                self._watch_lease(agent)
        app = create_app(
            ApiContext(
                cluster=self.cluster,
                token=self.token,
                view=_PlaneView(self.plane),
                logs=self._logs,
                follow=self._follow,
                metrics=self._metrics,
                info=self._info,
                assignments=feed.stream,
                routes=feed.routes_stream,
                traffic=self._take_traffic,
                node=cfg.node_name,
                logs_token=self._own_logs_token if cfg.worker else None,
                event_streams=self.event_streams,
                event_ping=cfg.event_ping,
                reserved_ports=self._reserved_ports(),
                token_changed=self._adopt_token,
            )
        )
        self._app = app
        if shared:
            loop = asyncio.get_running_loop()
            self._watches.append(loop.create_task(self._follow_admin_token()))
        self._scrape = build_metrics(self.plane, self.ingress)
        await self.http.start(app)
        log.info("warren %s: API on %s, data in %s", __version__, self.api_url, cfg.data_dir)

    async def _supervise_ingress(self, workers: int) -> None:
        """Adopt the ingress workers that still serve from an earlier run, or start them: they
        follow this server's routing stream, and report their traffic here."""
        cfg = self.config
        settings = IngressSettings(
            (self.local_api_url,),
            cfg.ingress_host,
            cfg.http_port,
            report_every=LOCAL_REPORTS,
            limits=cfg.ingress_limits,
            manager_ca=cfg.manager_ca,
            # It reaches this server on the loopback address, which the certificate need not
            # name: it trusts this server's own certificate, whatever its names.
            manager_cert=cfg.api_tls_cert,
            data_plane=cfg.data_plane,
        )
        token = await self._own_token()
        self.supervisor = IngressSupervisor(cfg.data_dir / "ingress", settings, token, workers)
        await self.supervisor.start()

    def _prepare_data_dir(self) -> None:
        data = self.config.data_dir
        self._lock_fd = lock_data_dir(data)
        path = token_path(data)
        if path.exists():
            self.token = path.read_text().strip()
        if not self.token:
            self.token = secrets.token_urlsafe(32)
            self._write_token()
        os.chmod(path, 0o600)

    def _adopt_token(self, token: str) -> None:
        """A new admin token (rotated here or on another manager): the API takes it, and the
        data dir keeps it for the CLI and the next start."""
        if token == self.token:
            return
        self.token = token
        self._write_token()
        if self._app is not None:
            self._app.state.token = token.encode()
        log.info("the admin token was rotated: %s rewritten", token_path(self.config.data_dir))

    async def _follow_admin_token(self) -> None:
        """With several managers the admin token is the cluster's, kept in the store: one
        rotated on another manager replaces this one's."""
        assert self.cluster is not None
        while not self._stopped.is_set():
            try:
                async for token in self.cluster.admin_tokens():
                    self._adopt_token(token)
                return  # the store is closing
            except WarrenError as exc:
                log.debug("following the admin token: %s", exc)
                await self.clock.sleep(1.0)

    def _write_token(self) -> None:
        fd = os.open(token_path(self.config.data_dir), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")

    def _build_agents(self) -> list[Agent]:
        assert self.cluster is not None
        cfg = self.config
        agents = []
        if cfg.worker:
            drivers = local_runtimes(
                cfg.data_dir, cfg.node_name, self.clock, cfg.advertise, cfg.docker_network,
                cfg.log_rotation,
            )  # fmt: skip
            node = node_record(cfg.node_name, tuple(drivers), self.clock, cfg.advertise)
            node = node.model_copy(update={"api": self.reachable_api_url})
            agents.append(
                Agent(
                    node,
                    StoreDispatcher(self.cluster),
                    drivers,
                    self.clock,
                    self.ingress,
                    cfg.heartbeat_ttl,
                )
            )
        for i in range(1, cfg.simulate_nodes + 1):
            fake = FakeDriver(self.clock)
            node = node_record(f"sim-{i}", ("fake",), self.clock, cpus=64, memory=256 * 1024**3)
            agents.append(
                Agent(
                    node,
                    StoreDispatcher(self.cluster),
                    {"fake": (fake, fake)},
                    self.clock,
                    None,
                    cfg.heartbeat_ttl,
                )
            )
        return agents

    def _watch_lease(self, agent: Agent) -> None:
        """On a shared store, a manager cut off from it for its node's lease is declared down
        by the leader, which starts its tasks elsewhere: like a worker, it stops them, and
        starts again once the store answers (reporting them stopped)."""
        dispatcher = agent.dispatcher
        assert isinstance(dispatcher, StoreDispatcher)

        async def fenced() -> None:
            self._watches.append(asyncio.get_running_loop().create_task(restart()))

        async def restart() -> None:
            delay = 0.5
            # Stopping: registering again would end the node's own drain (``leave``).
            while not self._stopped.is_set():
                try:
                    await agent.start(functools.partial(self._assigned, agent.name))
                    log.info("node %s: the store answers again; agent started", agent.name)
                    return
                except WarrenError as exc:
                    log.debug("node %s: cannot start yet: %s", agent.name, exc)
                    with contextlib.suppress(WarrenError):
                        await agent.stop()
                await self.clock.sleep(delay)
                delay = min(delay * 2, 5.0)

        watch = LeaseWatch(
            agent, lambda: dispatcher.renewed_at, self.config.heartbeat_ttl, self.clock, fenced
        )
        self._watches.append(asyncio.get_running_loop().create_task(watch.run()))

    # ── wiring ───────────────────────────────────────────────────────────────────────────────

    def _assigned(self, node: str) -> list[Task]:
        assert self.plane is not None
        return [t for t in self.plane.tasks.values() if t.node == node]

    def _dispatch(self, key: str, old: Task | None, new: Task | None) -> None:
        for node in {t.node for t in (old, new) if t is not None and t.node}:
            agent = self.agents.get(node)
            if agent is not None:
                agent.task_changed(old, new)

    async def _logs(self, task: Task, tail: int | None, since: str | None) -> list[LogLine]:
        """A task's logs: from this server's agent, or from the node that runs it."""
        agent = self.agents.get(task.node or "")
        if agent is not None:
            return await agent.logs(task, tail, since)
        node, token = await self._peer(task)
        assert self.node_logs is not None
        return await self.node_logs.lines(node, task, token, tail, since)

    async def _follow(
        self, task: Task, tail: int | None, since: str | None
    ) -> AsyncIterator[list[LogLine]]:
        agent = self.agents.get(task.node or "")
        if agent is not None:
            async for batch in agent.follow(task, tail, since):
                yield batch
            return
        node, token = await self._peer(task)
        assert self.node_logs is not None
        async for batch in self.node_logs.follow(node, task, token, tail, since):
            yield batch

    async def _peer(self, task: Task) -> tuple[Node, str]:
        """The node that runs ``task``, and the token that reads its logs."""
        assert self.cluster is not None
        if not task.node:
            raise UnavailableError(f"task {task.id} is not on a node")
        node = await self.cluster.get_node(task.node)
        return node, logs_token(await self.cluster.cluster_secret(), node.name)

    async def _own_logs_token(self) -> str | None:
        """The token other managers read this server's tasks' logs with."""
        assert self.cluster is not None
        return logs_token(await self.cluster.cluster_secret(), self.config.node_name)

    def _report_to(self) -> list[str]:
        """Where this manager sends its ingress's traffic: every other manager (whichever of
        them leads next judges with it)."""
        return list(self.roster.others.values()) if self.roster is not None else []

    async def _own_token(self) -> str:
        assert self.cluster is not None
        name = self.config.node_name
        return node_token(
            await self.cluster.cluster_secret(), name, await self.cluster.node_epoch(name)
        )

    def _take_traffic(self, node: str, worker: int, batch: TrafficBatch) -> str:
        # Kept by every manager, the leader or not: whoever leads next judges with it.
        assert self.plane is not None
        why = self.plane.unknown_revision(batch.service, batch.revision)
        if why:
            return why
        if self.own_traffic is not None and node == self.config.node_name:
            # Our ingress's (one of its workers).
            self.own_traffic.add(batch.service, batch.revision, batch.samples, worker)
        else:
            self.traffic.add(node, batch.service, batch.revision, batch.samples, worker)
        return ""

    async def _metrics(self) -> bytes:
        if isinstance(self.ingress, RemoteIngress):
            await self.ingress.refresh()
        return self._scrape()

    async def _info(self) -> dict[str, Any]:
        ingress = self.ingress
        if isinstance(ingress, RemoteIngress):
            await ingress.refresh()
        leading: dict[str, Any] = (
            self.election.info()
            if self.election
            else {
                "leader": True,
                "leaderName": self.config.node_name,
                "leaderApi": self.reachable_api_url,
            }
        )
        managers = {self.config.node_name: self.reachable_api_url}
        managers.update(self.roster.others if self.roster else {})
        return {
            "node": self.config.node_name,
            "dataDir": str(self.config.data_dir),
            "store": self.config.store,
            "httpPort": ingress.shared_port if ingress else None,
            "ingressHost": self.config.ingress_host,
            "ingress": self.config.ingress,
            "ingressPid": self.supervisor.pid if self.supervisor else None,
            "ingressPids": list(self.supervisor.pids) if self.supervisor else [],
            "ingressProblems": {
                str(k): v for k, v in (ingress.problems if ingress else {}).items()
            },
            **leading,
            "managers": [
                {"name": name, "api": api, "leader": name == leading["leaderName"]}
                for name, api in sorted(managers.items())
            ],
        }

    # ── run and stop ─────────────────────────────────────────────────────────────────────────

    @property
    def api_address(self) -> tuple[str, int]:
        return self.http.address if self.http else ("", 0)

    def _reserved_ports(self) -> dict[int, str]:
        """The ports this server listens on, which no service may publish."""
        reserved = {self.api_address[1]: "Warren's API (--api)"}
        if self.config.http_port:
            reserved[self.config.http_port] = "Warren's shared HTTP port (--http-port)"
        return reserved

    @property
    def api_url(self) -> str:
        return self.http.url if self.http else "http://:0"

    @property
    def local_api_url(self) -> str:
        """The API's URL as a process of this machine reaches it."""
        host, port = self.api_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{self._scheme}://{host}:{port}"

    @property
    def reachable_api_url(self) -> str:
        """The API's URL as other nodes reach it: an API on every interface is reached on
        this node's address."""
        host, port = self.api_address
        if host in ("0.0.0.0", "::", ""):
            host = self.config.advertise
        return f"{self._scheme}://{host}:{port}"

    @property
    def _scheme(self) -> str:
        return self.http.scheme if self.http else "http"

    def request_stop(self) -> None:
        """The first call ends ``wait``; a second one cuts ``leave`` short."""
        if self._stopped.is_set():
            self._interrupted.set()
        self._stopped.set()

    async def leave(self, say: Callable[[str], None]) -> Outcome | None:
        """Drain this server's own node before it stops (``agent.leaving``), up to
        ``drain_timeout``, everything else still running (its controllers may be the ones
        that move the tasks). None when it does not drain (no tasks run here, a timeout of 0)."""
        agent = self.agents.get(self.config.node_name) if self.config.worker else None
        if self.config.drain_timeout <= 0 or agent is None or not agent.running:
            return None
        leaving = Leaving(agent, self.clock, say, self._interrupted)
        return await leaving.run(self.config.drain_timeout)

    async def wait(self) -> None:
        assert self.http is not None and self.http.task is not None
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait({stopped, self.http.task}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()

    async def stop(self) -> None:
        """Stop serving; running tasks are left running for the next server to adopt."""
        if self.election is not None:  # hand over first: another manager leads at once
            await self.election.stop()
        if self.supervisor is not None:  # the ingress keeps serving: the next server adopts it
            await self.supervisor.stop()
        if self.reporter is not None:
            await self.reporter.close()
        if self.roster is not None:
            await self.roster.stop()
        if self.node_logs is not None:
            await self.node_logs.close()
        if self.feed is not None:
            self.feed.close()  # else the HTTP server waits for the workers' streams to end
        self.event_streams.close()  # and for the event streams
        if self.http is not None:
            await self.http.stop()
        for watch in self._watches:
            watch.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        self._watches.clear()
        for agent in self.agents.values():
            with contextlib.suppress(WarrenError):
                await agent.stop()
        for agent in self.agents.values():
            await close_runtimes(agent.drivers)
        self.agents.clear()
        if self.plane is not None:
            await self.plane.stop()
        if isinstance(self.ingress, Ingress):
            await self.ingress.close()
        if self.store is not None:
            await self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class EmbeddedServer:
    """A whole Warren server in a background thread of this process — for Python programs and
    tests that want Warren without a second process::

        with EmbeddedServer(ServerConfig(data_dir=Path("/tmp/w"), api="127.0.0.1:0")) as embedded:
            deployer = Deployer(embedded.manager)

    ``manager`` implements ``warren.types.DeploymentManager`` on the store directly (no HTTP);
    ``client()`` gives an HTTP client of the same server."""

    def __init__(self, config: ServerConfig, start_timeout: float = 30.0) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.manager = LocalManager(self)

    def __enter__(self) -> EmbeddedServer:
        self._thread = threading.Thread(target=self._main, name="warren-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise UnavailableError("the embedded server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self.server is not None:
            self._loop.call_soon_threadsafe(self.server.request_stop)
        if self._thread is not None:
            self._thread.join(30)

    def _main(self) -> None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            self._loop = runner.get_loop()
            try:
                runner.run(self._serve())
            except BaseException as exc:  # reported to the thread that waits in __enter__
                self._error = exc
                self._ready.set()

    async def _serve(self) -> None:
        self.server = Server(self.config)
        await self.server.start()
        self._ready.set()
        try:
            await self.server.wait()
        finally:
            await self.server.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def cluster(self) -> ClusterStore:
        assert self.server is not None and self.server.cluster is not None
        return self.server.cluster

    def client(self) -> Client:
        assert self.server is not None
        return Client(self.server.api_url, token=self.server.token)


class LocalManager:
    """``warren.types.DeploymentManager`` on an embedded server's store, in process."""

    def __init__(self, embedded: EmbeddedServer) -> None:
        self._embedded = embedded

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._embedded.call(coro)

    def get_service(self, service_id: str) -> Service:
        return self._call(self._embedded.cluster.get_service(service_id))[0]

    def list_services(self) -> list[Service]:
        return self._call(self._embedded.cluster.list_services())

    def create_service(self, service: ServiceSpec) -> Service:
        return self._call(self._embedded.cluster.create_service(service))

    def update_service(self, service: ServiceSpec) -> Service:
        update = self._embedded.cluster.update_service(service.name, lambda _old: service)
        return self._call(update)[0]

    def delete_service(self, service_id: str) -> None:
        self._call(self._embedded.cluster.delete_service(service_id))

    def list_tasks_by_service(self, service_id: str) -> list[Task]:
        return self._call(self._embedded.cluster.list_tasks(service_id))

    def update_task(self, task: Task) -> Task:
        return self._call(self._embedded.cluster.set_desired_state(task.id, task.desired_state))

    def deployment_status(self, service: str) -> DeploymentStatus:
        return self._call(self._embedded.cluster.deployment_status(service))

    def rollback_service(self, service: str, to_revision: int | None = None) -> tuple[Service, str]:
        svc, deployment, _ = self._call(
            self._embedded.cluster.rollback_service(service, to_revision)
        )
        return svc, deployment.id
