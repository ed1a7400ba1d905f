"""The ``warren`` command: ``server``, ``worker``, ``ingress``, ``service …``, ``deploy …``,
``node …``, ``cluster …``, ``apply``, ``events``, ``demo``.

``main`` is the console script: it turns every WarrenError and unexpected error into one line on
stderr and exit status 1, a usage error (a bad flag or value, or a store or driver chosen whose
extra is not installed) into one line and exit status 2 — never a traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from .. import __version__
from ..domain.errors import MissingExtraError, ValidationError, WarrenError
from ..ingress.limits import Limits
from ..paths import default_data_dir, token_path
from . import cluster, deploy, events, jobs, node, service, store
from .connect import connect, use
from .deploy import follow, follow_start
from .flags import DURATION, POSITIVE_DURATION, SIZE
from .output import DETACH, OVERRIDE, advise_on, console, err_console, fail, group

if TYPE_CHECKING:
    from ..agent.drivers.process import LogRotation
    from ..agent.leaving import Outcome
    from ..domain.specs import ServiceSpec
    from ..ingress.supervising import IngressSupervisor

__all__ = ["app", "main"]


app = group("Warren: a small container orchestrator for safe releases.", name="warren")
app.add_typer(service.app, name="service")
app.add_typer(deploy.app, name="deploy")
app.add_typer(node.app, name="node")
app.add_typer(cluster.app, name="cluster")
app.add_typer(store.app, name="store")


def _version(value: bool) -> None:
    if value:
        console.print(f"warren {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            metavar="",
            callback=_version,
            is_eager=True,
            help="Show version.",
        ),
    ] = False,
    addr: Annotated[
        str | None,
        typer.Option(
            "--addr",
            envvar="WARREN_ADDR",
            metavar="URL",
            help="The server's API (default http://127.0.0.1:7070).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="WARREN_TOKEN",
            metavar="TOKEN",
            show_envvar=True,
            help="Its token (default: the token file of $WARREN_DATA_DIR or the default data dir).",
        ),
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option(
            "--ca",
            envvar="WARREN_CA",
            metavar="FILE",
            show_envvar=True,
            help="An https server: the CA bundle (PEM) to verify its certificate with "
            "(default: the usual public CAs).",
        ),
    ] = None,
) -> None:
    use(addr, token, ca)


# Options of both `server` and `worker`.
NodeName = Annotated[
    str | None, typer.Option("--node-name", metavar="NAME", help="Default: the host's name.")
]
Advertise = Annotated[
    str,
    typer.Option(
        "--advertise",
        metavar="ADDR",
        help="This node's address, in a cluster: its tasks listen on it, "
        "and the other nodes' ingresses reach them there.",
    ),
]
ManagerCa = Annotated[
    str | None,
    typer.Option(
        "--manager-ca",
        metavar="FILE",
        help="Managers served over https (--api-tls-cert): the CA bundle (PEM) to verify "
        "them with (default: the usual public CAs).",
    ),
]
ApiTlsCert = Annotated[
    str | None,
    typer.Option(
        "--api-tls-cert",
        metavar="FILE",
        help="Serve the API over HTTPS with this certificate chain (PEM); with --api-tls-key.",
    ),
]
ApiTlsKey = Annotated[
    str | None,
    typer.Option("--api-tls-key", metavar="FILE", help="The key of --api-tls-cert (PEM)."),
]
HttpPort = Annotated[
    int,
    typer.Option(
        "--http-port", min=0, max=65535, metavar="PORT", help="Shared port, routed by host."
    ),
]
DockerNetwork = Annotated[
    str | None,
    typer.Option(
        "--docker-network",
        metavar="NAME",
        help="Engine network for containers (default: the engine's own). The engine is "
        "found from DOCKER_HOST, /var/run/docker.sock or /run/podman/podman.sock.",
    ),
]
HeartbeatTtl = Annotated[
    float,
    typer.Option(
        "--heartbeat-ttl",
        parser=DURATION,
        metavar="DUR",
        show_default="10s",
        help="The node's lease: the leader replaces its tasks this long after it goes silent; "
        "a worker (or a manager on etcd) cut off that long stops them itself.",
    ),
]
LogLevel = Annotated[
    str, typer.Option("--log-level", metavar="LEVEL", help="debug | info | warning | error.")
]
IngressMode = Annotated[
    str,
    typer.Option(
        "--ingress",
        metavar="MODE",
        help="process: `warren ingress`, a process of its own, started and supervised here; "
        "it outlives this one, so a restart drops no request. embedded: in this process.",
    ),
]


NodeDrainTimeout = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        parser=DURATION,
        metavar="DUR",
        show_default="60s",
        help="On SIGTERM or Ctrl-C, the node drains first: its tasks move to other nodes "
        "(each replacement ready before the old task stops), then it exits; after this long "
        "it stops the tasks that did not move (a second signal: at once). Tasks no other node "
        "can take keep running. 0: exit at once, tasks left running for a restart to adopt.",
    ),
]


IngressWorkers = Annotated[
    int | None,
    typer.Option(
        "--ingress-workers",
        min=1,
        max=4096,
        metavar="N",
        show_default="one per core",
        help="With --ingress process: how many ingress processes serve the ports, on "
        "SO_REUSEPORT sockets (the kernel spreads the connections among them).",
    ),
]


DataPlaneOption = Annotated[
    str,
    typer.Option(
        "--data-plane",
        metavar="PLANE",
        help="builtin: Warren's own ingress proxies the traffic. haproxy: the ingress drives "
        "an HAProxy (found on PATH) through its Runtime API instead; needs --ingress process.",
    ),
]


MIN_LOG_SIZE = 1024
"""The smallest ``--log-max-size``: a file holds a few lines at least."""


def _log_size(value: str | int) -> int:
    size = SIZE(value)
    if size < MIN_LOG_SIZE:
        raise typer.BadParameter(f"must be at least {MIN_LOG_SIZE} bytes, got {value!r}")
    return size


LogMaxSize = Annotated[
    int | None,
    typer.Option(
        "--log-max-size",
        parser=_log_size,
        metavar="SIZE",
        show_default="10MiB",
        help="A process task's log file is rotated at this size (10MiB, 512k, bytes).",
    ),
]
LogMaxFiles = Annotated[
    int | None,
    typer.Option(
        "--log-max-files",
        min=1,
        max=1000,
        metavar="N",
        show_default="3",
        help="Log files kept per process task, the newest included (1: cut to empty).",
    ),
]


def _log_rotation(max_size: int | None, max_files: int | None) -> LogRotation:
    """``--log-max-size``/``--log-max-files`` (the defaults: ``LogRotation``'s)."""
    from ..agent.drivers.process import LogRotation

    default = LogRotation()
    return LogRotation(max_size or default.max_size, max_files or default.max_files)


def _ingress_pids(supervisor: IngressSupervisor | None) -> str:
    """What the banner says of the ingress processes."""
    if supervisor is None:
        return ""
    pids = ", ".join(str(p) for p in supervisor.pids)
    if supervisor.settings.data_plane == "haproxy":
        return f"; HAProxy, driven by warren ingress (pid {pids})"
    return f"; warren ingress, {len(supervisor.pids)} worker(s), pid {pids}"


Notify = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        metavar="URL",
        envvar="WARREN_NOTIFY",
        help="POST every deployment event of every service here (JSON; repeat for several). "
        "$WARREN_NOTIFY: URLs separated by spaces or commas.",
    ),
]


