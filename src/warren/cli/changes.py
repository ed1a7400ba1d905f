"""The flags that change a service, declared once: ``service create``, ``service update`` and
``deploy plan`` take them through ``@change_flags``, and ``Changes.to_spec`` turns the ones given
into a partial camelCase spec. A new flag is one row of ``FLAGS`` (and its spec field). Defaults in
the help are the spec's (docs/services.md); an update changes only the flags it is given."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from ..domain.errors import ValidationError
from .flags import DURATION, parse_env, parse_publish

__all__ = ["FLAGS", "ChangeFlag", "Changes", "change_flags"]

CREATE, UPDATE, PLAN = "create", "update", "plan"
_ALL = frozenset({CREATE, UPDATE, PLAN})


@dataclass(frozen=True)
class ChangeFlag:
    """One change flag: its parameter, its option, where its value goes in the spec (a dotted
    camelCase path; None for the flags ``Changes.to_spec`` combines: env, ports, health check),
    and the commands that take it."""

    name: str
    decl: str
    """Its long option, e.g. ``--image``."""
    type: Any
    option: Any  # typer.models.OptionInfo
    path: str | None = None
    on: frozenset[str] = _ALL
    default: Any = None


def _flag(
    name: str, type_: Any, *decls: str, path: str | None = None,
    on: frozenset[str] = _ALL, default: Any = None, **option: Any,
) -> ChangeFlag:  # fmt: skip
    return ChangeFlag(name, decls[0], type_, typer.Option(*decls, **option), path, on, default)


def _duration(name: str, decl: str, path: str | None, help: str) -> ChangeFlag:
    return _flag(name, float | None, decl, path=path, parser=DURATION, metavar="DUR", help=help)


_REPEATED = list[str]
FLAGS: tuple[ChangeFlag, ...] = (
    _flag("image", str | None, "--image", path="image", metavar="IMAGE",
          help="Container image (docker driver)."),
    _flag("command", str | None, "--command", path="command", metavar="CMD",
          help="Command line to run (process driver); with --image, the container's."),
    _flag("driver", str | None, "--driver", path="driver", metavar="NAME",
          help="docker | process (default: docker with --image, else process)."),
    _flag("pull", str | None, "--pull", path="pullPolicy", metavar="POLICY",
          help="always | if-not-present | never: pulling the image (docker; default "
               "if-not-present)."),
    _flag("stop_signal", str | None, "--stop-signal", path="stopSignal", metavar="SIG",
          help="Signal that asks a task to stop (default SIGTERM)."),
    _flag("replicas", int | None, "--replicas", "-r", path="replicas", min=0, metavar="N",
          help="Tasks (default 1)."),
    _flag("env", _REPEATED, "--env", "-e", default=[], metavar="K=V", help="Set K; repeatable."),
    _flag("env_rm", _REPEATED, "--env-rm", on=frozenset({UPDATE, PLAN}), default=[], metavar="K",
          help="Remove K; repeatable."),
    _flag("publish", _REPEATED, "--publish", "-p", default=[], metavar="PORT[:TARGET][/tls]",
          help="Ingress port (repeatable); TARGET: the task's; /tls: TLS ends here."),
    _flag("publish_add", _REPEATED, "--publish-add", on=frozenset({UPDATE}), default=[],
          metavar="PORT[:TARGET][/tls]", help="Publish one more port (repeatable); the others "
          "stay."),
    _flag("publish_rm", _REPEATED, "--publish-rm", on=frozenset({UPDATE}), default=[],
          metavar="PORT", help="Stop publishing PORT (repeatable)."),
    _flag("tls_cert", str | None, "--tls-cert", metavar="FILE",
          help="PEM certificate chain of the /tls ports (on the nodes)."),
    _flag("tls_key", str | None, "--tls-key", metavar="FILE", help="PEM key of that certificate."),
    _flag("host", str | None, "--host", path="host", metavar="HOST",
          help="Route this host on the shared port."),
    _flag("paths", _REPEATED, "--path", path="paths", default=[], metavar="PREFIX",
          help="Only this path prefix of --host (repeatable; replaces the service's list). "
               "The longest prefix among the host's services wins."),
    _flag("health_http", str | None, "--health-http", metavar="PATH",
          help="HTTP probe: GET this path."),
    _flag("health_tcp", bool, "--health-tcp", default=False, metavar="",
          help="TCP probe: connect to the task's port."),
    _flag("health_cmd", str | None, "--health-cmd", metavar="CMD",
          help="Exec probe: this command exits 0."),
    _duration("health_interval", "--health-interval", "healthCheck.interval", "Default 1s."),
    _duration("health_timeout", "--health-timeout", "healthCheck.timeout", "Default 1s."),
    _flag("health_retries", int | None, "--health-retries", path="healthCheck.retries", min=1,
          metavar="N", help="Failed probes in a row that make a task unhealthy (default 3)."),
    _duration("health_start_period", "--health-start-period", "healthCheck.startPeriod",
              "Failed probes do not count this long after a start (slow starters; default 0s)."),
    _flag("strategy", str | None, "--strategy", path="deploy.strategy", metavar="NAME",
          help="rolling (default) | blue-green | canary | ab-test."),
    _flag("parallelism", int | None, "--parallelism", path="deploy.updateConfig.parallelism",
          min=0, metavar="N", help="Tasks replaced at a time (default 1; 0: all)."),
    _duration("delay", "--delay", "deploy.updateConfig.delay", "Between batches (default 0s)."),
    _flag("failure_action", str | None, "--failure-action",
          path="deploy.updateConfig.failureAction", metavar="ACTION",
          help="rollback (default) | pause | continue."),
    _flag("order", str | None, "--order", path="deploy.updateConfig.order", metavar="ORDER",
          help="start-first (default) | stop-first."),
    _duration("monitor", "--monitor", "deploy.updateConfig.monitor",
              "How long a new task must stay healthy to count (default 5s)."),
    _flag("max_failure_ratio", float | None, "--max-failure-ratio",
          path="deploy.updateConfig.maxFailureRatio", min=0, max=1, metavar="R",
          help="Share of new tasks that may fail before the failure action (default 0)."),
    _duration("healthy_deadline", "--healthy-deadline", "deploy.updateConfig.healthyDeadline",
              "A new task not ready by then has failed (default 1m)."),
    _duration("progress_deadline", "--progress-deadline", "deploy.updateConfig.progressDeadline",
              "A deployment with no progress that long has failed (default 10m)."),
    _flag("rollback_parallelism", int | None, "--rollback-parallelism",
          path="deploy.rollbackConfig.parallelism", min=0, metavar="N",
          help="Rollback batch size (default 0: all)."),
    _flag("rollback_order", str | None, "--rollback-order", path="deploy.rollbackConfig.order",
          metavar="ORDER", help="start-first (default) | stop-first."),
    _duration("stop_grace", "--stop-grace", "stopGrace",
              "From the stop signal to SIGKILL (default 10s)."),
    _duration("drain_timeout", "--drain-timeout", "drainTimeout",
              "How long in-flight requests may take once out of routing; one still running then "
              "gets 504 (default 5s)."),
)  # fmt: skip

_PROBES = ("health_http", "health_tcp", "health_cmd")


class Changes:
    """The change flags a command was given (a value, not the default)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        defaults = {f.name: f.default for f in FLAGS}
        self.given = {k: v for k, v in values.items() if v != defaults[k]}

    def get(self, name: str) -> Any:
        return self.given.get(name, next(f.default for f in FLAGS if f.name == name))

    def to_spec(self, *, ports: bool = True) -> dict[str, Any]:
        """The partial spec these flags make. ``ports=False``: ``--publish``, ``--tls-cert`` and
        ``--tls-key`` are left to the caller (``--publish-add`` uses the TLS flags)."""
        spec: dict[str, Any] = {}
        for flag in FLAGS:
            if flag.path and flag.name in self.given:
                _put(spec, flag.path, self.given[flag.name])
        if "env" in self.given:
            spec["env"] = parse_env(self.given["env"])
        if ports and {"publish", "tls_cert", "tls_key"} & self.given.keys():
            spec["ports"] = parse_publish(
                self.get("publish"), self.get("tls_cert"), self.get("tls_key")
            )
        probes = [name for name in _PROBES if name in self.given]
        if len(probes) > 1:
            raise ValidationError("use only one of --health-http, --health-tcp, --health-cmd")
        if probes:
            probe = probes[0]
            check = spec.setdefault("healthCheck", {})
            if probe == "health_http":
                check["http"] = {"path": self.given[probe]}
            elif probe == "health_tcp":
                check["tcp"] = {}
            else:
                check["exec"] = {"command": self.given[probe]}
        elif "healthCheck" in spec:
            # A timing alone would change nothing a person can see: say which probe it needs.
            timing = next(f for f in FLAGS if f.name in self.given and f.path in _TIMINGS)
            raise ValidationError("needs --health-http, --health-tcp or --health-cmd", timing.decl)
        return spec


_TIMINGS = {f"healthCheck.{k}" for k in ("interval", "timeout", "retries", "startPeriod")}


def _put(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        spec = spec.setdefault(key, {})
    spec[leaf] = value


F = TypeVar("F", bound=Callable[..., Any])


def change_flags(command: str) -> Callable[[F], F]:
    """Give ``command``'s change flags to the decorated function in place of its ``changes``
    parameter, which receives them as one ``Changes`` (as docker/cli's ``addServiceFlags``)."""
    flags = [f for f in FLAGS if command in f.on]

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn, eval_str=True)
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name != "changes":
                params.append(param)
                continue
            params.extend(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=f.default,
                    annotation=Annotated[f.type, f.option],
                )
                for f in flags
            )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f in flags}
            return fn(*args, changes=Changes(given), **kwargs)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        )
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate
