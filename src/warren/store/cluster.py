"""Typed access to the cluster's state in a StateStore: the key layout, the codecs, and the
compare-and-swap writes every component shares. Knows nothing of controllers or HTTP.

Key layout (one prefix per kind; values are the camelCase JSON of the domain models)::

    /services/{name}                  Service      current spec + current revision number
    /revisions/{service}/{n:08d}      Revision     immutable spec snapshots (+ the image
                                                   digest their first task ran, once)
    /tasks/{service}/{task_id}        Task         desired state (control) + observed (agent)
    /nodes/{name}                     Node
    /heartbeats/{name}                b""          bound to the node's lease: gone ⇒ node down
    /events/{time_ns:020d}-{rand}     Event
    /deployments/{service}/{n:08d}    Deployment   rollouts, oldest first; the newest drives
    /requests/{service}               OperatorRequest  pause/resume/promote/abort, for the
                                                   deployment controller to apply and answer
    /notifications/{service}/{n:08d}  Delivery     what each receiver was told of deployment n
                                                   (created with it; gone once all is told)
    /cluster/secret                   bytes        signs the node tokens of remote workers
    /cluster/join-token               str          what `warren worker --token` joins with
    /cluster/admin-token              str          the admin token of every manager
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from ..domain.deployments import (
    Deployment,
    DeploymentKind,
    DeploymentStatus,
    Phase,
    Reason,
    status_deployment,
)
from ..domain.errors import (
    CompactedError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from ..domain.events import Event, Level
from ..domain.nodes import DrainedBy, DrainStatus, Node, NodeAvailability, NodeStatus
from ..domain.notifications import Delivery
from ..domain.requests import Intent, OperatorRequest
from ..domain.services import Revision, Service
from ..domain.specs import ServiceSpec
from ..domain.tasks import OBSERVED_FIELDS, DesiredState, JobKind, Task, TaskState, job_id
from ..domain.windows import Freeze, release_refusal
from ..planning.draining import drain_status
from ..planning.releases import (
    fast_track_target,
    first_release,
    last_good_revision,
    new_rollback,
    new_update,
    newest_good_revision,
    previous_revision,
    starts_from,
    undone_by_rollback,
)
from ..planning.strategies import kind_of
from ..ports import (
    Clock,
    Compare,
    Delete,
    EventType,
    KeyValue,
    Op,
    Put,
    StateStore,
    WatchEvent,
)

__all__ = [
    "DEPLOYMENTS",
    "EVENTS",
    "HEARTBEATS",
    "NODES",
    "NODE_EPOCHS",
    "NOTIFICATIONS",
    "REQUESTS",
    "REVISIONS",
    "SERVICES",
    "TASKS",
    "ClusterStore",
    "decode",
    "deployment_key",
    "encode",
    "notification_key",
    "request_key",
    "revision_key",
    "sequence_of",
    "service_key",
    "task_key",
]

SERVICES = "/services/"
REVISIONS = "/revisions/"
TASKS = "/tasks/"
NODES = "/nodes/"
HEARTBEATS = "/heartbeats/"
EVENTS = "/events/"
DEPLOYMENTS = "/deployments/"
REQUESTS = "/requests/"
NOTIFICATIONS = "/notifications/"
PORTS = "/ports/"
"""``/ports/PORT`` → the name of the service that publishes it: one service per port, claimed
in the transaction that writes the spec."""
FREEZES = "/freezes/"
"""``/freezes/SERVICE`` (or ``/freezes/*``: every service) → a Freeze (``domain.windows``)."""
CLUSTER_SECRET = "/cluster/secret"
JOIN_TOKEN = "/cluster/join-token"
ADMIN_TOKEN = "/cluster/admin-token"
NODE_EPOCHS = "/cluster/epochs/"
"""How many times each node was removed: its token must be of its current epoch."""
DEPLOYMENTS_KEPT = 50
EVENTS_KEPT = 1000
REVISIONS_CACHED = 10_000

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


def decode(cls: type[M], kv: KeyValue) -> M:
    return cls.model_validate_json(kv.value)


def service_key(name: str) -> str:
    return f"{SERVICES}{name}"


def port_key(port: int) -> str:
    return f"{PORTS}{port:05d}"


def revision_key(service: str, number: int) -> str:
    return f"{REVISIONS}{service}/{number:08d}"


def deployment_key(service: str, sequence: int) -> str:
    return f"{DEPLOYMENTS}{service}/{sequence:08d}"


def notification_key(service: str, sequence: int) -> str:
    """Where what was told of deployment ``sequence`` of ``service`` is kept."""
    return f"{NOTIFICATIONS}{service}/{sequence:08d}"


def freeze_key(service: str | None) -> str:
    return f"{FREEZES}{service or '*'}"


def request_key(service: str) -> str:
    return f"{REQUESTS}{service}"


def sequence_of(deployment_id: str) -> int:
    """``web-7`` → 7."""
    return int(deployment_id.rsplit("-", 1)[1])


def task_key(task: Task | tuple[str, str]) -> str:
    service, tid = (task.service, task.id) if isinstance(task, Task) else task
    return f"{TASKS}{service}/{tid}"


def service_of_task_key(key: str) -> str:
    return key[len(TASKS) :].split("/", 1)[0]


class ClusterStore:
    """The typed face of a StateStore. Reads return domain models with the ``KeyValue`` they came
    from where a caller may want to compare-and-swap on it."""

    def __init__(self, store: StateStore, clock: Clock) -> None:
        self.raw = store
        self.clock = clock
        self._events_written = 0
        # A stored revision never changes: every agent and request shares one decoded copy.
        # Keyed by the key *and* its mod_revision, since the number alone is not unique: a
        # service removed and created again starts over at revision 1 (see ``get_revision``).
        self._revisions: dict[tuple[str, int], Revision] = {}

    # ── services and revisions ───────────────────────────────────────────────────────────────

    async def get_service(self, name: str) -> tuple[Service, KeyValue]:
        kv = await self.raw.get(service_key(name))
        if kv is None:
            raise NotFoundError(f"service {name!r} not found")
        return decode(Service, kv), kv

    async def list_services(self) -> list[Service]:
        kvs, _ = await self.raw.range(SERVICES)
        return [decode(Service, kv) for kv in kvs]

    async def create_service(self, spec: ServiceSpec) -> Service:
        now = self.clock.now()
        service = Service(spec=spec, revision=1, created_at=now, updated_at=now)
        revision = Revision(service=spec.name, number=1, spec=spec, created_at=now, change="create")
        key = service_key(spec.name)
        if await self.raw.get(key) is not None:
            raise ConflictError(f"service {spec.name!r} already exists")
        # A leftover revision 1 of a deleted service whose tasks are still stopping would clash:
        # refuse until that clean-up is done.
        leftovers, _ = await self.raw.range(f"{REVISIONS}{spec.name}/")
        if leftovers:
            raise ConflictError(
                f"service {spec.name!r} was just removed and its tasks are still stopping; "
                "try again in a few seconds"
            )
        compares = [Compare.absent(key)]
        ops: list[Op] = [
            Put(key, encode(service)),
            Put(revision_key(spec.name, 1), encode(revision)),
        ]
        if spec.deploy.pre_deploy is not None:
            # Its job runs before the first task starts: a release holds them until then.
            compares.append(Compare.absent(deployment_key(spec.name, 1)))
            ops.extend(_deployment_puts(first_release(service, now), 1))
        await self._claim_ports(spec, None, compares, ops)
        res = await self.raw.txn(compares, ops)
        if not res.succeeded:
            await self._claim_ports(spec, None, [], [])  # a port taken meanwhile: say which
            raise ConflictError(f"service {spec.name!r} already exists")
        return service

    async def _claim_ports(
        self, spec: ServiceSpec, before: ServiceSpec | None, compares: list[Compare], ops: list[Op]
    ) -> None:
        """Add to a write of ``spec`` (``before``: the spec it replaces) the claims of the ports
        it newly publishes — each still free when the write lands — and the release of those it
        no longer does. Raises ConflictError naming the service that holds a port."""
        had = {p.published for p in before.ports} if before is not None else set()
        wanted = {p.published for p in spec.ports}
        for port in sorted(wanted - had):
            key = port_key(port)
            kv = await self.raw.get(key)
            holder = await self._publisher(port, spec.name)
            if holder is not None:
                raise ConflictError(f"ports: port {port} is published by service {holder}")
            compares.append(Compare.absent(key) if kv is None else Compare.unchanged(kv))
            ops.append(Put(key, spec.name.encode()))
        ops.extend(Delete(port_key(port)) for port in sorted(had - wanted))

    async def _publisher(self, port: int, other_than: str) -> str | None:
        """The service other than ``other_than`` whose spec publishes ``port``, if any. Read
        from the specs: a claim is what makes two writers race, a spec is the truth (a claim may
        outlive a rollback to a revision without the port, and services written before claims
        were kept have none)."""
        kvs, _ = await self.raw.range(SERVICES)
        for kv in kvs:
            service = decode(Service, kv)
            if service.name != other_than and any(p.published == port for p in service.spec.ports):
                return service.name
        return None

    async def update_service(
        self,
        name: str,
        change: Callable[[ServiceSpec], ServiceSpec],
        cause: str = "update",
        force: bool = False,
        override: bool = False,
    ) -> tuple[Service, bool]:
        """Apply ``change`` to the current spec with compare-and-swap (retried on a lost race).
        When the template changed, a new revision is stored and, in the same transaction, a
        deployment that moves the tasks to it — or, when the spec is again the one an
        unpromoted canary (or blue/green) release started from, a fast-track rollback to that
        stable revision instead (``planning.releases``). ``force``: a new revision and its
        deployment even when the template is the same (``service update --force``: every task
        replaced, by the update config; a new number, because a deployment moves slots from
        one revision to another — and the new revision resolves its image tag again). A new
        release is refused outside the service's deployment windows or in a freeze, unless
        ``override`` (then said in its decision log); a rollback never is. Returns (service,
        whether anything changed)."""
        for _ in range(10):
            current, kv = await self.get_service(name)
            spec = change(current.spec)
            if spec.name != name:
                raise ConflictError("a service cannot be renamed")
            if spec == current.spec and not force:
                return current, False
            latest = await self.latest_deployment(name)
            compares = [Compare.unchanged(kv)]
            ops: list[Op] = []
            number = current.revision
            if force:
                note = await self._release_allowed(current, override, compares)
                number = await self._next_revision(name)
                await self._create_update(current, spec, number, latest, cause, compares, ops, note)
            elif not spec.same_template(current.spec):
                active = latest[0] if latest is not None else None
                stable = await self._stable_spec(active)
                back_to = fast_track_target(active, stable.get, spec)
                if back_to is not None:
                    number = back_to
                    asked = current.model_copy(update={"spec": spec})
                    await self._create_rollback(
                        asked, back_to, Reason.FAST_ROLLBACK, latest, compares, ops
                    )
                else:
                    note = await self._release_allowed(current, override, compares)
                    number = await self._next_revision(name)
                    await self._create_update(
                        current, spec, number, latest, cause, compares, ops, note
                    )
            service = current.model_copy(
                update={"spec": spec, "revision": number, "updated_at": self.clock.now()}
            )
            ops.append(Put(kv.key, encode(service)))
            await self._claim_ports(spec, current.spec, compares, ops)
            ops.extend(await self._trim_revisions(name, spec, keep=number))
            if (await self.raw.txn(compares, ops)).succeeded:
                return service, True
        raise ConflictError(f"service {name!r} is being changed by someone else; try again")

    async def _create_update(
        self,
        current: Service,
        spec: ServiceSpec,
        number: int,
        latest: tuple[Deployment, KeyValue] | None,
        cause: str,
        compares: list[Compare],
        ops: list[Op],
        note: str = "",
    ) -> Deployment:
        now = self.clock.now()
        rev = Revision(service=current.name, number=number, spec=spec, created_at=now, change=cause)
        ops.append(Put(revision_key(current.name, number), encode(rev)))
        start = starts_from(latest[0] if latest else None, current.revision)
        sequence = await self._add_deployment_guards(current.name, latest, compares, ops)
        deployment = new_update(current, number, spec, start, now, sequence)
        if note:
            deployment = deployment.decide(now, Reason.OVERRIDDEN, note, action="start anyway")
        ops.extend(_deployment_puts(deployment, sequence))
        return deployment

    async def _release_allowed(
        self, current: Service, override: bool, compares: list[Compare]
    ) -> str:
        """Refuse a new release of ``current`` outside its windows or in a freeze (a freeze put
        meanwhile fails the transaction); with ``override``, the refusal to log ("" if none)."""
        freezes = []
        for key in (freeze_key(current.name), freeze_key(None)):
            kv = await self.raw.get(key)
            if kv is None:
                compares.append(Compare.absent(key))
            else:
                compares.append(Compare.unchanged(kv))
                freezes.append(decode(Freeze, kv))
        windows = current.spec.deploy.windows
        refusal = release_refusal(current.name, windows, freezes, self.clock.now())
        if refusal is None:
            return ""
        if not override:
            raise ConflictError(refusal)
        return f"started with --override: {refusal.split('; ')[0]}"

    async def start_job(
        self, name: str, command: tuple[str, ...], timeout: float | None = None
    ) -> Task:
        """A one-off job of service ``name``'s current revision running ``command`` (``warren
        run``), stopped after ``timeout`` seconds if given; the reconciler places it."""
        service, kv = await self.get_service(name)
        now = self.clock.now()
        job = Task(
            id=job_id(name, JobKind.RUN, secrets.token_hex(3)), service=name,
            revision=service.revision, slot=0, job=JobKind.RUN, command=command,
            deadline=now + timeout if timeout is not None else None,
            created_at=now, updated_at=now,
        )  # fmt: skip
        key = task_key(job)
        res = await self.raw.txn(
            [Compare.unchanged(kv), Compare.absent(key)], [Put(key, encode(job))]
        )
        if not res.succeeded:
            raise ConflictError(f"service {name!r} changed meanwhile: run it again")
        return job

    async def backup(self) -> tuple[bytes, int]:
        """A consistent copy of the whole store as a SQLite file (its bytes) and the revision it
        holds: the sqlite store only — etcd has its own snapshots, memory keeps nothing."""
        from .memory import MemoryStore
        from .sqlite import SqliteStore

        store = self.raw
        if not isinstance(store, SqliteStore):
            why = (
                "the memory store keeps nothing to back up"
                if isinstance(store, MemoryStore)
                else "the etcd store is backed up with etcd's own snapshots: "
                "`etcdctl snapshot save FILE` (docs/production.md)"
            )
            raise ConflictError(why)
        staged = store.path.with_name(f"{store.path.name}.backup-{secrets.token_hex(4)}")
        try:
            revision = store.backup(staged)
            return staged.read_bytes(), revision
        finally:
            staged.unlink(missing_ok=True)

    async def put_freeze(self, freeze: Freeze) -> Freeze:
        """Freeze the releases of ``freeze.service`` (None: of every service); replaces the
        freeze of that scope."""
        if freeze.service is not None:
            await self.get_service(freeze.service)
        freeze = freeze.model_copy(update={"created_at": self.clock.now()})
        await self.raw.put(freeze_key(freeze.service), encode(freeze))
        return freeze

    async def delete_freeze(self, service: str | None) -> Freeze:
        """End the freeze of ``service`` (None: the one of every service); returns it."""
        kv = await self.raw.get(freeze_key(service))
        if kv is None or not await self.raw.delete(freeze_key(service)):
            scope = f"service {service!r}" if service else "every service"
            raise NotFoundError(f"no freeze of {scope}")
        return decode(Freeze, kv)

    async def list_freezes(self) -> list[Freeze]:
        """The freezes that still hold (an ended one is left out, and stays until replaced)."""
        kvs, _ = await self.raw.range(FREEZES)
        now = self.clock.now()
        return [f for f in (decode(Freeze, kv) for kv in kvs) if f.until > now]

    async def _create_rollback(
        self,
        service: Service,
        target: int,
        cause: Reason,
        latest: tuple[Deployment, KeyValue] | None,
        compares: list[Compare],
        ops: list[Op],
        note: str = "",
    ) -> Deployment:
        """Add to a transaction a rollback of ``service`` (as it stands before the rollback) to
        ``target``. The deployment it undoes is left to the controller, which links the two."""
        now = self.clock.now()
        sequence = await self._add_deployment_guards(service.name, latest, compares, ops)
        undoes = undone_by_rollback(latest[0] if latest else None)
        rollback = new_rollback(service, target, cause, now, sequence, undoes, note)
        ops.extend(_deployment_puts(rollback, sequence))
        return rollback

    async def _add_deployment_guards(
        self,
        name: str,
        latest: tuple[Deployment, KeyValue] | None,
        compares: list[Compare],
        ops: list[Op],
    ) -> int:
        """The next deployment's sequence number; the transaction fails if another deployment
        was created meanwhile, or the newest one changed (what it starts from may have). The
        oldest ended deployments beyond DEPLOYMENTS_KEPT go."""
        sequence = sequence_of(latest[0].id) + 1 if latest else 1
        compares.append(Compare.absent(deployment_key(name, sequence)))
        if latest is not None:
            compares.append(Compare.unchanged(latest[1]))
        kvs, _ = await self.raw.range(f"{DEPLOYMENTS}{name}/")
        kept = [decode(Deployment, kv) for kv in kvs]
        # Never one an unended deployment waits for (its rollback).
        needed = {d.rolled_back_by for d in kept if not d.phase.terminal}
        excess = len(kvs) + 1 - DEPLOYMENTS_KEPT
        for kv, d in list(zip(kvs, kept, strict=True))[: max(0, excess)]:
            if d.phase.terminal and d.id not in needed:
                ops.append(Delete(kv.key))
                ops.append(Delete(notification_key(name, sequence_of(d.id))))
        return sequence

    async def _stable_spec(self, active: Deployment | None) -> dict[int, ServiceSpec]:
        """The spec of the revision ``active`` started from, if it is active (for a
        fast-track)."""
        if active is None or not active.active or active.from_revision is None:
            return {}
        try:
            rev = await self.get_revision(active.service, active.from_revision)
        except NotFoundError:
            return {}
        return {rev.number: rev.spec}

    async def rollback_service(
        self,
        name: str,
        to_revision: int | None = None,
        cause: Reason = Reason.MANUAL_ROLLBACK,
        check: Callable[[Revision], Awaitable[str | None]] | None = None,
    ) -> tuple[Service, Deployment, int]:
        """``warren service rollback``: see ``start_rollback``. ``check``: why the target
        revision cannot run (``planning.runnable``), which refuses the rollback — ConflictError
        ``cannot roll back to revision N: WHY``, nothing written."""
        started = await self.start_rollback(name, to_revision, cause, check=check)
        assert started is not None  # only a rollback of one deployment can be refused so
        return started

    async def start_rollback(
        self,
        name: str,
        to_revision: int | None = None,
        cause: Reason = Reason.MANUAL_ROLLBACK,
        note: str = "",
        undoes: str | None = None,
        check: Callable[[Revision], Awaitable[str | None]] | None = None,
    ) -> tuple[Service, Deployment, int] | None:
        """Make revision ``to_revision`` (default: the last good one before the current one,
        ``planning.releases``) the service's current spec again — no new revision, as in
        Swarm — and start a rollback deployment to it with the rollback config. Returns the
        service, the rollback deployment and the store revision of the change. ``undoes``: the
        rollback is of that deployment only — None (nothing written) once another is the newest
        or its rollback exists (an automatic rollback decided before the operator's update must
        not undo that update)."""
        for _ in range(10):
            current, kv = await self.get_service(name)
            deployments = await self.list_deployments(name)
            latest = await self.latest_deployment(name)
            if undoes is not None and (
                latest is None or latest[0].id != undoes or latest[0].rolled_back_by
            ):
                return None
            # The update in flight — or one whose rollback was decided but not started yet.
            active = undone_by_rollback(latest[0] if latest is not None else None)
            kept = {r.number for r in await self.list_revisions(name)}
            target = to_revision or self._rollback_target(name, current, deployments, active, kept)
            if target == current.revision and active is None:
                # The request is fine; the service's state makes it moot.
                raise ConflictError(f"service {name!r} already runs revision {target}")
            # Read from the store (get_revision always is): a revision trimmed by
            # revisionHistoryLimit cannot be rolled back to.
            revision = await self.get_revision(name, target)
            why = await check(revision) if check is not None else None
            if why:
                raise ConflictError(f"cannot roll back to revision {target}: {why}")
            compares = [Compare.unchanged(kv)]
            ops: list[Op] = []
            rollback = await self._create_rollback(
                current, target, cause, latest, compares, ops, note
            )
            spec = revision.spec.keeping_settings_of(current.spec)
            service = current.model_copy(
                update={"spec": spec, "revision": target, "updated_at": self.clock.now()}
            )
            ops.append(Put(kv.key, encode(service)))
            res = await self.raw.txn(compares, ops)
            if res.succeeded:
                return service, rollback, res.revision
        raise ConflictError(f"service {name!r} is being changed by someone else; try again")

    @staticmethod
    def _rollback_target(
        name: str,
        current: Service,
        deployments: list[Deployment],
        active: Deployment | None,
        kept: set[int],
    ) -> int:
        if active is not None and active.kind == DeploymentKind.UPDATE and active.from_revision:
            target = last_good_revision(deployments, active, kept)  # undo the update in flight
        else:
            target = previous_revision(deployments, current.revision, kept)
        if target is None:
            failed = sorted(
                {d.to_revision for d in deployments if d.phase in (Phase.FAILED, Phase.ROLLED_BACK)}
            )
            why = f" (revision {', '.join(map(str, failed))} failed)" if failed else ""
            raise ConflictError(
                f"service {name!r} has no earlier good revision to roll back to{why}; "
                "name one with --to-revision"
            )
        return target

    async def list_deployments(self, service: str) -> list[Deployment]:
        kvs, _ = await self.raw.range(f"{DEPLOYMENTS}{service}/")
        return [decode(Deployment, kv) for kv in kvs]

    async def latest_deployment(self, service: str) -> tuple[Deployment, KeyValue] | None:
        kvs, _ = await self.raw.range(f"{DEPLOYMENTS}{service}/")
        return (decode(Deployment, kvs[-1]), kvs[-1]) if kvs else None

    async def deployment_status(self, name: str) -> DeploymentStatus:
        """The service's rollout status: its tasks, and its last release."""
        service, _kv = await self.get_service(name)
        deployments = await self.list_deployments(name)
        shown, _ = status_deployment(deployments)
        return DeploymentStatus.of(
            spec=service.spec,
            revision=service.revision,
            deployments=deployments,
            tasks=await self.list_tasks(name),
            now=self.clock.now(),
            weighted=shown is not None and kind_of(shown).weighted,
        )

    # ── operator requests ────────────────────────────────────────────────────────────────────

    async def ask(
        self, service: str, intent: Intent, full: bool = False, force: bool = False
    ) -> OperatorRequest:
        """Store an operator's request of the service's newest deployment, for the deployment
        controller to apply (NotFoundError: no deployment)."""
        latest = await self.latest_deployment(service)
        if latest is None:
            raise NotFoundError(f"service {service!r} has no deployment")
        request = OperatorRequest(
            id=secrets.token_hex(8), service=service, deployment=latest[0].id, intent=intent,
            full=full, force=force, asked_at=self.clock.now(),
        )  # fmt: skip
        await self.raw.put(request_key(service), encode(request))
        return request

    async def answer_of(self, request: OperatorRequest, timeout: float) -> OperatorRequest | None:
        """The request once answered, within ``timeout`` seconds; else it is withdrawn (if it
        still waits: nothing will apply it late) and None. The answer may land while it is
        withdrawn: then it is returned."""
        key = request_key(request.service)
        kvs, revision = await self.raw.range(key)
        kv: KeyValue | None = next((x for x in kvs if x.key == key), None)
        watch = self.raw.watch(key, revision + 1)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = decode(OperatorRequest, kv) if kv is not None else None
                    if found is None:
                        return None
                    if found.id != request.id:
                        raise _replaced(request, found)
                    if not found.pending:
                        return found
                    for event in await anext(watch):
                        if event.kv.key == key:
                            kv = None if event.type == "delete" else event.kv
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        kv = await self.raw.get(key)
        if kv is None:
            return None
        found = decode(OperatorRequest, kv)
        if found.id == request.id and found.pending:
            if (await self.raw.txn([Compare.unchanged(kv)], [Delete(key)])).succeeded:
                return None
            return await self.answer_of(request, 0.5)
        if found.id != request.id:
            raise _replaced(request, found)
        return found

    async def next_revision(self, name: str) -> int:
        """The number the service's next revision gets."""
        return await self._next_revision(name)

    async def _next_revision(self, name: str) -> int:
        kvs, _ = await self.raw.range(f"{REVISIONS}{name}/")
        return max((int(kv.key.rsplit("/", 1)[1]) for kv in kvs), default=0) + 1

    async def _trim_revisions(self, name: str, spec: ServiceSpec, keep: int) -> list[Op]:
        """Delete revisions beyond ``revisionHistoryLimit`` that no task runs any more — but
        never the last good one, where a failed update rolls back to."""
        kvs, _ = await self.raw.range(f"{REVISIONS}{name}/")
        numbers = sorted(int(kv.key.rsplit("/", 1)[1]) for kv in kvs)
        limit = spec.deploy.revision_history_limit
        in_use = {t.revision for t in await self.list_tasks(name, jobs=True) if t.state.active}
        in_use.add(newest_good_revision(await self.list_deployments(name)) or keep)
        excess = [n for n in numbers if n != keep and n not in in_use][
            : max(0, len(numbers) - limit)
        ]
        return [Delete(revision_key(name, n)) for n in excess]

    async def delete_service(self, name: str) -> None:
        """Remove the service; its tasks are stopped by the reconciler, which then removes the
        revisions."""
        service, kv = await self.get_service(name)
        released = [Delete(port_key(p.published)) for p in service.spec.ports]
        res = await self.raw.txn([Compare.unchanged(kv)], [Delete(kv.key), *released])
        if not res.succeeded:
            raise ConflictError(f"service {name!r} changed while being removed; try again")

    async def get_revision(self, service: str, number: int) -> Revision:
        """Revision ``number`` of the service as stored now. The key is read every time: `web`
        removed and created again has a new revision 1 under the same key, written at a later
        store revision. A cache by (service, number) would hand the old spec to the new one's
        tasks: nothing tells it of the delete, which the reconciler (maybe another manager's)
        writes."""
        kv = await self.raw.get(revision_key(service, number))
        if kv is None:
            raise NotFoundError(f"revision {number} of service {service!r} not found")
        cached = self._revisions.get((kv.key, kv.mod_revision))
        if cached is not None:
            return cached
        revision = decode(Revision, kv)
        if len(self._revisions) >= REVISIONS_CACHED:
            self._revisions.clear()
        self._revisions[(kv.key, kv.mod_revision)] = revision
        return revision

    async def pin_image(
        self, service: str, number: int, digest: str, nodes: Iterable[str] = ()
    ) -> bool:
        """Keep ``digest`` with revision ``number`` unless it has one already — the first image
        a task of the revision ran is the one all its tasks run — and add ``nodes`` to those
        known to have run it (``Revision.image_nodes``). Whether anything was written."""
        for _ in range(5):
            kv = await self.raw.get(revision_key(service, number))
            if kv is None:
                return False
            revision = decode(Revision, kv)
            kept = revision.image_digest or digest
            known = set(revision.image_nodes) | (set(nodes) if kept == digest else set())
            pinned = revision.model_copy(
                update={"image_digest": kept, "image_nodes": tuple(sorted(known))}
            )
            if pinned == revision:
                return False
            res = await self.raw.txn([Compare.unchanged(kv)], [Put(kv.key, encode(pinned))])
            if res.succeeded:
                return True
        return False

    async def list_revisions(self, service: str) -> list[Revision]:
        kvs, _ = await self.raw.range(f"{REVISIONS}{service}/")
        return [decode(Revision, kv) for kv in kvs]

    # ── tasks ────────────────────────────────────────────────────────────────────────────────

    async def list_tasks(self, service: str | None = None, jobs: bool = False) -> list[Task]:
        """The tasks of the services' slots — with their jobs too when ``jobs``."""
        kvs, _ = await self.raw.range(f"{TASKS}{service}/" if service else TASKS)
        tasks = [decode(Task, kv) for kv in kvs]
        return tasks if jobs else [t for t in tasks if t.job is None]

    async def watch_tasks(
        self, service: str
    ) -> AsyncGenerator[list[tuple[str, Task | None]], None]:
        """The service's tasks now (one batch: every one), then each change as it comes:
        ``(task id, the task, or None once it is deleted)``. A watch that falls behind the
        store's history lists them again (a task deleted meanwhile comes as None). It ends
        when the store closes."""
        prefix = f"{TASKS}{service}/"
        known: set[str] = set()
        while True:
            kvs, revision = await self.raw.range(prefix)
            listed = [decode(Task, kv) for kv in kvs]
            gone = known - {t.id for t in listed}
            known = {t.id for t in listed}
            yield [(t.id, t) for t in listed] + [(tid, None) for tid in sorted(gone)]
            watch = self.raw.watch(prefix, revision + 1)
            try:
                async for events in watch:
                    yield [self._task_change(prefix, event, known) for event in events]
                return
            except CompactedError:
                continue
            finally:
                await watch.aclose()  # type: ignore[attr-defined]

    @staticmethod
    def _task_change(prefix: str, event: WatchEvent, known: set[str]) -> tuple[str, Task | None]:
        tid = event.kv.key[len(prefix) :]
        if event.type == EventType.DELETE:
            known.discard(tid)
            return tid, None
        known.add(tid)
        return tid, decode(Task, event.kv)

    async def get_task(self, task_id: str) -> tuple[Task, KeyValue]:
        service = task_id.rsplit(".", 2)[0]
        kv = await self.raw.get(task_key((service, task_id)))
        if kv is None:
            raise NotFoundError(f"task {task_id!r} not found")
        return decode(Task, kv), kv

    async def update_task(
        self, task_id: str, change: Callable[[Task], Task | None], attempts: int = 20
    ) -> Task | None:
        """Read-modify-write one task with compare-and-swap, retried on a lost race. ``change``
        returns None to leave the task as it is. NotFoundError if the task is gone."""
        for _ in range(attempts):
            task, kv = await self.get_task(task_id)
            new = change(task)
            if new is None or new == task:
                return task
            if (await self.raw.txn([Compare.unchanged(kv)], [Put(kv.key, encode(new))])).succeeded:
                return new
        raise ConflictError(f"task {task_id} kept changing under us")

    async def report_task(self, node: str, task: Task, mod_revision: int) -> int:
        """What a remote worker saw of one of its node's tasks, written if the task is still at
        ``mod_revision`` (ConflictError otherwise: read it again). A worker reports observed
        state only, of its own tasks (ForbiddenError). Returns the task's new mod_revision."""
        current, kv = await self.get_task(task.id)
        if current.node != node:
            raise ForbiddenError(f"task {task.id} is not on node {node}")
        if kv.mod_revision != mod_revision:
            raise ConflictError(f"task {task.id} changed meanwhile")
        fields = sorted(f for f in Task.model_fields if getattr(task, f) != getattr(current, f))
        if set(fields) - OBSERVED_FIELDS:
            wrong = ", ".join(f for f in fields if f not in OBSERVED_FIELDS)
            raise ForbiddenError(f"a worker reports observed state only, not {wrong}")
        res = await self.raw.txn([Compare.unchanged(kv)], [Put(kv.key, encode(task))])
        if not res.succeeded:
            raise ConflictError(f"task {task.id} changed meanwhile")
        return res.revision

    async def set_desired_state(self, task_id: str, desired: DesiredState) -> Task:
        """Stop a task from outside (``shutdown``); the reconciler replaces it if its service
        still wants it. A task shut down for good cannot be brought back."""
        now = self.clock.now()

        def change(task: Task) -> Task:
            if desired == DesiredState.RUNNING and not task.wants_running:
                raise ConflictError(
                    f"task {task_id} is shut down for good; its slot gets a new one"
                )
            return task.changed(now, desired_state=desired, message="stopped by request")

        task = await self.update_task(task_id, change)
        assert task is not None
        return task

    # ── nodes ────────────────────────────────────────────────────────────────────────────────

    async def list_nodes(self) -> list[Node]:
        kvs, _ = await self.raw.range(NODES)
        return [decode(Node, kv) for kv in kvs]

    async def get_node(self, name: str) -> Node:
        kv = await self.raw.get(f"{NODES}{name}")
        if kv is None:
            raise NotFoundError(f"node {name!r} not found")
        return decode(Node, kv)

    async def put_node(self, node: Node) -> Node:
        """Register ``node`` (an agent starting). What is not the agent's to say is kept from
        the node registered before: the operator's ``availability`` (a drained node stays
        drained across agent restarts) and the ``status``, which the node watcher alone writes,
        from the node's heartbeat. A new node is down until its heartbeat is seen. (Written
        ready here, a node back after its lease expired was ready — placeable — before it had
        a heartbeat, until the watcher wrote it down again and then ready.) A node that drained
        itself on its way out (``Node.leaving``) is back: active again, as in Swarm. Returns
        the node as stored."""
        key = f"{NODES}{node.name}"
        for _ in range(10):
            kv = await self.raw.get(key)
            if kv is None:
                new = node.model_copy(update={"status": NodeStatus.DOWN})
                if (await self.raw.txn([Compare.absent(key)], [Put(key, encode(new))])).succeeded:
                    return new
                continue
            old = decode(Node, kv)
            kept = {"availability": old.availability, "drained_by": old.drained_by}
            if old.leaving:
                kept = {"availability": NodeAvailability.ACTIVE, "drained_by": None}
            new = node.model_copy(update={**kept, "status": old.status})
            if (await self.raw.txn([Compare.unchanged(kv)], [Put(key, encode(new))])).succeeded:
                if old.leaving:
                    await self.record(
                        "node.active", f"node {node.name} is back: active again", node=node.name
                    )
                return new
        raise ConflictError(f"node {node.name!r} kept changing while registering; try again")

    async def set_node_availability(self, name: str, availability: NodeAvailability) -> Node:
        """The operator's wish for a node: ``drain`` (no new tasks; its tasks move elsewhere)
        or ``active``. NotFoundError for an unknown node. Draining a node that drains itself
        on its way out makes the drain the operator's: it outlasts the node's restart."""
        by = DrainedBy.OPERATOR if availability == NodeAvailability.DRAIN else None
        return await self._set_drain(name, availability, by)

    async def drain_for_shutdown(self, name: str) -> tuple[Node, bool]:
        """The node drains itself: its worker or server is stopping (``agent.leaving``). No
        new tasks, its tasks move elsewhere, as with ``warren node drain``; but the drain is
        the node's, undone when it registers again (``put_node``). A node an operator drained
        stays the operator's. Returns the node, and whether this call drained it."""
        node = await self.get_node(name)
        if node.draining:
            return node, False
        node = await self._set_drain(name, NodeAvailability.DRAIN, DrainedBy.SHUTDOWN)
        if node.drained_by != DrainedBy.SHUTDOWN:
            return node, False  # an operator drained it meanwhile
        await self.record(
            "node.drain", f"node {name} is stopping: its tasks move to other nodes", node=name
        )
        return node, True

    async def drain_progress(self, name: str) -> AsyncIterator[DrainStatus]:
        """How far the drain of node ``name`` has come: now, then again whenever a change of
        the tasks changes it, for as long as the caller reads (a watch, not polling)."""
        last: DrainStatus | None = None
        while True:
            kvs, revision = await self.raw.range(TASKS)
            tasks = {kv.key: decode(Task, kv) for kv in kvs}
            status = drain_status(name, tasks.values())
            if status != last:
                yield status
                last = status
            watch = self.raw.watch(TASKS, revision + 1)
            try:
                async for batch in watch:
                    for event in batch:
                        if event.type == "put":
                            tasks[event.kv.key] = decode(Task, event.kv)
                        else:
                            tasks.pop(event.kv.key, None)
                    status = drain_status(name, tasks.values())
                    if status != last:
                        yield status
                        last = status
                return  # the store is closing
            except CompactedError:
                continue  # read the tasks again
            finally:
                await watch.aclose()  # type: ignore[attr-defined]

    async def _set_drain(
        self, name: str, availability: NodeAvailability, by: DrainedBy | None
    ) -> Node:
        for _ in range(10):
            kv = await self.raw.get(f"{NODES}{name}")
            if kv is None:
                raise NotFoundError(f"node {name!r} not found")
            node = decode(Node, kv)
            if node.availability == availability and node.drained_by == by:
                return node
            if by == DrainedBy.SHUTDOWN and node.draining:
                return node  # an operator's drain is never made the node's own
            new = node.model_copy(
                update={
                    "availability": availability,
                    "drained_by": by,
                    "updated_at": self.clock.now(),
                }
            )
            if (await self.raw.txn([Compare.unchanged(kv)], [Put(kv.key, encode(new))])).succeeded:
                return new
        raise ConflictError(f"node {name!r} is being changed by someone else; try again")

    async def remove_node(self, name: str) -> list[str]:
        """Forget a node that is down for good: its tasks (which no agent will report any
        more) end as stopped, and its record goes. A node that is ready cannot be removed
        (ConflictError): stop its worker first. Its token stops working (the node's epoch goes
        up): if it comes back, it must join again, and then stops the tasks it still had.
        Returns the ids of the tasks ended."""
        for _ in range(10):
            kv = await self.raw.get(f"{NODES}{name}")
            if kv is None:
                raise NotFoundError(f"node {name!r} not found")
            if decode(Node, kv).status != NodeStatus.DOWN:
                raise ConflictError(
                    f"node {name} is ready: only a node that is down can be removed "
                    "(stop its worker, or drain it first)"
                )
            now = self.clock.now()
            epoch_kv = await self.raw.get(f"{NODE_EPOCHS}{name}")
            epoch = int(epoch_kv.value) if epoch_kv is not None else 0
            # The node's token stops working: back, it must join again.
            compares: list[Compare] = [
                Compare.unchanged(kv),
                Compare.unchanged(epoch_kv) if epoch_kv else Compare.absent(f"{NODE_EPOCHS}{name}"),
            ]
            ops: list[Op] = [Delete(kv.key), Put(f"{NODE_EPOCHS}{name}", b"%d" % (epoch + 1))]
            ended: list[str] = []
            for task_kv in (await self.raw.range(TASKS))[0]:
                task = decode(Task, task_kv)
                if task.node != name or not task.state.active:
                    continue
                if task.state != TaskState.STOPPING and task.state != TaskState.PENDING:
                    task = task.transition(TaskState.STOPPING, now)
                done = task.transition(TaskState.STOPPED, now, message=f"node {name} removed")
                done = done.changed(now, desired_state=DesiredState.SHUTDOWN)
                compares.append(Compare.unchanged(task_kv))
                ops.append(Put(task_kv.key, encode(done)))
                ended.append(task.id)
            if (await self.raw.txn(compares, ops)).succeeded:
                return ended
        raise ConflictError(f"node {name!r} kept changing while being removed; try again")

    # ── credentials of remote workers ────────────────────────────────────────────────────────

    async def _get_or_create(self, key: str, make: Callable[[], bytes]) -> bytes:
        """The value of ``key``, created with ``make()`` if absent — by exactly one manager."""
        for _ in range(10):
            kv = await self.raw.get(key)
            if kv is not None:
                return kv.value
            value = make()
            if (await self.raw.txn([Compare.absent(key)], [Put(key, value)])).succeeded:
                return value
        raise ConflictError(f"{key} kept changing; try again")

    async def node_epoch(self, name: str) -> int:
        """How many times node ``name`` was removed (its token carries this)."""
        kv = await self.raw.get(f"{NODE_EPOCHS}{name}")
        return int(kv.value) if kv is not None else 0

    async def cluster_secret(self) -> bytes:
        """The key that signs node tokens, the same for every manager of the cluster."""
        return await self._get_or_create(CLUSTER_SECRET, lambda: secrets.token_bytes(32))

    async def admin_token(self, mine: str) -> str:
        """The cluster's admin token: the first manager's (``mine``, if there is none yet)."""
        return (await self._get_or_create(ADMIN_TOKEN, mine.encode)).decode()

    async def rotate_admin_token(self) -> str:
        """A new admin token for the cluster, in place of the old one (which stops working as
        each manager sees the change: ``admin_tokens``)."""
        token = secrets.token_urlsafe(32)
        await self.raw.put(ADMIN_TOKEN, token.encode())
        return token

    async def admin_tokens(self) -> AsyncIterator[str]:
        """The cluster's admin token each time it changes (a rotation on any manager), for as
        long as the caller reads; the store's own history lost (compacted): read it again."""
        while True:
            kv = await self.raw.get(ADMIN_TOKEN)
            revision = kv.mod_revision if kv is not None else 0
            if kv is not None:
                yield kv.value.decode()
            watch = self.raw.watch(ADMIN_TOKEN, revision + 1)
            try:
                async for batch in watch:
                    for event in batch:
                        if event.type == "put" and event.kv.key == ADMIN_TOKEN:
                            yield event.kv.value.decode()
                return  # the store is closing
            except CompactedError:
                continue
            finally:
                await watch.aclose()  # type: ignore[attr-defined]

    async def join_token(self, rotate: bool = False) -> str:
        """The token remote workers join with (``rotate``: a new one; the old stops working —
        nodes that joined keep their own tokens)."""
        if rotate:
            await self.raw.put(JOIN_TOKEN, _new_join_token())
        return (await self._get_or_create(JOIN_TOKEN, _new_join_token)).decode()

    # ── events ───────────────────────────────────────────────────────────────────────────────

    async def record(
        self,
        kind: str,
        message: str,
        level: Level = Level.INFO,
        service: str | None = None,
        task: str | None = None,
        node: str | None = None,
    ) -> Event:
        now = self.clock.now()
        event = Event(
            id=f"{int(now * 1e9):020d}-{os.urandom(3).hex()}",
            time=now,
            kind=kind,
            message=message,
            level=level,
            service=service,
            task=task,
            node=node,
        )
        await self.raw.put(f"{EVENTS}{event.id}", encode(event))
        self._events_written += 1
        if self._events_written % 100 == 0:
            await self._trim_events()
        return event

    async def _trim_events(self) -> None:
        kvs, _ = await self.raw.range(EVENTS)
        if len(kvs) > EVENTS_KEPT:
            await self.raw.txn([], [Delete(kv.key) for kv in kvs[: len(kvs) - EVENTS_KEPT]])

    async def list_events(
        self, service: str | None = None, limit: int = 100, since: float | None = None
    ) -> list[Event]:
        """The newest ``limit`` kept events (of ``service``, at or after the Unix time
        ``since``), oldest first."""
        kvs, _ = await self.raw.range(EVENTS)
        events = [decode(Event, kv) for kv in kvs]
        if service:
            events = [e for e in events if e.service == service]
        if since is not None:
            events = [e for e in events if e.time >= since]
        return events[-limit:]

    async def kept_events(self) -> tuple[list[tuple[int, Event]], int]:
        """Every kept event with the store revision that wrote it, in the order they were
        written, and the revision the store was read at: a watch of ``EVENTS`` from the
        next one misses none written since."""
        kvs, revision = await self.raw.range(EVENTS)
        ordered = sorted(kvs, key=lambda kv: kv.mod_revision)
        return [(kv.mod_revision, decode(Event, kv)) for kv in ordered], revision


def _replaced(request: OperatorRequest, newer: OperatorRequest) -> ConflictError:
    return ConflictError(
        f"a newer request ({newer.intent}) replaced this {request.intent} before it was applied; "
        "nothing was done for this one"
    )


def _new_join_token() -> bytes:
    return f"wrn-join-{secrets.token_urlsafe(24)}".encode()


def _deployment_puts(deployment: Deployment, sequence: int) -> list[Op]:
    """A new deployment, and the record that its notifications are due (in the same write:
    a crash cannot leave one without the other)."""
    delivery = Delivery(deployment=deployment.id)
    return [
        Put(deployment_key(deployment.service, sequence), encode(deployment)),
        Put(notification_key(deployment.service, sequence), encode(delivery)),
    ]


def ops_for_tasks(tasks: Sequence[Task]) -> list[Op]:
    return [Put(task_key(t), encode(t)) for t in tasks]
