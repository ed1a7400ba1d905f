"""The ports: every I/O dependency of the control plane, agent and ingress, as typing.Protocol,
plus the plain value types they speak in. Adapters live in store/, agent/drivers/, ingress/; the
fakes used by tests pass the same contract suites as the real ones.

Must not import anything of Warren's but ``domain``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from .domain.events import Level
from .domain.logs import LogLine
from .domain.nodes import DrainStatus, Node
from .domain.services import Revision
from .domain.specs import HealthCheck, ServiceSpec
from .domain.tasks import Task

__all__ = [
    "LATENCY_BUCKETS",
    "RECENT_KEPT",
    "Clock",
    "Compare",
    "DataPlane",
    "Delete",
    "Dispatcher",
    "Driver",
    "Endpoint",
    "EventType",
    "ExitStatus",
    "KeyValue",
    "MetricSource",
    "Op",
    "Pin",
    "ProbeResult",
    "Prober",
    "Put",
    "RecoveredTask",
    "Route",
    "RouteStats",
    "Sample",
    "StateStore",
    "TaskHandle",
    "TxnResult",
    "WatchEvent",
    "Window",
    "newer",
    "tally",
]


# ── time ─────────────────────────────────────────────────────────────────────────────────────────


class Clock(Protocol):
    """Time as a port. ``now`` is wall-clock epoch seconds: everything stored uses it, so that
    deadlines survive a restart. Tests use ``warren.clocks.FakeClock``."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


# ── the store: an etcd-shaped key-value API (maps 1:1 onto etcd v3) ──────────────────────────────


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