def _notify_urls(values: list[str] | None) -> tuple[str, ...]:
    """The receivers of ``--notify`` (each may hold several URLs, as $WARREN_NOTIFY does),
    each an http(s) URL — or one line saying which is not."""
    from ..domain.base import parse_model
    from ..domain.errors import ValidationError
    from ..domain.specs import Notify

    urls = [u for value in values or () for u in value.replace(",", " ").split()]
    for url in urls:
        try:
            parse_model(Notify, {"url": url})
        except ValidationError as exc:
            raise typer.BadParameter(exc.reason, param_hint="--notify") from None
    return tuple(dict.fromkeys(urls))


def _data_plane(plane: str, ingress: str = "process", workers: int | None = None) -> str:
    from ..server import DATA_PLANES

    if plane not in DATA_PLANES:
        raise typer.BadParameter(f"expected {' or '.join(DATA_PLANES)}", param_hint="--data-plane")
    if plane == "haproxy" and ingress != "process":
        raise typer.BadParameter("haproxy needs --ingress process", param_hint="--data-plane")
    if plane == "haproxy" and workers not in (None, 1):
        raise typer.BadParameter(
            "does not apply to --data-plane haproxy: HAProxy runs a thread per core itself",
            param_hint="--ingress-workers",
        )
    return plane


