"""Service specs: everything a user declares about a service (the YAML's ``spec``). Pure, frozen.

A spec is immutable once stored as a revision. ``template`` is the part whose change needs new
tasks (image, command, env, health check …). ``replicas`` and the rollout settings (``deploy``:
strategy, update and rollback config, canary and blue/green settings, receivers of notifications,
revisions kept) are not part of it — as Swarm's ``update_config`` and a Kubernetes Deployment's
``strategy`` are not part of their templates — so scaling or changing how the next rollout runs
never creates a revision, a deployment or a task.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Mapping
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .base import (
    Duration,
    Model,
    Whole,
    duration_schema,
    parse_model,
    unprocessable,
    whole_number,
)
from .diffs import Change, diff
from .errors import ConflictError, UnprocessableError, ValidationError
from .notifications import DeploymentEvent, NotifyFormat
from .sizes import MEMORY_SCHEMA, parse_memory
from .windows import DeployWindow

__all__ = [
    "API_VERSION",
    "DEFAULT_ANALYSIS",
    "DEFAULT_WEIGHTS",
    "NAME_PATTERN",
    "AbTestConfig",
    "Analysis",
    "BlueGreenConfig",
    "CanaryConfig",
    "CanaryStep",
    "CommandLine",
    "DeployConfig",
    "ExecCheck",
    "FailureAction",
    "HeaderRoute",
    "HealthCheck",
    "HttpCheck",
    "Job",
    "MetricCheck",
    "Notify",
    "PortSpec",
    "PrometheusQuery",
    "Resources",
    "RestartCondition",
    "RestartPolicy",
    "RollbackConfig",
    "RouteMatch",
    "ServiceSpec",
    "Strategy",
    "StrategyName",
    "TcpCheck",
    "TlsSpec",
    "UpdateConfig",
    "UpdateOrder",
    "Webhook",
    "parse_condition",
    "parse_memory",
    "patch_spec",
    "plugin_strategy_names",
    "register_strategy_name",
    "service_from_document",
    "service_to_document",
    "spec_changes",
    "unregister_strategy_name",
]

API_VERSION = "warren.io/v1"
COMMAND_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        # A string is split as a shell would (shlex); stated here without quotes or
        # backslashes, which JSON Schema cannot tell balanced from not.
        {"type": "string", "pattern": r"^[^'\"\\]*[^\s'\"\\][^'\"\\]*$"},
        {"type": "null"},
    ]
}
"""What a command is, as the OpenAPI document states it: a list of arguments, or one line."""


def _shell_split(value: Any) -> Any:
    return shlex.split(value) if isinstance(value, str) else value


CommandLine = Annotated[
    tuple[str, ...],
    BeforeValidator(_shell_split),
    Field(min_length=1, json_schema_extra=COMMAND_SCHEMA),
]
"""A command that must be set: a list of arguments, or one line split as a shell would."""
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A service's name, as the OpenAPI document states it (JSON Schema: ``$`` ends the text).
In Python, ``fullmatch`` only: there ``$`` also matches before a last newline."""
NAME_RE = re.compile(NAME_PATTERN)
HOST_RE = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the agent for every task; a user must not override them.
RESERVED_ENV = frozenset({"PORT", "WARREN_TASK_ID", "WARREN_SERVICE", "WARREN_REVISION"})
ENV_SCHEMA: dict[str, Any] = {
    "propertyNames": {"pattern": ENV_KEY_RE.pattern, "not": {"enum": sorted(RESERVED_ENV)}},
    # A number is taken as its text (YAML's PORT: 8080); a boolean is not (true or True?).
    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}]},
}
HOST_SCHEMA: dict[str, Any] = {
    # HOST_RE after lowercasing: either case is taken.
    "anyOf": [
        {"type": "string", "pattern": r"^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$"},
        {"type": "null"},
    ]
}
PATH_PREFIX_PATTERN = r"^/[!-\"$->@-~]*$"
"""A path prefix, as the OpenAPI document states it: ``/`` then visible ASCII but ``?`` and
``#`` (a client sends other characters percent-encoded: a prefix is compared with the target as
sent). In Python, ``fullmatch`` only."""
PATH_PREFIX_RE = re.compile(PATH_PREFIX_PATTERN[1:-1])
PATHS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": PATH_PREFIX_PATTERN},
    "uniqueItems": True,
}

# The bounds before the validator: after it, pydantic writes them into the JSON schema as
# "ge"/"le", which JSON Schema does not know, and the document would allow any integer.
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(whole_number)]