CompareTarget = Literal["version", "create_revision", "mod_revision", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn guard, as in etcd: ``Compare(key, "mod_revision", "==", 42)``. An absent key has
    version, create_revision and mod_revision 0 — so ``Compare.absent(key)`` is ``version == 0``."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, "version", "==", 0)

    @staticmethod
    def unchanged(kv: KeyValue) -> Compare:
        return Compare(kv.key, "mod_revision", "==", kv.mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Deletes ``key``, or every key starting with it when ``prefix`` is true."""

    key: str
    prefix: bool = False


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    """The store's revision after the txn (unchanged when nothing was written)."""


class EventType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    kv: KeyValue
    """For a delete: the key, empty value, and ``mod_revision`` = the deletion's revision."""
    prev: KeyValue | None = None
    """For a delete: what was deleted. (Puts carry none, to keep watch history small.)"""


class StateStore(Protocol):
    """Every read and write of cluster state goes through this API. Revisions are global,
    monotonic, and shared by all keys, as in etcd."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` in key order, and the store revision they were read
        at (start a watch at revision + 1 to miss nothing)."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult: ...

    async def put(self, key: str, value: bytes, lease: int = 0) -> int: ...

    async def delete(self, key: str, prefix: bool = False) -> int: ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Every change under ``prefix`` from ``from_revision`` on, in order, no gaps, batched by
        revision. Raises CompactedError when ``from_revision`` is older than the kept history."""
        ...

    async def grant(self, ttl: float) -> int: ...

    async def keepalive(self, lease: int) -> None:
        """Renew ``lease`` for another ttl; NotFoundError if it has expired."""
        ...

    async def revoke(self, lease: int) -> None: ...

    async def close(self) -> None: ...


# ── runtime ──────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class TaskHandle:
    runtime_id: str
    endpoint: str | None
    started_at: float
    image_digest: str | None = None
    """The image that runs, by a reference that cannot move (``Task.image_digest``)."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int | None
    """None when it cannot be known (a process adopted after a restart, reaped by init)."""
    reason: str = ""
    oom_killed: bool = False


@dataclass(frozen=True, slots=True)
class RecoveredTask:
    task_id: str
    handle: TaskHandle
    alive: bool


@runtime_checkable
class Driver(Protocol):
    """Runs tasks. One driver instance per agent; it remembers what it started on disk (or in the
    engine) so that a restarted agent can ``recover`` instead of starting twice."""

    name: str

    async def start(self, task: Task, spec: ServiceSpec) -> TaskHandle: ...

    async def wait(self, task_id: str) -> ExitStatus:
        """Return when the task's process or container ends."""
        ...

    async def stop(self, task_id: str, grace: float) -> ExitStatus:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL. Idempotent."""
        ...

    async def recover(self) -> list[RecoveredTask]:
        """What this driver started before a restart: still alive or not."""
        ...

    async def forget(self, task_id: str) -> None:
        """Drop every record of an ended task (its logs stay)."""
        ...

    async def logs(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        """The last ``tail`` lines of the task's output (all without it) of those read at
        ``since`` or later (a ``domain.logs`` time), oldest first."""
        ...

    def follow(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        """First what ``logs(task_id, tail, since)`` returns (one batch, maybe empty), then each
        batch of new lines as they come, none missed or twice; it ends once the task's output
        has (the task ended and every line it wrote was read)."""
        ...


class Dispatcher(Protocol):
    """What an agent needs of the managers: the in-process agent of ``warren server`` goes
    straight to the store (``agent.dispatching.StoreDispatcher``); a remote worker goes through
    the managers' API with its node's token (``warren.worker``). Assignments arrive the other
    way: ``Agent.task_changed``."""

    async def register(self, node: Node, ttl: float) -> None:
        """Store ``node`` (its operator-set availability kept) and bind its heartbeat to a
        lease of ``ttl`` seconds: while the lease lives, the node is ready."""
        ...

    async def heartbeat(self) -> bool:
        """Renew the node's lease. False when it had expired: the heartbeat is then bound to
        a new lease (the node turns ready again)."""
        ...

    async def revision(self, service: str, number: int) -> Revision:
        """The spec a task runs. NotFoundError when the revision is gone."""
        ...

    async def update_task(self, task_id: str, change: Callable[[Task], Task | None]) -> Task | None:
        """Report observed state: read-modify-write with compare-and-swap, ``change`` applied
        again on a lost race; None from it leaves the task as it is. NotFoundError if gone."""
        ...

    async def record(self, kind: str, message: str, level: Level, task: Task) -> None:
        """An event about one of the node's tasks (a failure, for ``warren service ps``)."""
        ...

    async def leave(self) -> None:
        """The node drains itself on its way out (its process is stopping): no new tasks, its
        tasks move to other nodes. Undone when the node registers again; an operator's drain
        stays as it is."""
        ...

    def drain_progress(self) -> AsyncIterator[DrainStatus]:
        """How far the node's drain has come: now, then after every change, until the caller
        stops reading. UnavailableError when no manager (or store) answers."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str = ""


class Prober(Protocol):
    async def probe(self, check: HealthCheck, task: Task, spec: ServiceSpec) -> ProbeResult: ...


# ── traffic ──────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    """``host:port``."""
    task_id: str
    revision: int


@dataclass(frozen=True, slots=True)
class Pin:
    """Requests that carry ``header: value`` (or the cookie ``cookie=value``) go to
    ``revision`` whatever the weights say: a preview of a new revision, or an A/B group."""

    revision: int
    header: str | None = None
    cookie: str | None = None
    value: str = "1"
    match: str = "exact"
    """How ``value`` is compared: ``exact``, ``prefix``, or ``regex`` (a search)."""
    also: tuple[Pin, ...] = ()
    """Further conditions that must hold as well (a header route's other matches); their own
    ``revision`` is not read."""

    @staticmethod
    def from_wire(data: Mapping[str, Any]) -> Pin:
        also = tuple(Pin.from_wire(p) for p in data.get("also", ()))
        return Pin(**{**data, "also": also})


@dataclass(frozen=True, slots=True)
class Route:
    """How one service is reached: on its published ports, and on the shared port by host (and
    path prefix).

    Without ``weights`` every ready endpoint gets an equal share. With them, each revision gets
    its weight's share of the requests, exactly (smooth weighted round-robin: over any 100
    consecutive requests with weights summing to 100, revision r gets weights[r] of them),
    whatever its number of endpoints; a revision whose weight is 0 gets none."""

    service: str
    ports: tuple[int, ...] = ()
    host: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    weights: tuple[tuple[int, int], ...] = ()
    """(revision, weight) pairs; empty means "share by endpoints"."""
    pins: tuple[Pin, ...] = ()
    sticky_cookie: str | None = None
    """With ``weights``: the cookie that keeps a client on the revision that first answered it
    (a canary's sticky sessions). A request whose cookie names a revision with a weight above 0
    and an active endpoint goes there; any other is picked by the weights, and its response sets
    ``sticky_cookie=REVISION``. Pins come first. Ignored without ``weights``."""
    tls: tuple[tuple[int, str, str], ...] = ()
    """(published port, certificate file, key file) of the ports that terminate TLS."""
    paths: tuple[str, ...] = ()
    """With ``host``: the path prefixes of that host's requests this service answers on the
    shared port (the longest that matches wins among the host's services); empty: the host's
    other requests (its catch-all, as ``/``)."""

    def to_wire(self) -> dict[str, Any]:
        """The JSON form a manager sends to the ingress of a remote worker."""
        return asdict(self)

    @staticmethod
    def from_wire(data: Mapping[str, Any]) -> Route:
        return Route(
            service=data["service"],
            ports=tuple(data["ports"]),
            host=data["host"],
            endpoints=tuple(Endpoint(**e) for e in data["endpoints"]),
            weights=tuple((int(r), int(w)) for r, w in data["weights"]),
            pins=tuple(Pin.from_wire(p) for p in data["pins"]),
            sticky_cookie=data["sticky_cookie"],
            tls=tuple((int(p), str(c), str(k)) for p, c, k in data.get("tls", ())),
            # Sent by managers older than path prefixes: none.
            paths=tuple(str(p) for p in data.get("paths", ())),
        )


LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the ingress's latency histogram, as in Prometheus."""


@dataclass(slots=True)
class RouteStats:
    """Counters of one service's traffic through the ingress since it started."""

    requests: int = 0
    errors_5xx: int = 0
    """Responses with status >= 500, including the ingress's own 502/503/504."""
    in_flight: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Non-cumulative counts per bucket of LATENCY_BUCKETS; the last one is +Inf."""
    latency_sum: float = 0.0
    recent: deque[Sample] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    """The last requests: (monotonic time, latency, failed) — the windows canary analysis reads."""


RECENT_KEPT = 20_000


@dataclass(frozen=True, slots=True)
class Window:
    """One revision's traffic over the last seconds."""

    requests: int
    errors: int
    latencies: tuple[float, ...]


Sample = tuple[float, float, bool]
"""One request as the ingress counts it: (monotonic time it was answered, latency, failed)."""


def tally(recent: Sequence[Sample], since: float, latencies: list[float]) -> int:
    """Add to ``latencies`` those of the samples of ``recent`` (oldest first) answered at
    ``since`` or after; returns how many of them failed. Read from the newest end: the cost is
    that of the window, not of all that is kept."""
    errors = 0
    for at, latency, failed in reversed(recent):
        if at < since:
            break
        latencies.append(latency)
        errors += failed
    return errors


def newer(recent: Sequence[Sample], since: float) -> list[Sample]:
    """The samples of ``recent`` (oldest first) answered after ``since``, oldest first."""
    found = []
    for sample in reversed(recent):
        if sample[0] <= since:
            break
        found.append(sample)
    found.reverse()
    return found


class MetricSource(Protocol):
    """Per-revision traffic figures over sliding windows (the ingress, or later Prometheus)."""

    def window(self, service: str, revision: int, seconds: float) -> Window: ...


class DataPlane(Protocol):
    """The traffic layer: the built-in ingress, or later an HAProxy driven by its runtime API."""

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        """Set (or with None remove) the routes of the given services; the others stay as they
        are. Takes effect for the next request, with no reload and no dropped connection."""
        ...

    async def drain(self, address: str, timeout: float) -> int:
        """Send no new request to ``address``; wait up to ``timeout`` for its in-flight requests;
        answer those still in flight then 504 Gateway Timeout (a response already under way is
        cut) and stop waiting on them, so that stopping the task next cuts none of them: a
        client never gets 502 for a drained endpoint. Returns how many were still in flight at
        the end of ``timeout`` (0 when drained)."""
        ...

    def stats(self) -> Mapping[str, RouteStats]: ...

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        """The same counters per (service, revision): what canary analysis and Prometheus
        read."""
        ...