def _ingress_mode(mode: str) -> str:
    from ..server import INGRESS_MODES

    if mode not in INGRESS_MODES:
        raise typer.BadParameter(f"expected {' or '.join(INGRESS_MODES)}", param_hint="--ingress")
    return mode


# The ingress's limits (``warren.ingress.Limits``, whose defaults they show), on both commands.
_LIMITS = Limits()
HeadTimeout = Annotated[
    float,
    typer.Option(
        "--ingress-head-timeout",
        parser=POSITIVE_DURATION,
        metavar="DUR",
        show_default=f"{_LIMITS.head_timeout:g}s",
        help="A request head (request line and headers) must arrive whole within this: "
        "408, then close. A connection that sends nothing is closed at it.",
    ),
]
IdleTimeout = Annotated[
    float,
    typer.Option(
        "--ingress-idle-timeout",
        parser=POSITIVE_DURATION,
        metavar="DUR",
        show_default=f"{_LIMITS.idle_timeout:g}s",
        help="A keep-alive client connection with no request in progress is closed after this.",
    ),
]
MaxRequestLine = Annotated[
    int,
    typer.Option(
        "--ingress-max-request-line",
        min=64,
        metavar="BYTES",
        help="Longest request line (method, target, version); longer: 414.",
    ),
]
MaxHeaderBytes = Annotated[
    int,
    typer.Option(
        "--ingress-max-header-bytes",
        min=64,
        metavar="BYTES",
        help="Largest request headers (each line 'Name: value' and its CRLF); larger: 431.",
    ),
]
MaxBody = Annotated[
    int | None,
    typer.Option(
        "--ingress-max-body",
        min=1,
        metavar="BYTES",
        show_default="no limit",
        help="Largest request body; larger: 413. Bodies are streamed to the task, never held.",
    ),
]
MaxHeaderFields = Annotated[
    int,
    typer.Option(
        "--ingress-max-header-fields",
        min=1,
        metavar="N",
        help="Most request header fields; more: 431.",
    ),
]


def _limits(
    head_timeout: float,
    idle_timeout: float,
    max_request_line: int,
    max_header_bytes: int,
    max_header_fields: int,
    max_body: int | None,
) -> Limits:
    """The ingress's limits from the flags that every command running an ingress takes."""
    return Limits(
        head_timeout=head_timeout,
        idle_timeout=idle_timeout,
        max_request_line=max_request_line,
        max_header_bytes=max_header_bytes,
        max_header_fields=max_header_fields,
        max_body=max_body,
    )


# Every flag of the long-running commands may come from the environment, named after it:
# --http-port from WARREN_HTTP_PORT, --api from WARREN_API … (a unit file or a container sets
# them; a flag given wins).
_FROM_ENV = {"auto_envvar_prefix": "WARREN", "show_default": True}


