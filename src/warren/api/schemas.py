"""Wire schemas of the API that are not domain models: request bodies for partial updates and
scaling, and the summaries the list endpoints return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import Field, PlainValidator, WithJsonSchema, field_validator

from ..domain.base import Duration, Model, Whole
from ..domain.nodes import NodeSummary  # a domain model: the client reads it too
from ..domain.services import Service
from ..domain.specs import ENV_KEY_RE, MAPS, NAME_PATTERN, NOT_ZERO, CommandLine
from ..domain.tasks import DesiredState, Task

__all__ = [
    "ErrorBody",
    "FreezeRequest",
    "JobRequest",
    "NodeSummary",
    "PlanRequest",
    "ScaleRequest",
    "ServicePatch",
    "ServiceSummary",
    "document_spec_change",
]


class ScaleRequest(Model):
    replicas: Whole = Field(ge=0, le=10_000)


class RollbackRequest(Model):
    to_revision: int | None = Field(None, ge=1)
    """Default: the revision before the newest deployment."""


class TaskPatch(Model):
    """Only the desired state can be changed from outside: ``shutdown`` stops a task (the
    reconciler replaces it if the service still wants it)."""

    desired_state: DesiredState


def spec_change(spec: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a change of a spec, from the spec's: every field optional, null for
    its default — but the name, which a change cannot take away. Only stated: the server
    merges the change into the current spec (``patch_spec``), a nested object key by key, and
    checks the result."""
    fields = dict(spec["properties"])
    for name in MAPS:  # null removes a key of these
        free = fields[name]["additionalProperties"]
        fields[name] = {**fields[name], "additionalProperties": {"anyOf": [free, {"type": "null"}]}}
    return {
        "type": "object",
        "title": "SpecChange",
        "description": "The fields of a ServiceSpec to change; null sets a field's default.",
        "additionalProperties": False,
        "properties": {
            name: field if name == "name" else {"anyOf": [field, {"type": "null"}]}
            for name, field in fields.items()
        },
    }


def document_spec_change(app: FastAPI) -> None:
    """The schemas of a change of a spec in the app's OpenAPI document, made from the spec's
    there (``ServiceSpec-Input`` when the spec is an answer's too): ``SpecChange``, and a
    plan's ``spec`` when ``replace`` is true."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema["components"]["schemas"]
            name = next(n for n in ("ServiceSpec-Input", "ServiceSpec") if n in schemas)
            schemas["SpecChange"] = spec_change(schemas[name])
            schemas["PlanRequest"] |= {
                "if": {"required": ["replace"], "properties": {"replace": {"const": True}}},
                "then": {
                    "required": ["spec"],
                    "properties": {"spec": {"$ref": f"#/components/schemas/{name}"}},
                },
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _an_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected an object of the spec's fields")
    return value


Change = Annotated[
    dict[str, Any],
    PlainValidator(_an_object),
    # In allOf: a "$ref" at the top pydantic would look up among its own definitions.
    WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/SpecChange"}]}),
]
EnvKey = Annotated[str, Field(pattern=ENV_KEY_RE.pattern)]


class ServicePatch(Model):
    """A partial update: ``spec`` holds only the camelCase fields to change (merged into the
    current spec; ``env`` merges key by key), ``envRm`` the env keys to remove."""

    spec: Change = {}
    env_rm: tuple[EnvKey, ...] = ()
    cause: str = ""
    force: bool = Field(False, strict=True)
    """Redeploy even when nothing changes (``service update --force``)."""
    override: bool = Field(False, strict=True)
    """Start a release outside the service's deployment windows or in a freeze."""


class JobRequest(Model):
    """A one-off command of a service's current revision (``warren run``)."""

    command: CommandLine
    timeout: Duration | None = Field(None, json_schema_extra=NOT_ZERO)
    """Stopped if still running after it; absent: runs until it ends."""

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be above 0")
        return v


class FreezeRequest(Model):
    service: str | None = Field(None, pattern=NAME_PATTERN)
    """The service whose releases to freeze; absent: every service."""
    until: float = Field(gt=0, allow_inf_nan=False, strict=True)
    """Unix time."""
    reason: str = Field(min_length=1, max_length=500)


class PlanRequest(Model):
    """A change to plan, as a PATCH states it; or with ``replace`` a whole spec
    (``deploy plan -f FILE``)."""

    spec: Change = {}
    env_rm: tuple[EnvKey, ...] = ()
    replace: bool = Field(False, strict=True)
    """``spec`` is a whole spec, not a change."""


class ErrorDetail(Model):
    code: str
    message: str
    field: str | None = None


class ErrorBody(Model):
    error: ErrorDetail


class ServiceSummary(Model):
    name: str
    revision: int
    replicas: int
    running: int
    ready: int
    image: str | None = None
    command: tuple[str, ...] | None = None
    version: str
    ports: tuple[int, ...] = ()
    host: str | None = None
    paths: tuple[str, ...] = ()
    strategy: str
    updated_at: float

    @staticmethod
    def of(service: Service, tasks: Iterable[Task]) -> ServiceSummary:
        """``tasks``: the service's own tasks."""
        mine = [t for t in tasks if t.wants_running]
        spec = service.spec
        return ServiceSummary(
            name=spec.name,
            revision=service.revision,
            replicas=spec.replicas,
            running=sum(1 for t in mine if t.state == "running"),
            ready=sum(1 for t in mine if t.ready),
            image=spec.image,
            command=spec.command,
            version=spec.version_label,
            ports=tuple(p.published for p in spec.ports),
            host=spec.host,
            paths=spec.paths,
            strategy=spec.deploy.strategy,
            updated_at=service.updated_at,
        )
