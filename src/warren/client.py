"""The HTTP client of Warren's API (httpx), used by the CLI, the demo and ``warren.deploy``.

Configuration: ``WARREN_ADDR`` (default ``http://127.0.0.1:7070``; ``https://…`` for a server
with a certificate, verified with the CA bundle of ``WARREN_CA``, else the usual public ones); the
token from ``WARREN_TOKEN``, else the ``admin.token`` file of ``WARREN_DATA_DIR`` / the default
data dir. Every failure is a ``WarrenError`` with one clear message: the server's own error,
"cannot reach the Warren server at …", or "cannot verify the server's certificate at …".

``verifying`` and ``unverified`` serve every HTTP client of Warren's API (the worker's and the
ingress's ``linking``, the managers' ``peers`` and ``reporting``): one way to trust a server,
and one way to say it could not be trusted.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .domain.errors import (
    AuthError,
    UnavailableError,
    ValidationError,
    WarrenError,
    error_for_code,
)
from .paths import default_data_dir, token_path

if TYPE_CHECKING:  # imported where used: the CLI starts without pydantic (`warren service ls`)
    from .domain.deployments import Deployment, DeploymentStatus
    from .domain.events import Event
    from .domain.nodes import Node, NodeSummary
    from .domain.services import RevisionEntry, Service
    from .domain.specs import ServiceSpec
    from .domain.tasks import Task

__all__ = ["DEFAULT_ADDR", "Client", "api_error", "unverified", "verifying"]

DEFAULT_ADDR = "http://127.0.0.1:7070"
RECONNECTS = 10
"""How many times in a row ``stream_events`` opens a lost stream again (about 13 s in all):
long enough for a server to restart."""
STREAM_SILENCE = 60.0
"""An event stream that sends nothing for this long (four of the server's 15 s pings) is
taken for a dead connection, and opened again."""


def _find_token(data_dir: Path | None) -> str | None:
    if os.environ.get("WARREN_TOKEN"):
        return os.environ["WARREN_TOKEN"].strip()
    path = token_path(data_dir or default_data_dir())
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def verifying(ca: str | None = None, pinned: str | None = None) -> ssl.SSLContext | bool:
    """How to verify a Warren API served over https, as httpx's ``verify``: with the CA bundle
    ``ca`` (PEM), or — ``pinned``, a server's own certificate chain file — by that exact
    certificate whatever name it is reached by (a server gives its own to the ingress process
    it supervises, which reaches it on 127.0.0.1 whatever names the certificate has); neither:
    httpx's default bundle. Raises ValidationError, in one line, for a file that cannot load."""
    if pinned:
        return _pinned(pinned)
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ValidationError(f"cannot load the CA bundle {ca}: {_said(exc)}", "--ca") from None


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pinned(chain: str) -> ssl.SSLContext:
    """Trusts the first certificate of ``chain`` alone, as an anchor of its own (a partial
    chain): only a server holding its key passes; its names are not checked."""
    try:
        with open(chain, "rb") as f:
            first = _PEM_CERT.search(f.read())
        if first is None:
            raise ssl.SSLError("no PEM certificate in it")
        context = ssl.create_default_context(cadata=first.group(0).decode("ascii"))
    except (ssl.SSLError, OSError) as exc:
        raise ValidationError(f"cannot load the certificate {chain}: {_said(exc)}") from None
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _said(exc: ssl.SSLError | OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def unverified(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, if that is what ``exc`` (an httpx error)
    came of: OpenSSL's words ("unable to get local issuer certificate")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def api_error(response: httpx.Response) -> WarrenError | None:
    """The error an API answer carries (``{"error": {"code", "message", "field"}}``), if any."""
    if response.status_code < 400:
        return None
    try:
        err = response.json()["error"]
        return error_for_code(err.get("code", ""), err["message"], err.get("field"))
    except (ValueError, KeyError, TypeError):
        return None


class Client:
    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        *,
        data_dir: Path | None = None,
        timeout: float = 30.0,
        ca: str | None = None,
    ) -> None:
        """``ca``: the CA bundle that verifies an https server (default: ``WARREN_CA``, else
        the usual public CAs)."""
        self.addr = (addr or os.environ.get("WARREN_ADDR") or DEFAULT_ADDR).rstrip("/")
        if "://" not in self.addr:
            self.addr = f"http://{self.addr}"
        self._data_dir = data_dir
        self.token = token or _find_token(data_dir)
        self._http = httpx.Client(
            base_url=self.addr,
            headers={"User-Agent": "warren-client"},
            timeout=timeout,
            # Every request goes to base_url: over plain HTTP no certificate is ever checked, so
            # skip loading the CA bundle (70 ms at each CLI command).
            verify=False
            if self.addr.startswith("http://")
            else verifying(ca or os.environ.get("WARREN_CA")),
        )
        self._authorize()

    def _authorize(self) -> None:
        # A server started a moment ago may not have written its token yet: look again.
        if not self.token:
            self.token = _find_token(self._data_dir)
        if self.token:
            self._http.headers["Authorization"] = f"Bearer {self.token}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── transport ────────────────────────────────────────────────────────────────────────────

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        error = api_error(response)
        if error is not None:
            raise error
        if response.status_code == 401 and not self.token:
            raise AuthError(
                "no token: set WARREN_TOKEN, or WARREN_DATA_DIR to the server's data directory"
            )
        raise WarrenError(f"server answered {response.status_code}: {response.text[:200]}")

    def _unreachable(self, exc: httpx.ConnectError) -> UnavailableError:
        why = unverified(exc)
        if why is not None:
            return UnavailableError(
                f"cannot verify the server's certificate at {self.addr}: {why} "
                "(give its CA bundle with --ca or WARREN_CA)"
            )
        return UnavailableError(
            f"cannot reach the Warren server at {self.addr} (is `warren server` running?)"
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._authorize()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from None
        except httpx.TimeoutException:
            raise UnavailableError(
                f"the Warren server at {self.addr} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise UnavailableError(f"talking to {self.addr} failed: {exc}") from None
        if response.status_code == 401 and not self.token:
            raise AuthError(
                "no token: set WARREN_TOKEN, or WARREN_DATA_DIR to the server's data directory"
            )
        self._raise_for(response)
        return response

    def backup_store(self) -> tuple[bytes, int]:
        """A consistent copy of the store (a SQLite file's bytes) and the revision it holds."""
        response = self._send("GET", "/v1/store/backup", timeout=httpx.Timeout(30, read=300))
        return response.content, int(response.headers.get("X-Warren-Revision", "0"))

    # ── services ─────────────────────────────────────────────────────────────────────────────

    def health(self) -> bool:
        try:
            return bool(self._http.get("/healthz", timeout=2).status_code == 200)
        except httpx.HTTPError:
            return False

    def info(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/info"))

    def create_service(self, spec: ServiceSpec) -> Service:
        from .domain.services import Service

        return Service.model_validate(self.request("POST", "/v1/services", json=spec.to_wire()))

    def apply_service(
        self, spec: ServiceSpec, override: bool = False
    ) -> tuple[Service, str, str | None]:
        """Create or replace; returns the service, ``created|updated|unchanged`` and the
        deployment the change started, if any. ``override``: start a release outside the
        service's deployment windows or in a freeze."""
        from .domain.services import Service

        params = {"override": "true"} if override else None
        path = f"/v1/services/{spec.name}"
        body = self.request("PUT", path, json=spec.to_wire(), params=params)
        result = body.pop("result")
        deployment = body.pop("deployment", None)
        return Service.model_validate(body), str(result), deployment

    def get_service(self, name: str) -> Service:
        from .domain.services import Service

        return Service.model_validate(self.request("GET", f"/v1/services/{name}"))

    def list_services(self) -> list[Service]:
        from .domain.services import Service

        return [
            Service.model_validate(s)
            for s in self.request("GET", "/v1/services", params={"full": "true"})
        ]

    def service_summaries(self) -> list[dict[str, Any]]:
        """One row per service: replicas ready/desired, version, ports … (``service ls``)."""
        return list(self.request("GET", "/v1/services"))

    def update_service(self, service: ServiceSpec) -> Service:
        """Replace a service's spec (a changed template starts a deployment)."""
        return self.apply_service(service)[0]

    def patch_service(
        self,
        name: str,
        changes: dict[str, Any],
        env_rm: list[str] | None = None,
        cause: str = "",
        force: bool = False,
        override: bool = False,
    ) -> tuple[Service, bool, str | None]:
        """Partial update: camelCase ``changes`` merged into the spec. Returns (service,
        whether anything changed, the id of the deployment it started if any). ``force``:
        redeploy — a new revision and every task replaced — even if nothing changes."""
        from .domain.services import Service

        sent: dict[str, Any] = {"spec": changes, "envRm": env_rm or [], "cause": cause}
        if force:
            sent["force"] = True
        if override:
            sent["override"] = True
        body = self.request("PATCH", f"/v1/services/{name}", json=sent)
        result = body.pop("result")
        deployment = body.pop("deployment", None)
        return Service.model_validate(body), result == "updated", deployment

    def plan(
        self,
        name: str,
        changes: dict[str, Any],
        env_rm: list[str] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """What a change would do, step by step, without doing it (``warren deploy plan``)."""
        body = {"spec": changes, "envRm": env_rm or [], "replace": replace}
        return dict(self.request("POST", f"/v1/services/{name}/plan", json=body))

    def freeze(self, until: float, reason: str, service: str | None = None) -> dict[str, Any]:
        """No release of ``service`` (None: of any service) before ``until`` (Unix time)."""
        body = {"until": until, "reason": reason, **({"service": service} if service else {})}
        return dict(self.request("POST", "/v1/freezes", json=body))

    def unfreeze(self, service: str | None = None) -> None:
        self.request("DELETE", "/v1/freezes", params={"service": service} if service else None)

    def list_freezes(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/freezes"))

    def scale_service(self, name: str, replicas: int) -> Service:
        from .domain.services import Service

        body = self.request("POST", f"/v1/services/{name}/scale", json={"replicas": replicas})
        return Service.model_validate(body)

    def delete_service(self, name: str) -> None:
        self.request("DELETE", f"/v1/services/{name}")

    def list_jobs(self, service: str) -> list[Task]:
        """The service's jobs kept, oldest first (pre-deploy, post-deploy, run)."""
        from .domain.tasks import Task

        return [Task.model_validate(t) for t in self.request("GET", f"/v1/services/{service}/jobs")]

    def run_job(self, service: str, command: Sequence[str], timeout: float | None = None) -> Task:
        """Run ``command`` once as a job of the service's current revision (``warren run``)."""
        from .domain.tasks import Task

        body: dict[str, Any] = {"command": list(command)}
        if timeout is not None:
            body["timeout"] = timeout
        return Task.model_validate(self.request("POST", f"/v1/services/{service}/jobs", json=body))

    def list_tasks(self, service: str | None = None) -> list[Task]:
        from .domain.tasks import Task

        path = f"/v1/services/{service}/tasks" if service else "/v1/tasks"
        return [Task.model_validate(t) for t in self.request("GET", path)]

    def list_tasks_by_service(self, service_id: str) -> list[Task]:
        return self.list_tasks(service_id)

    def get_task(self, task_id: str) -> Task:
        from .domain.tasks import Task

        return Task.model_validate(self.request("GET", f"/v1/tasks/{task_id}"))

    def update_task(self, task: Task) -> Task:
        """Only the desired state travels: ``shutdown`` stops the task."""
        from .domain.tasks import Task

        body = {"desiredState": str(task.desired_state)}
        return Task.model_validate(self.request("PATCH", f"/v1/tasks/{task.id}", json=body))

    # ── deployments ──────────────────────────────────────────────────────────────────────────

    def deployment_status(self, service: str) -> DeploymentStatus:
        from .domain.deployments import DeploymentStatus

        return DeploymentStatus.model_validate(
            self.request("GET", f"/v1/services/{service}/deployment")
        )

    def list_deployments(self, service: str) -> list[Deployment]:
        from .domain.deployments import Deployment

        return [
            Deployment.model_validate(d)
            for d in self.request("GET", f"/v1/services/{service}/deployments")
        ]

    def get_deployment(self, service: str, deployment_id: str) -> Deployment:
        from .domain.deployments import Deployment

        return Deployment.model_validate(
            self.request("GET", f"/v1/services/{service}/deployments/{deployment_id}")
        )

    def pause_deployment(self, service: str) -> Deployment:
        from .domain.deployments import Deployment

        path = f"/v1/services/{service}/deployment/pause"
        return Deployment.model_validate(self.request("POST", path))

    def resume_deployment(self, service: str) -> Deployment:
        from .domain.deployments import Deployment

        path = f"/v1/services/{service}/deployment/resume"
        return Deployment.model_validate(self.request("POST", path))

    def promote_deployment(
        self, service: str, full: bool = False, force: bool = False
    ) -> Deployment:
        """Refused (ConflictError) while the new revision's tasks are not all ready, unless
        ``force``."""
        from .domain.deployments import Deployment

        path = f"/v1/services/{service}/deployment/promote"
        params = {k: "true" for k, on in (("full", full), ("force", force)) if on}
        return Deployment.model_validate(self.request("POST", path, params=params))

    def abort_deployment(self, service: str) -> Deployment:
        """Returns the aborted deployment (rolling back to the revision it started from, or
        failed)."""
        from .domain.deployments import Deployment

        path = f"/v1/services/{service}/deployment/abort"
        return Deployment.model_validate(self.request("POST", path))

    def rollback_service(self, service: str, to_revision: int | None = None) -> tuple[Service, str]:
        """Start a rollback; returns the service (now on the target revision) and the id of the
        rollback deployment."""
        from .domain.services import Service

        body = self.request(
            "POST", f"/v1/services/{service}/rollback", json={"toRevision": to_revision}
        )
        deployment = body.pop("deployment")
        return Service.model_validate(body), str(deployment)

    def list_revisions(self, service: str) -> list[RevisionEntry]:
        """Every revision kept, oldest first, marked current and stable."""
        from .domain.services import RevisionEntry

        return [
            RevisionEntry.model_validate(r)
            for r in self.request("GET", f"/v1/services/{service}/revisions")
        ]

    def logs(
        self,
        service: str,
        tail: int | None = 100,
        task: str | None = None,
        since: str | None = None,
        job: bool = False,
    ) -> list[dict[str, str]]:
        """The last ``tail`` lines of each task (None: all) written at ``since`` or later (a
        duration back from now, ``10m``, or an RFC 3339 time), merged by time: each
        ``{"task", "time", "line"}``. ``task``: that task (or job) alone; ``job``: the
        service's newest job alone."""
        params = _logs_params(tail, task, since, job)
        return list(self.request("GET", f"/v1/services/{service}/logs", params=params)["lines"])

    def follow_logs(
        self,
        service: str,
        tail: int | None = 100,
        task: str | None = None,
        since: str | None = None,
        job: bool = False,
    ) -> Iterator[dict[str, str]]:
        """What ``logs`` returns, then every new line — of the tasks that start meanwhile too —
        and an entry with ``event`` (``started``, ``ended``) when a task starts or ends, until
        the connection ends."""
        params = {**_logs_params(tail, task, since, job), "follow": "true"}
        self._authorize()
        try:
            with self._http.stream(
                "GET", f"/v1/services/{service}/logs", params=params,
                timeout=httpx.Timeout(30, read=None),
            ) as response:  # fmt: skip
                if response.status_code >= 400:
                    response.read()
                self._raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from None

    # ── nodes ────────────────────────────────────────────────────────────────────────────────

    def list_nodes(self) -> list[tuple[Node, int]]:
        return [(s.node, s.tasks) for s in self.node_summaries()]

    def node_summaries(self) -> list[NodeSummary]:
        """Every node with its task count and, while it drains, how far that has come."""
        from .domain.nodes import NodeSummary

        return [NodeSummary.model_validate(n) for n in self.request("GET", "/v1/nodes")]

    def get_node(self, name: str) -> NodeSummary:
        """One node, with its tasks (``task_list``)."""
        from .domain.nodes import NodeSummary

        return NodeSummary.model_validate(self.request("GET", f"/v1/nodes/{name}"))

    def drain_node(self, name: str) -> NodeSummary:
        """No new tasks on the node; its tasks move to other nodes (returns at once)."""
        from .domain.nodes import NodeSummary

        return NodeSummary.model_validate(self.request("POST", f"/v1/nodes/{name}/drain"))

    def activate_node(self, name: str) -> NodeSummary:
        """The node takes new tasks again (tasks that moved away stay where they are)."""
        from .domain.nodes import NodeSummary

        return NodeSummary.model_validate(self.request("POST", f"/v1/nodes/{name}/activate"))

    def remove_node(self, name: str) -> list[str]:
        """Forget a node that is down; the ids of its tasks that were ended."""
        return list(self.request("DELETE", f"/v1/nodes/{name}")["tasksEnded"])

    def join_token(self, rotate: bool = False) -> str:
        """The token remote workers join with (``rotate``: replace it)."""
        params = {"rotate": "true"} if rotate else {}
        return str(self.request("GET", "/v1/cluster/join-token", params=params)["token"])

    def rotate_admin_token(self) -> str:
        """A new admin token in place of this client's (which then stops working): this client
        uses the new one from now on."""
        token = str(self.request("POST", "/v1/cluster/admin-token/rotate")["token"])
        self.token = token
        return token

    # ── events ───────────────────────────────────────────────────────────────────────────────

    def list_events(
        self, service: str | None = None, limit: int = 100, since: float | None = None
    ) -> list[Event]:
        """The newest ``limit`` kept events, oldest first (``since``: at or after that Unix
        time)."""
        from .domain.events import Event

        params: dict[str, Any] = {"limit": limit}
        if service:
            params["service"] = service
        if since is not None:
            params["since"] = since
        return [Event.model_validate(e) for e in self.request("GET", "/v1/events", params=params)]

    def stream_events(
        self,
        service: str | None = None,
        on_connect: Callable[[], None] | None = None,
        *,
        since: float | None = None,
        limit: int | None = None,
        last_event_id: int | None = None,
        reconnects: int = RECONNECTS,
    ) -> Iterator[Event]:
        """The cluster's events as they happen, until the caller stops: first, if asked, the
        kept ones at or after the Unix time ``since`` (the newest ``limit`` of them), then
        every new one. A lost connection (the server restarted, or stopped and another
        manager answers) is opened again with ``Last-Event-ID``, so that no event is missed
        or seen twice: up to ``reconnects`` times in a row, 0.1 s, 0.2 s … 2 s apart, then
        UnavailableError. ``on_connect`` is called on each connection: every event written
        from then on will come. ``last_event_id``: resume after that event's id."""
        params: dict[str, Any] = {}
        if service:
            params["service"] = service
        if since is not None:
            params["since"] = since
        if limit is not None:
            params["limit"] = limit
        position = last_event_id
        failures = 0
        while True:
            try:
                for item in self._event_stream(params, position):
                    if item is None:  # connected
                        failures = 0
                        if on_connect is not None:
                            on_connect()
                        continue
                    revision, event = item
                    position = revision if revision is not None else position
                    yield event
                why = "the server ended the stream"
            except httpx.ConnectError as exc:
                if unverified(exc) is not None:  # it will not verify on the next try either
                    raise self._unreachable(exc) from None
                why = str(exc) or type(exc).__name__
            except (httpx.TransportError, UnavailableError) as exc:
                why = str(exc) or type(exc).__name__
            failures += 1
            if failures > reconnects:
                raise UnavailableError(
                    f"lost the event stream of {self.addr} ({why}); "
                    f"{reconnects} reconnections failed"
                )
            time.sleep(min(0.1 * 2 ** (failures - 1), 2.0))

    def _event_stream(
        self, params: dict[str, Any], after: int | None
    ) -> Iterator[tuple[int | None, Event] | None]:
        """One connection to the event stream: None once it is open, then each event with its
        id (the store revision that wrote it)."""
        from httpx_sse import connect_sse

        from .domain.events import Event

        self._authorize()
        headers = {"Last-Event-ID": str(after)} if after is not None else {}
        timeout = httpx.Timeout(30, read=STREAM_SILENCE)
        with connect_sse(
            self._http, "GET", "/v1/events/stream", params=params, headers=headers, timeout=timeout
        ) as source:
            if source.response.status_code >= 400:
                source.response.read()
            self._raise_for(source.response)
            yield None
            for frame in source.iter_sse():
                if not frame.data:
                    # A keep-alive ping (a comment line) once an id was seen: httpx-sse 0.4
                    # still hands the blank line after it on, as a frame with that id and no
                    # data, where the SSE spec dispatches nothing.
                    continue
                revision = int(frame.id) if frame.id.isdigit() else None
                yield revision, Event.model_validate_json(frame.data)


def _logs_params(
    tail: int | None, task: str | None, since: str | None, job: bool = False
) -> dict[str, Any]:
    params: dict[str, Any] = {"tail": "all" if tail is None else tail}
    if task:
        params["task"] = task
    if job:
        params["job"] = "true"
    if since:
        params["since"] = since
    return params