@app.command(context_settings=_FROM_ENV)
def server(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="State, logs and the admin token (default: $XDG_DATA_HOME/warren or "
            "~/.local/share/warren).",
        ),
    ] = None,
    api: Annotated[
        str, typer.Option("--api", metavar="ADDR:PORT", help="API address.")
    ] = "127.0.0.1:7070",
    api_tls_cert: ApiTlsCert = None,
    api_tls_key: ApiTlsKey = None,
    manager_ca: ManagerCa = None,
    ingress_host: Annotated[
        str, typer.Option("--ingress-host", metavar="ADDR", help="Address the ingress listens on.")
    ] = "127.0.0.1",
    http_port: HttpPort = 8000,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            metavar="STORE",
            help="sqlite | sqlite:///PATH | memory | etcd://HOST:PORT,HOST:PORT/PREFIX "
            "(several managers on one etcd elect a leader) | etcds://… (etcd over TLS).",
        ),
    ] = "sqlite",
    etcd_ca: Annotated[
        str | None,
        typer.Option(
            "--etcd-ca",
            metavar="FILE",
            help="etcds:// store: the CA bundle (PEM) that verifies etcd (default: the system's).",
        ),
    ] = None,
    etcd_cert: Annotated[
        str | None,
        typer.Option(
            "--etcd-cert",
            metavar="FILE",
            help="etcds:// store: the client certificate (PEM) shown to etcd; with --etcd-key.",
        ),
    ] = None,
    etcd_key: Annotated[
        str | None,
        typer.Option("--etcd-key", metavar="FILE", help="The key of --etcd-cert (PEM)."),
    ] = None,
    leader_ttl: Annotated[
        float,
        typer.Option(
            "--leader-ttl",
            parser=DURATION,
            metavar="DUR",
            show_default="2s",
            help="etcd store: the leader's lease; another manager takes over within it.",
        ),
    ] = 2.0,
    node_name: NodeName = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", metavar="", help="Run no tasks here.")
    ] = False,
    advertise: Advertise = "127.0.0.1",
    docker_network: DockerNetwork = None,
    heartbeat_ttl: HeartbeatTtl = 10.0,
    ingress: IngressMode = "process",
    ingress_workers: IngressWorkers = None,
    data_plane: DataPlaneOption = "builtin",
    drain_timeout: NodeDrainTimeout = 60.0,
    notify: Notify = None,
    ingress_head_timeout: HeadTimeout = _LIMITS.head_timeout,
    ingress_idle_timeout: IdleTimeout = _LIMITS.idle_timeout,
    ingress_max_request_line: MaxRequestLine = _LIMITS.max_request_line,
    ingress_max_header_bytes: MaxHeaderBytes = _LIMITS.max_header_bytes,
    ingress_max_header_fields: MaxHeaderFields = _LIMITS.max_header_fields,
    ingress_max_body: MaxBody = _LIMITS.max_body,
    log_max_size: LogMaxSize = None,
    log_max_files: LogMaxFiles = None,
    log_level: LogLevel = "info",
    simulate_nodes: Annotated[int, typer.Option("--simulate-nodes", hidden=True, min=0)] = 0,
) -> None:
    """Run a Warren server: store, control plane, ingress, API and (unless --no-worker) a
    worker, in one process."""
    import socket

    from ..server import Server, ServerConfig

    _logging(log_level)
    if bool(api_tls_cert) != bool(api_tls_key):
        raise ValidationError("give both --api-tls-cert and --api-tls-key, or neither")
    if bool(etcd_cert) != bool(etcd_key):
        raise ValidationError("give both --etcd-cert and --etcd-key, or neither")
    config = ServerConfig(
        data_dir=data_dir or default_data_dir(),
        api=api,
        api_tls_cert=api_tls_cert,
        api_tls_key=api_tls_key,
        manager_ca=manager_ca,
        ingress_host=ingress_host,
        http_port=http_port,
        ingress_limits=_limits(
            ingress_head_timeout,
            ingress_idle_timeout,
            ingress_max_request_line,
            ingress_max_header_bytes,
            ingress_max_header_fields,
            ingress_max_body,
        ),
        store=store,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        node_name=node_name or socket.gethostname(),
        worker=not no_worker,
        advertise=advertise,
        docker_network=docker_network,
        leader_ttl=leader_ttl,
        heartbeat_ttl=heartbeat_ttl,
        simulate_nodes=simulate_nodes,
        ingress=_ingress_mode(ingress),
        ingress_workers=ingress_workers,
        data_plane=_data_plane(data_plane, ingress, ingress_workers),
        drain_timeout=drain_timeout,
        notify=_notify_urls(notify),
        log_rotation=_log_rotation(log_max_size, log_max_files),
    )

    srv = Server(config)

    def banner() -> str:
        shared = srv.ingress.shared_port if srv.ingress else None
        pid = _ingress_pids(srv.supervisor)
        return (
            f"Warren {__version__} ready\n"
            f"  API      {srv.api_url}   (docs: {srv.api_url}/docs)\n"
            f"  token    {token_path(config.data_dir)}\n"
            f"  ingress  {config.ingress_host}:{shared} (by host), and each published port{pid}\n"
            f"  data     {config.data_dir}"
        )

    status = _serve(srv, banner, _goodbye("server", config.ingress), srv.leave)
    if status:
        raise typer.Exit(status)