class Strategy(StrEnum):
    """The strategies Warren ships; ``deploy.strategy`` takes any registered name
    (``planning.strategies.register``)."""

    ROLLING = "rolling"
    BLUE_GREEN = "blue-green"
    CANARY = "canary"
    AB_TEST = "ab-test"


STRATEGY_GROUP = "warren.strategies"
"""The entry point group of strategy plugins (``warren.plugins``)."""
_STRATEGY_NAMES: set[str] = {s.value for s in Strategy}
"""What ``deploy.strategy`` accepts: the registry's names (``planning.strategies``)."""


def register_strategy_name(name: str) -> None:
    _STRATEGY_NAMES.add(name)


def unregister_strategy_name(name: str) -> None:
    if name not in {s.value for s in Strategy}:
        _STRATEGY_NAMES.discard(name)


@functools.cache
def plugin_strategy_names() -> frozenset[str]:
    """The names of the strategies installed packages ship: their entry points in the group
    ``warren.strategies`` (``warren.plugins`` loads them; a name is all a spec needs here)."""
    return frozenset(e.name for e in entry_points(group=STRATEGY_GROUP))


def _known_strategy(value: Any) -> Any:
    # A built-in name needs no look at the installed packages' entry points.
    if (
        isinstance(value, str)
        and value not in _STRATEGY_NAMES
        and (value not in plugin_strategy_names())
    ):
        choices = ", ".join(sorted(_STRATEGY_NAMES))
        raise ValueError(f"unknown strategy {value!r}: expected one of {choices}")
    return value


def _strategy_schema(schema: dict[str, Any]) -> None:
    # As registered when the document is made, and the installed plugins'.
    schema["enum"] = sorted(_STRATEGY_NAMES | plugin_strategy_names())


StrategyName = Annotated[
    str, BeforeValidator(_known_strategy), Field(json_schema_extra=_strategy_schema)
]


