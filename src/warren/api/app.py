"""The FastAPI application: auth, error translation, and the routes.

Every route but ``/healthz`` and ``/metrics`` (and the OpenAPI document, ``/docs``, and the web
view's static page, ``/ui/``: ``webview``) needs ``Authorization: Bearer <admin token>``
(compared in constant time), checked before the body is read (``guards``); the worker routes
take a node's token instead. Every error — bad body, unknown service, lost race — is a 4xx with
``{"error": {"code", "message", "field"}}``; a 500 only for a bug, and it never leaks a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import shlex
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import __version__
from ..agent.environment import command_found
from ..domain.base import parse_model
from ..domain.deployments import Deployment
from ..domain.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    UnprocessableError,
    ValidationError,
)
from ..domain.events import Level
from ..domain.logs import parse_since
from ..domain.nodes import Node, NodeAvailability, NodeSummary
from ..domain.requests import Answer, Intent
from ..domain.services import Revision, RevisionEntry, Service
from ..domain.specs import NAME_PATTERN, ServiceSpec, patch_spec, spec_changes
from ..domain.tasks import Task
from ..domain.windows import Freeze, release_refusal
from ..planning.draining import drain_status
from ..planning.previewing import RolloutPlan, plan_fast_track, plan_rollout
from ..planning.releases import fast_track_target, newest_good_revision, starts_from
from ..planning.runnable import why_not_runnable
from ..store.cluster import ClusterStore
from ..tokens import NODE_NAME_PATTERN, NODE_TOKEN_PREFIX
from .admission import admit as admit_spec
from .errors import document_errors, error_responses, install_error_handlers
from .events import PING, EventStreams, event_routes
from .guards import GuardedRoute, bearer, guard
from .logs import LogFollow, read_logs, shown
from .nodes import FollowLogs, ReadLogs, node_routes
from .schemas import (
    FreezeRequest,
    JobRequest,
    PlanRequest,
    RollbackRequest,
    ScaleRequest,
    ServicePatch,
    ServiceSummary,
    TaskPatch,
    document_spec_change,
)
from .webview import mount_web_view
from .workers import AssignmentSource, RouteSource, TrafficSink, worker_routes

__all__ = ["ApiContext", "ClusterView", "create_app"]

log = logging.getLogger("warren.api")

REQUEST_WAIT = 5.0
"""How long an operator's request waits for the deployment controller's answer."""
PROMOTE_WAIT = 3.0
"""How long ``promote`` then waits for the switch (or step) to be decided."""


async def _admin(request: Request) -> None:
    """The admin bearer token, compared in constant time."""
    token = bearer(request)
    if hmac.compare_digest(token.encode(), request.app.state.token):
        return
    if token.startswith(NODE_TOKEN_PREFIX):
        raise ForbiddenError("a node's token is for its worker's calls only")
    raise AuthError("invalid token")


authorized = guard(
    _admin,
    "AdminToken",
    "The cluster's admin token: `admin.token` in the server's data dir.",
)
Auth = Annotated[None, Depends(authorized)]

ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, description="The service's name.")]
NodeName = Annotated[str, Path(pattern=NODE_NAME_PATTERN, description="The node's name.")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """An admin route's error answers: those of every such route (a bad parameter, no or a
    wrong token, a store that does not answer), and ``statuses``."""
    return error_responses(400, 401, 403, *sorted({*statuses}), 503)


_READ = _errors(404)
"""A route that reads one thing (a service, a task, a node …) by its name."""
_WRITE = _errors(404, 409, 413)
"""A route that changes something: it takes a body, and the cluster may refuse it."""
_ASK = _errors(404, 409)
"""A request the deployment controller answers (``_ask``): refused (409), or unanswered (503)."""
_SPEC = _errors(404, 409, 413, 422)
"""A route that takes a spec or a change of one: each value allowed, their combination not
(422)."""
_OBJECT = {"application/json": {"schema": {"type": "object"}}}


class ClusterView(Protocol):
    """Read-only, in-memory view of the cluster (the control plane's caches) for list
    endpoints; single objects are always read from the store."""

    def services(self) -> list[Service]: ...

    def tasks_by_service(self) -> Mapping[str, Iterable[Task]]: ...


@dataclass
class ApiContext:
    cluster: ClusterStore
    token: str
    view: ClusterView | None = None
    logs: ReadLogs | None = None
    follow: FollowLogs | None = None
    metrics: Callable[[], Awaitable[bytes]] | None = None
    """Prometheus' text, at scrape time (an ingress of its own process is asked then)."""
    info: Callable[[], Awaitable[dict[str, Any]]] | None = None
    assignments: AssignmentSource | None = None
    """The streams of remote workers (``control.assigning``)."""
    routes: RouteSource | None = None
    """The routing stream the ingress processes follow (``control.assigning``)."""
    traffic: TrafficSink | None = None
    """Takes the other nodes' ingress traffic (``control.traffic``)."""
    node: str = ""
    token_changed: Callable[[str], None] | None = None
    """Told of a new admin token (a rotation): the server keeps it in its data dir."""
    logs_token: Callable[[], Awaitable[str | None]] | None = None
    """This server runs tasks: other managers read their logs with this token."""
    event_streams: EventStreams = field(default_factory=EventStreams)
    """The open event streams, which the server ends when it stops."""
    event_ping: float = PING
    """Seconds between keep-alive pings on a quiet event stream."""
    reserved_ports: Mapping[int, str] = field(default_factory=dict)
    """The ports this server listens on, which no service may publish, each with what it is."""


TAIL_PATTERN = r"^(all|[1-9][0-9]{0,4}|100000)$"
"""``tail`` as the document states it; ``_tail_lines`` checks it."""
SINCE_PATTERN = (
    r"^([0-9]{1,8}|([0-9]{1,5}(ms|s|m|h)){1,4}"
    r"|(19|2[0-9])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]))$"
)
"""``since`` as the document states it, enough for a client to know the forms: every time it
matches, ``parse_since`` takes. Stated, not enforced: ``parse_since`` takes a little more (the
29th of February of a leap year) and refuses the rest in one line that names the forms."""


def _tail_lines(tail: str) -> int | None:
    """``tail``: a number of lines, or ``all`` (None)."""
    if tail == "all":
        return None
    if tail.isdigit() and 1 <= int(tail) <= 100_000:
        return int(tail)
    raise ValidationError(f"expected 1 to 100000 lines, or all, got {tail!r}", "tail")


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Warren",
        version=__version__,
        description="A small container orchestrator for safe releases.",
    )
    app.router.route_class = GuardedRoute
    document_errors(app)
    document_spec_change(app)
    cluster = ctx.cluster
    app.state.token = ctx.token.encode()
    app.state.cluster = cluster

    install_error_handlers(app)

    def admit(spec: ServiceSpec) -> ServiceSpec:
        return admit_spec(spec, ctx.reserved_ports)

    # ── open routes ──────────────────────────────────────────────────────────────────────────

    @app.get("/healthz", tags=["system"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["system"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        body = await ctx.metrics() if ctx.metrics else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    mount_web_view(app)
    app.include_router(worker_routes(cluster, ctx.assignments, ctx.traffic, ctx.routes))
    app.include_router(event_routes(cluster, authorized, ctx.event_streams, ctx.event_ping))
    if ctx.logs_token is not None and ctx.logs is not None and ctx.follow is not None:
        app.include_router(node_routes(ctx.node, ctx.logs_token, ctx.logs, ctx.follow))

    # ── services ─────────────────────────────────────────────────────────────────────────────

    @app.get("/v1/info", tags=["system"], responses=_errors())
    async def info(_: Auth) -> dict[str, Any]:
        return {"version": __version__, **(await ctx.info() if ctx.info else {})}

    @app.get("/v1/cluster/join-token", tags=["nodes"], responses=_errors())
    async def join_token(_: Auth, rotate: bool = False) -> dict[str, str]:
        """The token a remote worker joins with (``warren worker --token``); ``?rotate=true``
        replaces it (nodes that joined keep working)."""
        return {"token": await cluster.join_token(rotate)}

    @app.post("/v1/cluster/admin-token/rotate", tags=["nodes"], responses=_errors())
    async def rotate_admin_token(request: Request, _: Auth) -> dict[str, str]:
        """A new admin token in place of the one given: the old one stops working at once on
        this manager, and on every other as it sees the change; each rewrites its
        ``admin.token``. The answer is the only place the new token is sent: keep it."""
        token = await cluster.rotate_admin_token()
        request.app.state.token = token.encode()
        if ctx.token_changed is not None:
            ctx.token_changed(token)
        await cluster.record("cluster.admin_token", "the admin token was rotated")
        return {"token": token}

    @app.get("/v1/services", tags=["services"], responses=_errors())
    async def list_services(_: Auth, full: bool = False) -> list[dict[str, Any]]:
        """Summaries (ready/desired …); ``?full=true`` for the whole services."""
        if full:
            return [s.to_wire() for s in await cluster.list_services()]
        by_service: Mapping[str, Iterable[Task]]
        if ctx.view is not None:
            services = ctx.view.services()
            by_service = ctx.view.tasks_by_service()
        else:
            services = await cluster.list_services()
            grouped: dict[str, list[Task]] = defaultdict(list)
            for t in await cluster.list_tasks():
                grouped[t.service].append(t)
            by_service = grouped
        return [
            ServiceSummary.of(s, by_service.get(s.name, ())).to_wire()
            for s in sorted(services, key=lambda s: s.name)
        ]

    @app.post("/v1/services", tags=["services"], status_code=201, responses=_errors(409, 413, 422))
    async def create_service(spec: ServiceSpec, _: Auth) -> dict[str, Any]:
        service = await cluster.create_service(admit(spec))
        await cluster.record("service.created", f"service {spec.name} created", service=spec.name)
        return service.to_wire()

    @app.get("/v1/services/{name}", tags=["services"], responses=_READ)
    async def get_service(name: ServiceName, _: Auth) -> dict[str, Any]:
        service, _kv = await cluster.get_service(name)
        return service.to_wire()

    @app.put(
        "/v1/services/{name}",
        tags=["services"],
        responses={201: {"description": "Created", "content": _OBJECT}, **_SPEC},
    )
    async def apply_service(
        name: ServiceName,
        spec: ServiceSpec,
        _: Auth,
        override: Annotated[
            bool, Query(description="Start a release outside its windows or in a freeze.")
        ] = False,
    ) -> JSONResponse:
        """Create the service, or replace its spec (a new revision when the template changed;
        the deployment it starts is in ``deployment``)."""
        if spec.name != name:
            raise UnprocessableError(f"does not match the URL ({name!r})", "name")
        admit(spec)
        try:
            before, _kv = await cluster.get_service(name)
            service, changed = await cluster.update_service(
                name, lambda _old: spec, "apply", override=override
            )
        except NotFoundError:
            service = await cluster.create_service(spec)
            await cluster.record("service.created", f"service {name} created", service=name)
            return JSONResponse({**service.to_wire(), "result": "created"}, status_code=201)
        result = "updated" if changed else "unchanged"
        if changed:
            await _record_update(service)
        started = await _started(before, service)
        return JSONResponse({**service.to_wire(), "result": result, **started})

    async def _record_update(service: Service) -> None:
        await cluster.record(
            "service.updated",
            f"service {service.name} updated to revision {service.revision}",
            service=service.name,
        )

    @app.patch("/v1/services/{name}", tags=["services"], responses=_SPEC)
    async def patch_service(name: ServiceName, patch: ServicePatch, _: Auth) -> dict[str, Any]:
        """Change some fields; ``spec.env`` merges into the current env, ``envRm`` removes.
        A change of the template starts a deployment (its id is in ``deployment``)."""
        cause = patch.cause or ("update --force" if patch.force else "update")
        before, _kv = await cluster.get_service(name)
        service, changed = await cluster.update_service(
            name,
            lambda spec: admit(patch_spec(spec, patch.spec, patch.env_rm)),
            cause,
            force=patch.force,
            override=patch.override,
        )
        if changed:
            await _record_update(service)
        return {
            **service.to_wire(),
            "result": "updated" if changed else "unchanged",
            **await _started(before, service),
        }

    async def _started(before: Service, after: Service) -> dict[str, Any]:
        if after.revision == before.revision:
            return {}
        latest = await cluster.latest_deployment(after.name)
        return {"deployment": latest[0].id} if latest else {}

    @app.post("/v1/services/{name}/plan", tags=["deployments"], responses=_SPEC)
    async def plan(name: ServiceName, patch: PlanRequest, _: Auth) -> dict[str, Any]:
        """The rollout a change would perform — each step with tasks per revision, weights,
        analysis windows and its earliest time; the peak task count; the spec's ``changes``,
        field by field (``path``, ``old``, ``new``, ``newTasks``) — without performing it.
        ``spec`` is a partial change, or with ``replace: true`` a whole spec."""
        service, _kv = await cluster.get_service(name)
        new = (
            parse_model(ServiceSpec, patch.spec, "spec")
            if patch.replace
            else patch_spec(service.spec, patch.spec, patch.env_rm)
        )
        admit(new)  # refused here as the change itself would be: nothing then to show
        plan = await _plan(service, new)
        windows = service.spec.deploy.windows
        held = release_refusal(name, windows, await cluster.list_freezes(), cluster.clock.now())
        if plan.strategy == "none":
            held = None  # no release to hold
        elif held is None and windows:
            held = f"deployment windows: {'; '.join(w.describe() for w in windows)} (open now)"
        notes = (*plan.notes, held) if held else plan.notes
        changes = spec_changes(service.spec, new)
        return dataclasses.replace(plan, changes=changes, notes=notes).to_wire()

    async def _plan(service: Service, new: ServiceSpec) -> RolloutPlan:
        name = service.name
        latest = await cluster.latest_deployment(name)
        active = latest[0] if latest else None
        start = starts_from(active, service.revision)
        current = service.spec
        if start != service.revision and not current.same_template(new):
            # A new revision over an unpromoted release: it starts from the stable one.
            current = (await cluster.get_revision(name, start)).spec
            if fast_track_target(active, {start: current}.get, new) is not None:
                return plan_fast_track(service.revision, start, new.replicas)
        return plan_rollout(current, start, new, await cluster.next_revision(name))

    @app.post("/v1/services/{name}/scale", tags=["services"], responses=_WRITE)
    async def scale_service(name: ServiceName, body: ScaleRequest, _: Auth) -> dict[str, Any]:
        service, _changed = await cluster.update_service(
            name, lambda spec: spec.model_copy(update={"replicas": body.replicas}), "scale"
        )
        await cluster.record(
            "service.scaled", f"service {name} scaled to {body.replicas}", service=name
        )
        return service.to_wire()

    @app.delete("/v1/services/{name}", tags=["services"], responses=_errors(404, 409))
    async def delete_service(name: ServiceName, _: Auth) -> dict[str, Any]:
        await cluster.delete_service(name)
        await cluster.record("service.removed", f"service {name} removed", service=name)
        return {"name": name, "result": "removed"}

    @app.get("/v1/services/{name}/tasks", tags=["tasks"], responses=_READ)
    async def service_tasks(name: ServiceName, _: Auth) -> list[dict[str, Any]]:
        await cluster.get_service(name)
        return [t.to_wire() for t in await cluster.list_tasks(name)]

    @app.get("/v1/services/{name}/jobs", tags=["tasks"], responses=_READ)
    async def service_jobs(name: ServiceName, _: Auth) -> list[dict[str, Any]]:
        """The service's jobs kept, oldest first: its releases' pre- and post-deploy jobs and
        ``warren run``'s, each a task in no slot."""
        await cluster.get_service(name)
        jobs = [t for t in await cluster.list_tasks(name, jobs=True) if t.job is not None]
        return [t.to_wire() for t in sorted(jobs, key=lambda t: (t.created_at, t.id))]

    @app.post(
        "/v1/services/{name}/jobs", tags=["tasks"], status_code=201, responses=_errors(404, 409)
    )
    async def run_job(name: ServiceName, body: JobRequest, _: Auth) -> dict[str, Any]:
        """Run ``command`` once as a job of the service's current revision (its image or
        command, env and placement), stopped after ``timeout`` if given: ``warren run``. Its
        logs: ``GET /v1/services/NAME/logs?task=ID``."""
        job = await cluster.start_job(name, body.command, body.timeout)
        await cluster.record(
            "job.started", f"job {job.id}: {shlex.join(body.command)}", service=name
        )
        return job.to_wire()

    @app.get(
        "/v1/services/{name}/revisions",
        tags=["services"],
        response_model_exclude_none=True,
        responses=_READ,
    )
    async def revisions(name: ServiceName, _: Auth) -> list[RevisionEntry]:
        """Every revision kept (oldest first), marked ``current`` (the service's spec now) and
        ``stable`` (what the last good release left serving)."""
        service, _kv = await cluster.get_service(name)
        deployments = await cluster.list_deployments(name)
        # No deployment yet: the service runs the revision it was created with.
        stable = newest_good_revision(deployments) if deployments else service.revision
        return [
            RevisionEntry(
                **dict(r), current=r.number == service.revision, stable=r.number == stable
            )
            for r in await cluster.list_revisions(name)
        ]

    @app.get("/v1/services/{name}/revisions/{number}", tags=["services"], responses=_READ)
    async def revision(name: ServiceName, number: int, _: Auth) -> dict[str, Any]:
        rev: Revision = await cluster.get_revision(name, number)
        return rev.to_wire()

    @app.get(
        "/v1/services/{name}/logs",
        tags=["tasks"],
        response_model=None,
        responses={
            200: {"content": {**_OBJECT, "application/x-ndjson": {"schema": {"type": "string"}}}},
            **_READ,
        },
    )
    async def logs(
        name: ServiceName,
        _: Auth,
        tail: Annotated[
            str, Query(description="1 to 100000 lines, or all", pattern=TAIL_PATTERN)
        ] = "100",
        since: Annotated[
            str | None,
            Query(
                description="A duration back from now (10m), or an RFC 3339 time",
                json_schema_extra={"pattern": SINCE_PATTERN},
            ),
        ] = None,
        task: str | None = None,
        follow: bool = False,
        job: Annotated[
            bool,
            Query(description="The service's newest job (pre-deploy, post-deploy, run) instead"),
        ] = False,
    ) -> dict[str, Any] | StreamingResponse:
        """The last ``tail`` lines of each task (read at ``since`` or later), merged by the time
        each line was read: ``{"task", "time", "line"}``. ``follow``: then every new line as it
        comes, one JSON object per line, with the tasks that start meanwhile and an entry with
        ``event`` when a task starts or ends, until the client goes. ``task`` (a task or a job)
        or ``job``: that one alone."""
        lines = _tail_lines(tail)
        cut = parse_since(since, cluster.clock.now()) if since is not None else None
        await cluster.get_service(name)
        tasks = await cluster.list_tasks(name, jobs=True)
        if job and task is None:
            jobs = [t for t in tasks if t.job is not None]
            if not jobs:
                raise NotFoundError(f"service {name!r} has no job (none ran, or none is kept)")
            task = max(jobs, key=lambda t: (t.created_at, t.id)).id
        if task is not None and not any(t.id == task for t in tasks):
            raise NotFoundError(f"task {task!r} of service {name!r} not found")
        if ctx.logs is None or ctx.follow is None:
            raise UnavailableError("this server runs no worker: no logs to read")
        if not follow:
            chosen = shown(
                t for t in tasks if (t.id == task if task is not None else t.job is None)
            )
            return {"service": name, "lines": await read_logs(chosen, ctx.logs, lines, cut)}
        stream = LogFollow(cluster, name, task, lines, cut, ctx.logs, ctx.follow, cluster.clock.now)
        return StreamingResponse(stream.stream(), media_type="application/x-ndjson")

    # ── deployments ──────────────────────────────────────────────────────────────────────────

    @app.get("/v1/services/{name}/deployment", tags=["deployments"], responses=_READ)
    async def deployment_status(name: ServiceName, _: Auth) -> dict[str, Any]:
        """The service's rollout status: tasks, and its newest deployment's phase and step."""
        return (await cluster.deployment_status(name)).to_wire()

    @app.get("/v1/services/{name}/deployments", tags=["deployments"], responses=_READ)
    async def deployment_history(name: ServiceName, _: Auth) -> list[dict[str, Any]]:
        """Every deployment kept (oldest first), each with its decision log."""
        await cluster.get_service(name)
        return [d.to_wire() for d in await cluster.list_deployments(name)]

    @app.get(
        "/v1/services/{name}/deployments/{deployment_id}", tags=["deployments"], responses=_READ
    )
    async def get_deployment(name: ServiceName, deployment_id: str, _: Auth) -> dict[str, Any]:
        for d in await cluster.list_deployments(name):
            if d.id == deployment_id:
                return d.to_wire()
        raise NotFoundError(f"deployment {deployment_id!r} of service {name!r} not found")

    async def _ask(
        name: str, intent: Intent, full: bool = False, force: bool = False
    ) -> Deployment:
        """Store the operator's request, wait for the deployment controller's answer (it alone
        writes deployments), and return the deployment as it left it. Refused: 409 with the
        reason; no answer in time (no leader): withdrawn, 503 — nothing was done."""
        await cluster.get_service(name)
        asked = await cluster.ask(name, intent, full, force)
        answered = await cluster.answer_of(asked, REQUEST_WAIT)
        if answered is None:
            raise UnavailableError(
                f"no manager applied the {intent} within {REQUEST_WAIT:g}s (is a leader "
                "elected?); nothing was done — try again"
            )
        if answered.answer == Answer.REFUSED:
            raise ConflictError(answered.message)
        for d in await cluster.list_deployments(name):
            if d.id == asked.deployment:
                return d
        raise NotFoundError(f"deployment {asked.deployment} of service {name!r} is gone")

    @app.post("/v1/services/{name}/deployment/pause", tags=["deployments"], responses=_ASK)
    async def pause(name: ServiceName, _: Auth) -> dict[str, Any]:
        """Pause the active rollout: no new batch or step until resumed."""
        return (await _ask(name, Intent.PAUSE)).to_wire()

    @app.post("/v1/services/{name}/deployment/resume", tags=["deployments"], responses=_ASK)
    async def resume(name: ServiceName, _: Auth) -> dict[str, Any]:
        return (await _ask(name, Intent.RESUME)).to_wire()

    @app.post("/v1/services/{name}/deployment/promote", tags=["deployments"], responses=_ASK)
    async def promote(
        name: ServiceName, _: Auth, full: bool = False, force: bool = False
    ) -> dict[str, Any]:
        """Canary: skip the current pause (``full``: every remaining step). Blue/green: switch
        now. Refused (409) while the new revision's tasks are not all ready, unless ``force``."""
        d = await _ask(name, Intent.PROMOTE, full, force)
        return (await _applied(d)).to_wire()

    async def _applied(asked: Deployment) -> Deployment:
        """The deployment once its controller has acted on the promotion (the blue/green switch
        or the next canary step decided), so that the answer means it took effect; bounded —
        webhooks may hold it longer, and then the answer is the promotion still pending."""
        latest = asked
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROMOTE_WAIT):
                while latest.promote and latest.active:
                    await asyncio.sleep(0.002)
                    found = await cluster.latest_deployment(asked.service)
                    if found is None or found[0].id != asked.id:
                        break
                    latest = found[0]
        return latest

    @app.post("/v1/services/{name}/deployment/abort", tags=["deployments"], responses=_ASK)
    async def abort(name: ServiceName, _: Auth) -> dict[str, Any]:
        """Stop the active rollout and go back to the revision it started from (the answer is
        the aborted deployment; its rollback follows at once)."""
        return (await _ask(name, Intent.ABORT)).to_wire()

    # ── the store ────────────────────────────────────────────────────────────────────────────

    @app.get(
        "/v1/store/backup",
        tags=["system"],
        responses={
            200: {"content": {"application/vnd.sqlite3": {}}, "description": "The backup."},
            **_errors(409),
        },
    )
    async def store_backup(_: Auth) -> Response:
        """A consistent copy of the whole store, as a SQLite file (``warren store backup``;
        ``warren store restore`` puts it back, the server stopped). The sqlite store only: 409
        for etcd (its own snapshots) and memory."""
        body, revision = await cluster.backup()
        await cluster.record("store.backup", f"store backed up at revision {revision}")
        headers = {
            "Content-Disposition": f'attachment; filename="warren-{revision}.db"',
            "X-Warren-Revision": str(revision),
        }
        return Response(body, media_type="application/vnd.sqlite3", headers=headers)

    # ── freezes ──────────────────────────────────────────────────────────────────────────────

    @app.get("/v1/freezes", tags=["deployments"], responses=_errors())
    async def list_freezes(_: Auth) -> list[dict[str, Any]]:
        """The freezes that hold now: no release of ``service`` (absent: of any) before
        ``until``."""
        return [f.to_wire() for f in await cluster.list_freezes()]

    @app.post(
        "/v1/freezes", tags=["deployments"], status_code=201, responses=_errors(404, 413, 422)
    )
    async def freeze(body: FreezeRequest, _: Auth) -> dict[str, Any]:
        """Freeze the releases of ``service`` (absent: of every service) until ``until`` (Unix
        time), with ``reason``: an update that would start one is refused (409) unless it says
        ``override``; a rollback still runs. Replaces the freeze of that scope."""
        if body.until <= cluster.clock.now():
            raise UnprocessableError("must be in the future", "until")
        made = await cluster.put_freeze(
            Freeze(service=body.service, until=body.until, reason=body.reason)
        )
        scope = f"service {body.service}" if body.service else "every service"
        await cluster.record(
            "freeze", f"releases of {scope} frozen: {body.reason}", service=body.service
        )
        return made.to_wire()

    @app.delete("/v1/freezes", tags=["deployments"], responses=_errors(404))
    async def unfreeze(
        _: Auth,
        service: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    ) -> dict[str, Any]:
        """End the freeze of ``service`` (absent: the one of every service); answers it."""
        ended = await cluster.delete_freeze(service)
        scope = f"service {service}" if service else "every service"
        await cluster.record("unfreeze", f"releases of {scope} unfrozen", service=service)
        return ended.to_wire()

    @app.post("/v1/services/{name}/rollback", tags=["deployments"], responses=_WRITE)
    async def rollback(name: ServiceName, body: RollbackRequest, _: Auth) -> dict[str, Any]:
        """Go back to the previous revision (or ``toRevision``): a rollback deployment — refused
        (409, nothing changed) when the target cannot run (``planning.runnable``)."""
        local = ctx.node if ctx.logs_token is not None else None  # this server runs tasks

        async def check(revision: Revision) -> str | None:
            def found(executable: str) -> bool:
                return command_found(revision.spec, executable)

            return why_not_runnable(revision, await cluster.list_nodes(), local, found)

        service, d, _rev = await cluster.rollback_service(name, body.to_revision, check=check)
        await cluster.record(
            "deployment.rollback",
            f"service {name}: rollback to revision {d.to_revision} ({d.id})",
            service=name,
        )
        return {**service.to_wire(), "deployment": d.id}

    # ── tasks, nodes ─────────────────────────────────────────────────────────────────────────

    @app.get("/v1/tasks", tags=["tasks"], responses=_errors())
    async def list_tasks(_: Auth, service: str | None = None) -> list[dict[str, Any]]:
        return [t.to_wire() for t in await cluster.list_tasks(service)]

    @app.get("/v1/tasks/{task_id}", tags=["tasks"], responses=_READ)
    async def get_task(task_id: str, _: Auth) -> dict[str, Any]:
        task, _kv = await cluster.get_task(task_id)
        return task.to_wire()

    @app.patch("/v1/tasks/{task_id}", tags=["tasks"], responses=_WRITE)
    async def patch_task(task_id: str, body: TaskPatch, _: Auth) -> dict[str, Any]:
        """``{"desiredState": "shutdown"}`` stops a task; the reconciler replaces it."""
        return (await cluster.set_desired_state(task_id, body.desired_state)).to_wire()

    @app.get("/v1/nodes", tags=["nodes"], responses=_errors())
    async def list_nodes(_: Auth) -> list[dict[str, Any]]:
        """Every node with its task count and, while it drains, how far that has come."""
        nodes = await cluster.list_nodes()
        tasks = [t for t in await cluster.list_tasks(jobs=True) if t.state.active]
        return [_node_summary(n, tasks).to_wire() for n in nodes]

    @app.get("/v1/nodes/{name}", tags=["nodes"], responses=_READ)
    async def get_node(name: NodeName, _: Auth) -> dict[str, Any]:
        """One node, with its tasks (``taskList``)."""
        node = await cluster.get_node(name)
        tasks = [t for t in await cluster.list_tasks(jobs=True) if t.state.active]
        return _node_summary(node, tasks, detail=True).to_wire()

    async def _set_availability(name: str, availability: NodeAvailability) -> dict[str, Any]:
        before = await cluster.get_node(name)
        node = await cluster.set_node_availability(name, availability)
        if before.availability != availability:
            what = "drained: its tasks move to other nodes" if node.draining else "active"
            await cluster.record(f"node.{availability}", f"node {name} {what}", node=name)
        tasks = [t for t in await cluster.list_tasks(jobs=True) if t.state.active]
        return _node_summary(node, tasks).to_wire()

    @app.post("/v1/nodes/{name}/drain", tags=["nodes"], responses=_errors(404, 409))
    async def drain_node(name: NodeName, _: Auth) -> dict[str, Any]:
        """No new tasks on the node; its tasks move to other nodes without dropping requests
        (each replacement is ready before the old task is drained and stopped). A task no other
        node can take keeps running, and the node's ``drain`` says why."""
        return await _set_availability(name, NodeAvailability.DRAIN)

    @app.post("/v1/nodes/{name}/activate", tags=["nodes"], responses=_errors(404, 409))
    async def activate_node(name: NodeName, _: Auth) -> dict[str, Any]:
        """The node takes new tasks again; tasks that moved away are not moved back."""
        return await _set_availability(name, NodeAvailability.ACTIVE)

    @app.delete("/v1/nodes/{name}", tags=["nodes"], responses=_errors(404, 409))
    async def remove_node(name: NodeName, _: Auth) -> dict[str, Any]:
        """Forget a node that is down for good; its tasks end as stopped (409 for a node that
        is ready)."""
        ended = await cluster.remove_node(name)
        message = f"node {name} removed ({len(ended)} task(s) of it ended)"
        await cluster.record("node.removed", message, Level.WARNING, node=name)
        return {"node": name, "tasksEnded": ended}

    return app


def _node_summary(node: Node, active: list[Task], detail: bool = False) -> NodeSummary:
    """``active``: the cluster's active tasks."""
    mine = [t for t in active if t.node == node.name]
    return NodeSummary(
        node=node,
        tasks=len(mine),
        drain=drain_status(node.name, active) if node.draining else None,
        task_list=tuple(sorted(mine, key=lambda t: (t.service, t.slot))) if detail else None,
    )