class _Serving(Protocol):
    async def start(self) -> None: ...

    def request_stop(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...


Leave = Callable[[Callable[[str], None]], Awaitable["Outcome | None"]]
"""A node's drain on its way out: given how to say each step, what came of it (None: it did
not drain)."""


def _goodbye(what: str, ingress: str) -> Callable[[Outcome | None], str]:
    """What a server or worker says as it stops, after its drain (``outcome``) if any."""

    from ..agent.leaving import Outcome

    def goodbye(outcome: Outcome | None) -> str:
        kept = "ingress keeps" if ingress == "process" else ""
        if outcome is None or outcome in (Outcome.STAYED, Outcome.UNREACHED):
            kept = "tasks and ingress keep" if kept else "tasks keep"
            return f"stopping ({kept} running; a restarted {what} adopts them)"
        return f"stopping ({kept} running; a restarted {what} adopts it)" if kept else "stopping"

    return goodbye


def _say(line: str) -> None:
    err_console.print(line, markup=False, soft_wrap=True)


def _serve(
    process: _Serving,
    banner: Callable[[], str],
    goodbye: Callable[[Outcome | None], str],
    leave: Leave | None = None,
) -> int:
    """Start ``process`` in a uvloop, say ``banner()``, run until SIGINT/SIGTERM (or until it
    ends by itself); then ``leave`` (a node's drain: a second signal cuts it short), say
    ``goodbye`` and stop it. Returns the exit status."""
    import asyncio

    import uvloop

    async def run() -> int:
        await process.start()
        _tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, process.request_stop)
        console.print(banner(), highlight=False)
        outcome = None
        try:
            await process.wait()
            if leave is not None:
                outcome = await leave(_say)
        finally:
            console.print(goodbye(outcome))
            await process.stop()
        return outcome.exit_status if outcome is not None else 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