class FailureAction(StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"
    CONTINUE = "continue"


class UpdateOrder(StrEnum):
    START_FIRST = "start-first"
    STOP_FIRST = "stop-first"


class RestartCondition(StrEnum):
    ANY = "any"
    ON_FAILURE = "on-failure"
    NONE = "none"


class TlsSpec(Model):
    """TLS termination on a published port: the certificate chain and its key, PEM files on
    every node that runs an ingress (read there; reloaded when they change). TLS 1.2 and up; the
    task gets plain HTTP with ``X-Forwarded-Proto: https``."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class PortSpec(Model):
    """``published`` is the ingress port; ``target`` the container port (docker driver only —
    a process gets its port in ``$PORT``); ``tls``: the ingress terminates TLS on it."""

    published: Port
    target: Port | None = None
    tls: TlsSpec | None = None


class HttpCheck(Model):
    path: str = Field("/", json_schema_extra={"pattern": "^/"})
    port: Port | None = None
    status_min: Whole = Field(200, ge=100, le=599)
    status_max: Whole = Field(399, ge=100, le=599)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class TcpCheck(Model):
    port: Port | None = None


class ExecCheck(Model):
    command: CommandLine


_PROBE_KINDS = ("http", "tcp", "exec")
NOT_ZERO: dict[str, Any] = {
    "not": {"anyOf": [{"const": 0}, {"type": "string", "pattern": r"^(0+(\.0+)?(ms|s|m|h)?)+$"}]}
}
"""A duration's schema that leaves out every way of writing zero."""


def _one_probe(kind: str) -> dict[str, Any]:
    others = [k for k in _PROBE_KINDS if k != kind]
    return {
        "required": [kind],
        "properties": {kind: {"type": "object"}, **{k: {"type": "null"} for k in others}},
    }


class HealthCheck(Model):
    """Exactly one of http, tcp, exec. Healthy after one success; unhealthy after ``retries``
    consecutive failures; failures during ``start_period`` do not count."""

    # What _exactly_one checks, stated where JSON Schema can: one probe, a non-zero interval
    # and timeout.
    model_config = ConfigDict(json_schema_extra={"anyOf": [_one_probe(k) for k in _PROBE_KINDS]})

    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    exec: ExecCheck | None = None
    interval: Duration = Field(1.0, json_schema_extra=NOT_ZERO)
    timeout: Duration = Field(1.0, json_schema_extra=NOT_ZERO)
    retries: Whole = Field(3, ge=1)
    start_period: Duration = 0.0

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        kinds = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("set exactly one of http, tcp, exec")
        if self.interval <= 0:
            raise ValueError("interval must be > 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http else "tcp" if self.tcp else "exec"


class Resources(Model):
    """Reservations used by placement. 0 means "reserve nothing"."""

    cpus: float = Field(0.0, ge=0, strict=True)
    memory: int = Field(0, json_schema_extra=MEMORY_SCHEMA)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_memory(v)


class RestartPolicy(Model):
    """When a task ends on its own, replace it after ``delay`` doubling per consecutive failure
    up to ``max_delay`` (1s, 2s, 4s … 30s). ``max_attempts`` 0 means no limit."""

    condition: RestartCondition = RestartCondition.ANY
    delay: Duration = 1.0
    max_delay: Duration = 30.0
    max_attempts: Whole = Field(0, ge=0)


class UpdateConfig(Model):
    parallelism: Whole = Field(1, ge=0)
    delay: Duration = 0.0
    failure_action: FailureAction = FailureAction.ROLLBACK
    order: UpdateOrder = UpdateOrder.START_FIRST
    monitor: Duration = 5.0
    max_failure_ratio: float = Field(0.0, ge=0, le=1, strict=True)
    healthy_deadline: Duration = 60.0
    progress_deadline: Duration = 600.0


class RollbackConfig(Model):
    parallelism: Whole = Field(0, ge=0)
    delay: Duration = 0.0
    failure_action: Literal["pause", "continue"] = "pause"
    order: UpdateOrder = UpdateOrder.START_FIRST
    monitor: Duration = 0.0
    max_failure_ratio: float = Field(0.0, ge=0, le=1, strict=True)


_STEP_KINDS = ("setWeight", "pause", "setHeaderRoute")
_SET: dict[str, Any] = {"not": {"type": "null"}}
_NULL: dict[str, Any] = {"type": "null"}
_MATCH_KINDS = ("exact", "prefix", "regex")
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
_COOKIE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


def _exactly_one(keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of an object that sets exactly one of ``keys`` (the rest null)."""
    return {
        "anyOf": [
            {"required": [k], "properties": {o: _SET if o == k else _NULL for o in keys}}
            for k in keys
        ]
    }


class ValueMatch(Model):
    """Exactly one of: the whole value, its start, or a regular expression it contains."""

    model_config = ConfigDict(json_schema_extra=_exactly_one(_MATCH_KINDS))

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ValueMatch:
        given = [k for k in _MATCH_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise unprocessable("give exactly one of exact, prefix, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"{self.regex!r} is not a regular expression: {exc}") from None
        return self

    @property
    def kind(self) -> str:
        return (
            "exact" if self.exact is not None else "prefix" if self.prefix is not None else "regex"
        )

    @property
    def text(self) -> str:
        return next(v for v in (self.exact, self.prefix, self.regex) if v is not None)


class RouteMatch(Model):
    """A request that carries header ``headerName`` — or cookie ``cookieName`` — whose value
    matches ``headerValue`` (``cookieValue``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {
                    "required": [f"{kind}Name", f"{kind}Value"],
                    "properties": {
                        f"{kind}Name": _SET,
                        f"{kind}Value": _SET,
                        f"{other}Name": _NULL,
                        f"{other}Value": _NULL,
                    },
                }
                for kind, other in (("header", "cookie"), ("cookie", "header"))
            ]
        }
    )

    header_name: str | None = Field(None, pattern=_HEADER_NAME)
    header_value: ValueMatch | None = None
    cookie_name: str | None = Field(None, pattern=_COOKIE_NAME)
    cookie_value: ValueMatch | None = None

    @model_validator(mode="after")
    def _one(self) -> RouteMatch:
        header = self.header_name is not None and self.header_value is not None
        cookie = self.cookie_name is not None and self.cookie_value is not None
        parts = [self.header_name, self.header_value, self.cookie_name, self.cookie_value]
        if header == cookie or sum(p is not None for p in parts) != 2:
            raise unprocessable("give headerName and headerValue, or cookieName and cookieValue")
        return self

    def describe(self) -> str:
        name = self.header_name or f"cookie {self.cookie_name}"
        value = self.header_value or self.cookie_value
        assert value is not None
        op = {"exact": "=", "prefix": "starts with", "regex": "~"}[value.kind]
        return f"{name} {op} {value.text!r}"


class HeaderRoute(Model):
    """A canary step: requests that match every one of ``match`` go to the canary whatever its
    weight — at weight 0, only they see it — until promotion or abort."""

    name: str = Field(min_length=1, max_length=63)
    match: tuple[RouteMatch, ...] = Field(min_length=1)

    def describe(self) -> str:
        return f"{self.name} ({' and '.join(m.describe() for m in self.match)})"


class CanaryStep(Model):
    """One of ``setWeight: N``, ``pause: DURATION`` / ``pause: {}`` (until promoted), or
    ``setHeaderRoute: {name, match}``."""

    model_config = ConfigDict(json_schema_extra=_exactly_one(_STEP_KINDS))

    # The bounds before the validator, as Port's: else the document would not state them.
    set_weight: Annotated[int, Field(ge=0, le=100), BeforeValidator(whole_number)] | None = None
    pause: Duration | Annotated[dict[str, Any], Field(max_length=0)] | None = None
    set_header_route: HeaderRoute | None = None

    @field_validator("pause", mode="before")
    @classmethod
    def _pause(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if v:
                raise ValueError("a pause is a duration or {} (until promoted)")
            return {}
        return v

    @model_validator(mode="after")
    def _one(self) -> CanaryStep:
        given = [self.set_weight, self.pause, self.set_header_route]
        if sum(g is not None for g in given) != 1:
            raise ValueError("a step is one of setWeight, pause, setHeaderRoute")
        return self


CONDITION_RE = re.compile(
    r"^\s*(?:result\s*)?(<=|>=|==|!=|<|>)\s*(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e-?[0-9]+)?)\s*$"
)


def parse_condition(text: str) -> tuple[str, float]:
    """``result < 0.05`` (or just ``< 0.05``) → ("<", 0.05). Only a comparison with a number:
    nothing is evaluated."""
    m = CONDITION_RE.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a condition: write `result OP NUMBER`, OP one of < <= > >= == !="
        )
    return m.group(1), float(m.group(2))


URL_PATTERN = r"^https?://[^\x00-\x20/]+"
"""A webhook's, a receiver's or a Prometheus server's address, as the document states it."""
URL = Field(json_schema_extra={"pattern": URL_PATTERN})


def _http_url(v: str) -> str:
    if not re.match(URL_PATTERN, v):
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    return v


class Webhook(Model):
    """An HTTP check the release calls (POST, JSON body): a 2xx answer passes; any other status,
    a connection error or the timeout fails it.

    - ``pre-rollout``: before the new revision gets any traffic (canary: before the first
      weight; blue/green: before the preview analysis);
    - ``rollout``: with every analysis window;
    - ``pre-promotion``: before promotion (canary: after the last step; blue/green: before the
      switch);
    - ``post-rollout``: once the deployment has ended, whatever its outcome (a notification:
      its answer is recorded and changes nothing)."""

    name: str = Field(min_length=1, max_length=63)
    type: Literal["pre-rollout", "rollout", "pre-promotion", "post-rollout"]
    url: Annotated[str, URL]
    timeout: Annotated[
        Duration,
        duration_schema(
            {"exclusiveMinimum": 0, "maximum": 60},
            r"^(([1-9]|[1-5][0-9])(\.[0-9]{1,9})?s?|60s?|[1-9][0-9]{0,3}ms)$",
        ),
    ] = Field(5.0, gt=0, le=60)
    metadata: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class PrometheusQuery(Model):
    address: Annotated[str, URL]
    """The Prometheus server, e.g. http://127.0.0.1:9090 (its /api/v1/query is called)."""
    query: str = Field(min_length=1)
    """PromQL returning one number; ``{{service}}``, ``{{revision}}`` (the new one),
    ``{{stable}}`` and ``{{interval}}`` (e.g. ``10s``) are filled in."""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _http_url(v)


class MetricCheck(Model):
    """An analysis metric from a provider: the query's value must meet ``successCondition``.
    No value (an empty result, NaN) or an unreachable provider makes the window inconclusive."""

    name: str = Field(min_length=1, max_length=63)
    prometheus: PrometheusQuery
    success_condition: str = Field(json_schema_extra={"pattern": CONDITION_RE.pattern})

    @field_validator("success_condition")
    @classmethod
    def _condition(cls, v: str) -> str:
        parse_condition(v)
        return v


class Analysis(Model):
    """How a canary (or a green revision) is judged every ``interval`` (see
    ``planning/analysis.py``)."""

    interval: Duration = 10.0
    mode: Literal["threshold", "baseline"] = "threshold"
    success_rate: float | None = Field(None, ge=0, le=1, strict=True)
    max_latency_p95: Duration | None = None
    max_latency_p99: Duration | None = None
    min_requests: Whole = Field(20, ge=0)
    failure_limit: Whole = Field(1, ge=1)
    """Consecutive failed windows before the canary fails."""
    significance: float = Field(0.05, gt=0, lt=1, strict=True)
    """baseline mode: the p-value below which a difference counts."""
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, strict=True)
    """baseline mode: a significant error-rate increase must also exceed this (0.01 = 1 point)."""
    max_latency_increase: float = Field(0.2, ge=0, strict=True)
    """baseline mode: a significant slow-down must also exceed this (0.2 = median 20% slower)."""
    metrics: tuple[MetricCheck, ...] = ()
    webhooks: tuple[Webhook, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Analysis:
        for kind, names in (
            ("metric", [m.name for m in self.metrics]),
            ("webhook", [w.name for w in self.webhooks]),
        ):
            if len(set(names)) != len(names):
                raise unprocessable(f"two {kind}s have the same name")
        return self


class CanaryConfig(Model):
    steps: tuple[CanaryStep, ...] = ()
    """None given: DEFAULT_WEIGHTS, each held for an analysis window (``with_defaults``)."""
    canary_replicas: Annotated[int, Field(ge=1), BeforeValidator(whole_number)] | None = None
    analysis: Analysis | None = None
    sticky_sessions: bool = Field(False, strict=True)
    """While the canary has traffic, a client stays on the revision that first answered it
    (a cookie set by the ingress), as long as that revision keeps a weight above 0."""
    sticky_cookie: str = Field("warren-revision", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @property
    def defaulted(self) -> bool:
        return not self.steps

    def with_defaults(self) -> CanaryConfig:
        """A canary is never promoted untested: without steps it runs 10% → 50% → 100%, each
        weight held for one analysis window and judged — by the given analysis, else by
        DEFAULT_ANALYSIS (success rate ≥ 95% over at least 20 requests; fewer pauses the
        release for a person)."""
        if self.steps:
            return self
        analysis = self.analysis or DEFAULT_ANALYSIS
        hold = CanaryStep(pause=analysis.interval)
        steps = tuple(s for w in DEFAULT_WEIGHTS for s in (CanaryStep(set_weight=w), hold))
        return self.model_copy(update={"steps": steps, "analysis": analysis})


class AbTestConfig(Model):
    """An A/B test (``strategy: ab-test``): the new revision (B) beside the stable one (A),
    ``weight`` percent of the clients to B — each kept on the revision that first answered it
    (a cookie) — for ``duration``; their figures side by side every ``interval``; then the
    winner (``planning/strategies/ab_test.py``)."""

    weight: Whole = Field(50, ge=1, le=99)
    """The share of the requests (of new clients) that go to B."""
    duration: Duration = Field(3600.0, json_schema_extra=NOT_ZERO)
    interval: Duration = Field(60.0, json_schema_extra=NOT_ZERO)
    """How often both revisions' figures are logged (``deploy status`` shows the last)."""
    replicas: Annotated[int, Field(ge=1), BeforeValidator(whole_number)] | None = None
    """Tasks of B; default: enough for its weight."""
    min_requests: Whole = Field(100, ge=1)
    """Each revision's requests below which the test has no winner."""
    significance: float = Field(0.05, gt=0, lt=0.5, strict=True)
    """The p-value below which a difference counts: the winner's confidence is 1 - p."""
    sticky_cookie: str = Field("warren-ab", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("duration", "interval")
    @classmethod
    def _above_zero(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be above 0")
        return v


DEFAULT_WEIGHTS = (10, 50)
"""The weights of a canary given no steps; promotion to 100% follows."""
DEFAULT_ANALYSIS = Analysis(interval=10.0, success_rate=0.95, min_requests=20)


class BlueGreenConfig(Model):
    auto_promote: bool = Field(True, strict=True)
    auto_promote_after: Duration = 0.0
    scale_down_delay: Duration = 30.0
    preview_header: str = "X-Warren-Preview"
    soak: Duration = 0.0
    analysis: Analysis | None = None


def _known_events(value: Any) -> Any:
    """One line for a typo, with the names to choose from (``domain.notifications``)."""
    names = [e.value for e in DeploymentEvent]
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("name at least one event, or leave `on` out for every event")
        for item in value:
            if item not in names:
                raise ValueError(f"unknown event {item!r}: expected one of {', '.join(names)}")
    return value


class Notify(Model):
    """A receiver of the service's deployment events: a POST of each event it wants, in
    ``format`` (``docs/deployments.md``, Notifications)."""

    url: Annotated[str, URL]
    on: Annotated[
        Annotated[tuple[DeploymentEvent, ...], Field(min_length=1)] | None,
        BeforeValidator(_known_events),
    ] = None
    """The events it wants; None (left out): every one."""
    format: NotifyFormat = NotifyFormat.JSON

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        """YAML 1.1 — what PyYAML, and so ``warren apply -f``, reads — takes a bare ``on:``
        key for the boolean true (GitHub Actions' workflows meet the same)."""
        if isinstance(data, dict) and any(k is True for k in data) and "on" not in data:
            return {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class Job(Model):
    """A one-off command a release runs as a task of its new revision (its image or command,
    env and placement): ``preDeploy`` before any of its tasks starts, ``postDeploy`` once it has
    succeeded. Exit 0 passes; any other exit, or no end within ``timeout``, fails."""

    command: CommandLine
    timeout: Duration = Field(600.0, json_schema_extra=NOT_ZERO)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be above 0")
        return v


class DeployConfig(Model):
    """How the service's rollouts run: not part of the template — a change of it alone is
    stored in place and used from the next deployment on (an active one keeps its own)."""

    strategy: StrategyName = Strategy.ROLLING.value
    update_config: UpdateConfig = UpdateConfig()
    rollback_config: RollbackConfig = RollbackConfig()
    canary: CanaryConfig | None = None
    blue_green: BlueGreenConfig | None = None
    ab_test: AbTestConfig | None = None
    revision_history_limit: Whole = Field(10, ge=1)
    notify: tuple[Notify, ...] = ()
    """Who is told of the deployments."""
    windows: tuple[DeployWindow, ...] = ()
    """When a release may start (none: any time); ``domain.windows``."""
    pre_deploy: Job | None = None
    """Runs once before any task of a new revision starts (a schema migration): the release
    goes on when it exits 0, and fails, nothing replaced, when it does not."""
    post_deploy: Job | None = None
    """Runs once after a release has succeeded (the contract step of a migration)."""


_SPEC_SCHEMA: dict[str, Any] = {
    # What _consistent checks and JSON Schema can say: an image or a command must be set.
    "anyOf": [
        {"required": ["image"], "properties": {"image": {"type": "string"}}},
        {"required": ["command"], "properties": {"command": {"not": {"type": "null"}}}},
    ]
}


class ServiceSpec(Model):
    model_config = ConfigDict(json_schema_extra=_SPEC_SCHEMA)

    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    labels: dict[str, str] = {}
    image: str | None = None
    command: tuple[str, ...] | None = Field(None, json_schema_extra=COMMAND_SCHEMA)
    """The process to run (process driver), or the container's command instead of the image's
    own CMD (docker driver)."""
    driver: Literal["process", "docker", "fake"] | None = None
    pull_policy: Literal["always", "if-not-present", "never"] = "if-not-present"
    """docker driver: when to pull the image from its registry before creating a container."""
    stop_signal: str = Field("SIGTERM", pattern=r"^SIG[A-Z0-9]+$")
    replicas: Whole = Field(1, ge=0, le=10_000)
    env: dict[str, str] = Field({}, json_schema_extra=ENV_SCHEMA)
    ports: tuple[PortSpec, ...] = ()
    host: str | None = Field(None, json_schema_extra=HOST_SCHEMA)
    paths: tuple[str, ...] = Field((), json_schema_extra=PATHS_SCHEMA)
    """With ``host``: the path prefixes of the host's requests this service answers (the
    longest that matches wins among the host's services; ``/api/`` is ``/api``); none: the
    host's other requests."""
    health_check: HealthCheck | None = None
    resources: Resources = Resources()
    restart_policy: RestartPolicy = RestartPolicy()
    deploy: DeployConfig = DeployConfig()
    stop_grace: Duration = 10.0
    drain_timeout: Duration = 5.0
    min_ready: Duration = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 lowercase letters, digits or '-', starting and ending "
                f"with a letter or digit (got {v!r})"
            )
        return v

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = shlex.split(v)
        if isinstance(v, list | tuple) and not v:
            raise ValueError("must not be empty")
        return v  # anything else (false, 3): pydantic's "not a valid tuple"

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for key, value in v.items():
                if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
                    raise ValueError(f"{key!r} is not a valid variable name")
                if key in RESERVED_ENV:
                    raise ValueError(f"{key} is set by Warren and cannot be overridden")
                if isinstance(value, bool):
                    raise ValueError(f'{key}: quote booleans, e.g. "true"')
            return {k: str(val) if isinstance(val, int | float) else val for k, val in v.items()}
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and not HOST_RE.fullmatch(v.lower()):
            raise ValueError(f"{v!r} is not a valid host name")
        return v.lower() if v else v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, str] = {}
        for prefix in v:
            if not PATH_PREFIX_RE.fullmatch(prefix):
                raise ValueError(
                    f"{prefix!r} is not a path prefix: '/' then visible ASCII characters but "
                    "'?' and '#' (percent-encode the others, as clients send them)"
                )
            normal = prefix.rstrip("/") or "/"
            if normal in seen:
                raise unprocessable(f"{seen[normal]} and {prefix} are the same path prefix")
            seen[normal] = prefix
        return tuple(seen)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        if self.image is None and self.command is None:
            raise unprocessable("set an image (docker driver) or a command (process driver)")
        if self.driver == "docker" and self.image is None:
            raise unprocessable("the docker driver needs an image")
        if self.driver == "process" and self.command is None:
            raise unprocessable("the process driver needs a command")
        if self.driver == "process" and self.image is not None:
            raise unprocessable("the process driver runs a command, not an image")
        published = [p.published for p in self.ports]
        if len(set(published)) != len(published):
            raise unprocessable("a published port appears twice")
        if self.paths and self.host is None:
            # A path is routed within a host: which services a hostless prefix would beat
            # (a host's catch-all? only unclaimed hosts?) is a choice proxies make differently.
            raise unprocessable("paths needs a host: the shared port routes by host, then by path")
        problem = _cannot_finish(self.deploy)
        if problem:
            raise unprocessable(problem)
        return self

    @property
    def effective_driver(self) -> str:
        """image ⇒ docker, command ⇒ process, unless ``driver`` says otherwise."""
        if self.driver:
            return self.driver
        return "docker" if self.image is not None else "process"

    @property
    def template(self) -> dict[str, Any]:
        """Everything that needs new tasks when it changes: the spec minus ``replicas`` and
        the rollout settings (``deploy``)."""
        return self.model_dump(mode="json", exclude=_NOT_TEMPLATE)

    def same_template(self, other: ServiceSpec) -> bool:
        return self.template == other.template

    def keeping_settings_of(self, current: ServiceSpec) -> ServiceSpec:
        """This spec (a revision's, which the service goes back to) with what is not part of
        the template taken from ``current``: a rollback restores the template only, and changes
        neither the replica count nor the rollout settings (as ``kubectl rollout undo``)."""
        return self.model_copy(update={"replicas": current.replicas, "deploy": current.deploy})

    @property
    def version_label(self) -> str:
        """A short human label for a revision: the image, else VERSION from env, else command."""
        if self.image:
            return self.image
        if "VERSION" in self.env:
            return f"VERSION={self.env['VERSION']}"
        return " ".join(self.command or ())[:40]


_NOT_TEMPLATE: dict[str, Any] = {"replicas": True, "deploy": True}
_NOT_TEMPLATE_PATHS = ("replicas", "deploy")
"""The same, as ``to_wire`` names them: the first part of a change's path."""


def spec_changes(old: ServiceSpec, new: ServiceSpec) -> tuple[Change, ...]:
    """``old`` → ``new`` field by field (camelCase paths, ``domain.diffs``), each marked with
    whether it needs new tasks."""
    return tuple(
        Change(c.path, c.old, c.new, c.path.split(".")[0] not in _NOT_TEMPLATE_PATHS)
        for c in diff(old.to_wire(), new.to_wire())
    )


def _cannot_finish(deploy: DeployConfig) -> str | None:
    """Rollout settings that can never work as written, refused at admission (checked before
    any task changes): the analysis of a canary that no window would ever run, a deadline no
    task could meet."""
    update = deploy.update_config
    if update.healthy_deadline > update.progress_deadline:
        return (
            "deploy.updateConfig: healthyDeadline is longer than progressDeadline: a task could "
            "not even be judged before the rollout times out"
        )
    canary = deploy.canary
    if (
        deploy.strategy == Strategy.CANARY
        and canary is not None
        and canary.analysis is not None
        and not canary.defaulted  # the default steps hold each weight one window
    ):
        interval = canary.analysis.interval
        weighted = False
        window_fits = False
        for step in canary.steps:
            if step.set_weight is not None:
                weighted = step.set_weight > 0
            elif weighted and (isinstance(step.pause, dict) or (step.pause or 0) >= interval):
                window_fits = True
        if not window_fits:
            return (
                f"deploy.canary.analysis: no pause after a setWeight above 0 lasts the analysis "
                f"interval ({interval:g}s): the canary would never be analysed"
            )
    blue_green = deploy.blue_green
    if (
        deploy.strategy == Strategy.BLUE_GREEN
        and blue_green is not None
        and blue_green.analysis is not None
        and 0 < blue_green.soak < blue_green.analysis.interval
    ):
        return (
            f"deploy.blueGreen: soak ({blue_green.soak:g}s) is shorter than the analysis "
            f"interval ({blue_green.analysis.interval:g}s): no window would close"
        )
    return None


def service_from_document(doc: Any) -> ServiceSpec:
    """A YAML/JSON document ``{apiVersion, kind: Service, metadata: {name, labels}, spec}`` →
    ServiceSpec, with errors that name the field (``spec.replicas: …``)."""
    if not isinstance(doc, dict):
        raise ValidationError("expected a mapping with apiVersion, kind, metadata and spec")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise ValidationError(
            f"must be {API_VERSION!r}, got {doc.get('apiVersion')!r}", "apiVersion"
        )
    if doc.get("kind") != "Service":
        raise ValidationError(f"must be 'Service', got {doc.get('kind')!r}", "kind")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or "name" not in meta:
        raise ValidationError("required field is missing", "metadata.name")
    unknown = set(meta) - {"name", "labels"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", "metadata")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ValidationError("required mapping is missing", "spec")
    for key in ("name", "labels"):
        if key in spec:
            raise ValidationError(f"unknown field {key!r} (it belongs in metadata)", "spec")
    try:
        data = {**spec, "name": meta["name"], "labels": meta.get("labels") or {}}
        return parse_model(ServiceSpec, data)
    except ValidationError as exc:
        field = exc.field or ""
        if field in ("name", "labels") or field.startswith("labels."):
            raise ValidationError(exc.reason, f"metadata.{field}") from None
        raise ValidationError(exc.reason, f"spec.{field}" if field else "spec") from None


def service_to_document(spec: ServiceSpec) -> dict[str, Any]:
    """The inverse of service_from_document, for ``warren service inspect -o yaml``."""
    body = spec.to_wire()
    meta: dict[str, Any] = {"name": body.pop("name")}
    labels = body.pop("labels", {})
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": "Service", "metadata": meta, "spec": body}


MAPS = ("env", "labels")
"""The spec's free-form maps, whose keys a change removes with null."""


def _merge(base: dict[str, Any], changes: Mapping[str, Any], drop: bool = True) -> dict[str, Any]:
    """Deep merge for partial updates: mappings merge key by key, anything else replaces. None
    removes the key of the spec itself (``{"image": "x", "command": None}`` switches a service
    to an image; the field is then its default) and of a map (``env``, ``labels``); in a nested
    object it is a value, which the spec's check takes where the field may be null."""
    out = dict(base)
    for key, value in changes.items():
        if value is None and drop:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, drop=key in MAPS)
        else:
            out[key] = value
    return out


def patch_spec(
    spec: ServiceSpec, changes: Mapping[str, Any], env_rm: Iterable[str] = ()
) -> ServiceSpec:
    """``spec`` with a partial camelCase ``changes`` merged in (``--env K=V`` adds to the env)
    and the ``env_rm`` keys removed. Errors name the field as ``spec.FIELD``."""
    if "name" in changes and changes["name"] != spec.name:
        raise UnprocessableError("a service cannot be renamed", "spec.name")
    if "image" in changes and changes["image"] is not None and spec.command is not None:
        changes = {"command": None, **changes}
    if "command" in changes and changes["command"] is not None and spec.image is not None:
        changes = {"image": None, **changes}
    check = changes.get("healthCheck")
    if isinstance(check, Mapping) and any(check.get(kind) is not None for kind in _PROBE_KINDS):
        # A probe of another kind replaces the old one: merged, the spec would have both.
        changes = {**changes, "healthCheck": {**dict.fromkeys(_PROBE_KINDS), **check}}
    merged = _merge(spec.to_wire(), changes)
    for key in env_rm:
        if key not in merged.get("env", {}):
            # Each key is one the document allows: a key the service has not is its state.
            raise ConflictError(f"envRm: {key} is not set")
        del merged["env"][key]
    try:
        return parse_model(ServiceSpec, merged)
    except ValidationError as exc:  # an UnprocessableError stays one
        raise type(exc)(exc.reason, f"spec.{exc.field}" if exc.field else "spec") from None