def _tune_gc() -> None:
    """A server holds ~100 objects per task; with 10,000 tasks a full collection of the default
    thresholds takes ~0.4 s, several times a minute under churn — pauses every API call and proxied
    request would feel. Fewer, larger young collections (measured: no full collection while
    10,000 tasks start) and start-up objects frozen out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


@app.command(context_settings=_FROM_ENV)
def worker(
    manager: Annotated[
        str,
        typer.Option(
            "--manager",
            metavar="URL[,URL]",
            help="The managers' API URLs, comma-separated (the next one is used "
            "when one stops answering).",
        ),
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="WARREN_JOIN_TOKEN",
            metavar="TOKEN",
            help="From `warren cluster join-token` (or $WARREN_JOIN_TOKEN).",
        ),
    ],
    manager_ca: ManagerCa = None,
    node_name: NodeName = None,
    advertise: Advertise = "127.0.0.1",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="The node's token, task records, logs (default: the server's data dir/worker).",
        ),
    ] = None,
    ingress_host: Annotated[
        str | None,
        typer.Option(
            "--ingress-host",
            metavar="ADDR",
            help="Address the ingress listens on (default: --advertise).",
        ),
    ] = None,
    http_port: HttpPort = 8000,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="ADDR:PORT",
            help="Where the managers read this node's tasks' logs, and Prometheus its "
            "/metrics (default: ADVERTISE:7071).",
        ),
    ] = None,
    api_tls_cert: ApiTlsCert = None,
    api_tls_key: ApiTlsKey = None,
    heartbeat_ttl: HeartbeatTtl = 10.0,
    docker_network: DockerNetwork = None,
    ingress: IngressMode = "process",
    ingress_workers: IngressWorkers = None,
    data_plane: DataPlaneOption = "builtin",
    drain_timeout: NodeDrainTimeout = 60.0,
    ingress_head_timeout: HeadTimeout = _LIMITS.head_timeout,
    ingress_idle_timeout: IdleTimeout = _LIMITS.idle_timeout,
    ingress_max_request_line: MaxRequestLine = _LIMITS.max_request_line,
    ingress_max_header_bytes: MaxHeaderBytes = _LIMITS.max_header_bytes,
    ingress_max_header_fields: MaxHeaderFields = _LIMITS.max_header_fields,
    ingress_max_body: MaxBody = _LIMITS.max_body,
    log_max_size: LogMaxSize = None,
    log_max_files: LogMaxFiles = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a worker: a node that runs tasks for managers elsewhere, with its own ingress."""
    import socket

    from ..worker import Worker, WorkerConfig

    _logging(log_level)
    name = node_name or socket.gethostname()
    config = WorkerConfig(
        managers=tuple(m.strip() for m in manager.split(",") if m.strip()),
        manager_ca=manager_ca,
        token=token.strip(),
        data_dir=data_dir or default_data_dir() / "worker",
        node_name=name,
        advertise=advertise,
        ingress_host=ingress_host or advertise,
        http_port=http_port,
        ingress_limits=_limits(
            ingress_head_timeout,
            ingress_idle_timeout,
            ingress_max_request_line,
            ingress_max_header_bytes,
            ingress_max_header_fields,
            ingress_max_body,
        ),
        heartbeat_ttl=heartbeat_ttl,
        api=api or f"{advertise}:7071",
        api_tls_cert=api_tls_cert,
        api_tls_key=api_tls_key,
        docker_network=docker_network,
        ingress=_ingress_mode(ingress),
        ingress_workers=ingress_workers,
        data_plane=_data_plane(data_plane, ingress, ingress_workers),
        drain_timeout=drain_timeout,
        log_rotation=_log_rotation(log_max_size, log_max_files),
    )

    wrk = Worker(config)

    def banner() -> str:
        shared = wrk.ingress.shared_port if wrk.ingress else None
        pid = _ingress_pids(wrk.supervisor)
        return (
            f"Warren {__version__} worker {name} joined\n"
            f"  managers {', '.join(wrk.link.managers)}\n"
            f"  address  {advertise}\n"
            f"  api      {wrk.http.url if wrk.http else '-'} (logs for the managers, /metrics)\n"
            f"  ingress  {config.ingress_host}:{shared} (by host), and each published port{pid}\n"
            f"  data     {config.data_dir}"
        )

    status = _serve(wrk, banner, _goodbye("worker", config.ingress), wrk.leave)
    if status:
        raise typer.Exit(status)


@app.command(context_settings=_FROM_ENV)
def ingress(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Its record, admin socket and token (default: the server's data dir/ingress).",
        ),
    ] = None,
    manager: Annotated[
        str | None,
        typer.Option(
            "--manager",
            metavar="URL[,URL]",
            help="The managers' API URLs: it follows their routing stream and reports its "
            "traffic to them (with --replace: default, the running ingress's).",
        ),
    ] = None,
    manager_ca: ManagerCa = None,
    manager_cert: Annotated[
        str | None,
        typer.Option(
            "--manager-cert",
            metavar="FILE",
            help="A manager's own certificate chain (PEM), trusted by that certificate alone, "
            "whatever names it has: what `warren server --api-tls-cert` gives its ingress, "
            "which reaches it on the loopback address.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="A join token (`warren cluster join-token`) or a node token; "
            "default: the one kept in the data dir.",
        ),
    ] = None,
    node_name: NodeName = None,
    ingress_host: Annotated[
        str, typer.Option("--ingress-host", metavar="ADDR", help="Address it listens on.")
    ] = "127.0.0.1",
    http_port: HttpPort = 8000,
    no_http_port: Annotated[
        bool, typer.Option("--no-http-port", metavar="", help="No shared port.")
    ] = False,
    stop: Annotated[
        bool,
        typer.Option(
            "--stop",
            metavar="",
            help="Stop the ingress running on the data dir: it finishes its requests in flight "
            "(up to its --drain-timeout), then exits. Nothing is started.",
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            metavar="",
            help="Take over from the ingress running on this data dir (an upgrade): its "
            "listening sockets pass to this one, and it exits once its requests finish.",
        ),
    ] = False,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            parser=DURATION,
            metavar="DUR",
            show_default="30s",
            help="Stopping or replaced: how long its requests in flight may take.",
        ),
    ] = 30.0,
    report_every: Annotated[
        float,
        typer.Option(
            "--report-every",
            parser=DURATION,
            metavar="DUR",
            show_default="500ms",
            help="How often it sends its traffic to the managers (for canary analysis).",
        ),
    ] = 0.5,
    ingress_head_timeout: HeadTimeout = _LIMITS.head_timeout,
    ingress_idle_timeout: IdleTimeout = _LIMITS.idle_timeout,
    ingress_max_request_line: MaxRequestLine = _LIMITS.max_request_line,
    ingress_max_header_bytes: MaxHeaderBytes = _LIMITS.max_header_bytes,
    ingress_max_header_fields: MaxHeaderFields = _LIMITS.max_header_fields,
    ingress_max_body: MaxBody = _LIMITS.max_body,
    data_plane: DataPlaneOption = "builtin",
    log_level: LogLevel = "info",
    worker: Annotated[
        int,
        typer.Option(
            "--worker",
            min=0,
            max=4095,
            metavar="N",
            help="Which of the node's ingress workers this is (several serve the same ports, "
            "on SO_REUSEPORT sockets): worker N keeps ingress-N.json and admin-N.sock in the "
            "data dir (worker 0: ingress.json, admin.sock).",
        ),
    ] = 0,
    ready_fd: Annotated[int | None, typer.Option("--ready-fd", hidden=True)] = None,
) -> None:
    """Run the ingress alone: the shared port and every published port, routed as the
    managers' routing stream says. `warren server` and `warren worker` run one by default."""
    import socket

    from ..ingress.supervising import IngressSettings, stop_running
    from ..ingress_process import IngressConfig, IngressProcess

    _logging(log_level)
    if stop:
        where = data_dir or default_data_dir() / "ingress"
        stopped = ", ".join(map(str, stop_running(where)))
        said = f"ingress stopped (pid {stopped})" if stopped else f"no ingress runs on {where}"
        console.print(said, soft_wrap=True)
        return
    settings = None
    if manager is not None:
        managers = tuple(m.strip() for m in manager.split(",") if m.strip())
        port = None if no_http_port else http_port
        limits = _limits(
            ingress_head_timeout,
            ingress_idle_timeout,
            ingress_max_request_line,
            ingress_max_header_bytes,
            ingress_max_header_fields,
            ingress_max_body,
        )
        settings = IngressSettings(
            managers,
            ingress_host,
            port,
            report_every,
            limits,
            manager_ca,
            manager_cert,
            _data_plane(data_plane),
        )
    config = IngressConfig(
        data_dir=data_dir or default_data_dir() / "ingress",
        settings=settings,
        token=(token or "").strip(),
        node_name=node_name or socket.gethostname(),
        replace=replace,
        drain_timeout=drain_timeout,
        ready_fd=ready_fd,
        worker=worker,
    )
    proc = IngressProcess(config)

    def banner() -> str:
        served = proc.settings
        shared = proc.ingress.shared_port if proc.ingress else None
        return (
            f"Warren {__version__} ingress (worker {worker}, pid {os.getpid()})\n"
            f"  managers {', '.join(served.managers) if served else '-'}\n"
            f"  ingress  {served.host if served else '-'}:{shared} (by host), "
            "and each published port\n"
            f"  data     {config.data_dir}"
        )

    _serve(proc, banner, lambda _: "stopping: finishing the requests in flight")


def _logging(log_level: str) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise WarrenError(f"--log-level: expected debug, info, warning or error, got {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))  # not a line per request


@app.command()
def apply(
    file: Annotated[
        Path, typer.Option("--file", "-f", metavar="FILE", help="Service YAML ('-' for stdin).")
    ],
    detach: DETACH = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only show, for each service, whether it would be created, is unchanged, or "
            "its changes field by field and what they lead to; change nothing.",
        ),
    ] = False,
    override: OVERRIDE = False,
) -> None:
    """Create or update every service described in a YAML file. Without --detach, then follows
    each: a new service until its tasks are ready, an update's deployment until it ends; exits
    0 only if all of them succeed."""
    from .documents import load_services

    specs = load_services(file)
    if dry_run:
        _show_apply(specs)
        return
    with connect() as client:
        applied = []
        for spec in specs:
            svc, result, deployment = client.apply_service(spec, override=override)
            console.print(f"service {svc.name} {result} (revision {svc.revision})")
            advise_on(svc.spec)
            applied.append((svc, result, deployment))
        if detach:
            return
        # All written first, then followed: the services start side by side, and one that
        # fails does not keep the others from being followed.
        failed = 0
        for svc, result, deployment in applied:
            try:
                if result == "created":
                    follow_start(client, svc)
                elif deployment is not None:
                    follow(client, svc.name, deployment)
            except WarrenError as exc:
                fail(exc.message)
                failed += 1
    if failed:
        raise typer.Exit(1)


def _show_apply(specs: list[ServiceSpec]) -> None:
    """``apply --dry-run``: each service's plan (the API's, as ``deploy plan -f`` asks it),
    shown as its changes; a service not found would be created."""
    from ..domain.errors import NotFoundError

    with connect() as client:
        for spec in specs:
            try:
                plan = client.plan(spec.name, spec.to_wire(), replace=True)
            except NotFoundError:
                console.print(f'+ service "{spec.name}" (created)', markup=False)
                continue
            deploy.print_changes(spec.name, plan)


app.command("events")(events.events)
app.command("run", no_args_is_help=True)(jobs.run)


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", metavar="", help="Leave the server running.")
    ] = False,
) -> None:
    """Start an embedded server in a temporary directory and show Warren at work."""
    from ..demo.scenario import run_demo

    run_demo(keep=keep)


_click: Any = sys.modules[typer.BadParameter.__module__]
"""The exceptions of the click that typer runs on (newer typers carry a copy of their own)."""


def _command_path(args: list[str]) -> str:
    """``warren service create`` for ``--addr URL service create web --replicas x``: the
    command words of a command line (the root's options taken with their values)."""
    command: Any = typer.main.get_command(app)
    path, words = ["warren"], iter(args)
    for word in words:
        if word in ("--addr", "--token", "--ca"):
            next(words, None)
        elif not word.startswith("-"):
            sub = getattr(command, "commands", {}).get(word)
            if sub is None:
                break
            command = sub
            path.append(word)
    return " ".join(path)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except _click.NoArgsIsHelpError as exc:
        sys.exit(exc.exit_code)  # the help is printed already
    except _click.UsageError as exc:  # a bad flag or value: one line too, and where to look
        command = exc.ctx.command_path if exc.ctx is not None else "warren"
        # typer words a refused value as pydantic does ("Value error, 'x' is not one of …").
        message = exc.format_message().replace("Value error, ", "")
        fail(f"{message} (see `{command} -h`)")
        sys.exit(exc.exit_code)
    except _click.ClickException as exc:
        fail(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        fail("interrupted")
        sys.exit(130)
    except MissingExtraError as exc:  # as a bad flag: this install cannot do what was asked
        fail(exc.message)
        sys.exit(2)
    except ValidationError as exc:  # a bad value, seen here or by the server: a usage error
        fail(f"{exc.message} (see `{_command_path(sys.argv[1:])} -h`)")
        sys.exit(2)
    except WarrenError as exc:
        fail(exc.message)
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say to it
        # Python flushes stdout again at exit: send that to /dev/null, not to a closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except Exception as exc:  # a bug: still one line, with a pointer
        if os.environ.get("WARREN_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (run with WARREN_DEBUG=1 for details)")
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)  # typer.Exit(code): without standalone mode, click returns it
