"""Turning command-line flags into (partial) camelCase specs, and the parameter types that make a
bad flag fail with a message naming the flag."""

from __future__ import annotations

import os
import time
from typing import Any

import typer

from ..domain.durations import parse_duration
from ..domain.errors import ValidationError
from ..domain.logs import parse_since
from ..domain.specs import parse_memory

__all__ = [
    "DURATION",
    "POSITIVE_DURATION",
    "SINCE",
    "SIZE",
    "DeployFlags",
    "HealthFlags",
    "change_ports",
    "parse_env",
    "parse_publish",
]


def DURATION(value: str | float) -> float:
    """Typer parser for duration flags: ``500ms``, ``10s``, ``5m``."""
    if isinstance(value, float):
        return value
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise typer.BadParameter(exc.reason) from None


def POSITIVE_DURATION(value: str | float) -> float:
    """Typer parser for durations that cannot be 0 (a timeout of 0 would refuse everything)."""
    seconds = DURATION(value)
    if seconds <= 0:
        raise typer.BadParameter(f"must be more than 0, got {value!r}")
    return seconds


def SINCE(value: str) -> str:
    """Typer parser for ``--since``: checked here (a bad one is a usage error naming the flag),
    passed on as written — the server counts a duration back from its own clock."""
    try:
        parse_since(value, time.time())
    except ValidationError as exc:
        raise typer.BadParameter(exc.reason) from None
    return value


def SIZE(value: str | int) -> int:
    """Typer parser for sizes in bytes: ``10MiB``, ``512k``, ``1048576``."""
    if isinstance(value, int):
        return value
    try:
        return parse_memory(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected a size like 10MiB, 512k or 1048576, got {value!r}"
        ) from None


def parse_env(values: list[str]) -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"expected K=V, got {item!r}", "--env")
        env[key] = value
    return env


def parse_publish(
    values: list[str],
    tls_cert: str | None = None,
    tls_key: str | None = None,
    flag: str = "--publish",
) -> list[dict[str, Any]]:
    """``PORT[:TARGET][/tls]`` → the spec's ``ports``; a ``/tls`` port terminates TLS with
    ``--tls-cert`` and ``--tls-key`` (paths on the nodes that run an ingress)."""
    ports: list[dict[str, Any]] = []
    for item in values:
        numbers, slash, proto = item.partition("/")
        published, _, target = numbers.partition(":")
        if slash and proto != "tls":
            raise ValidationError(f"expected PORT[:TARGET][/tls], got {item!r}", flag)
        try:
            port: dict[str, Any] = {"published": int(published)}
            if target:
                port["target"] = int(target)
        except ValueError:
            raise ValidationError(f"expected PORT[:TARGET][/tls], got {item!r}", flag) from None
        if proto == "tls":
            if not tls_cert or not tls_key:
                raise ValidationError(
                    f"{item}: a /tls port needs --tls-cert FILE and --tls-key FILE", flag
                )
            # Paths on the server: the CLI's own, made absolute (the usual case: one machine).
            port["tls"] = {"cert": os.path.abspath(tls_cert), "key": os.path.abspath(tls_key)}
        ports.append(port)
    if (tls_cert or tls_key) and not any("tls" in p for p in ports):
        raise ValidationError(
            "--tls-cert/--tls-key need a port published with /tls (e.g. 8443:8080/tls)", flag
        )
    return ports


def change_ports(
    current: list[dict[str, Any]], add: list[dict[str, Any]], remove: list[str]
) -> list[dict[str, Any]]:
    """``--publish-add`` / ``--publish-rm`` on the service's current ports (as in ``docker
    service update``): a port added replaces one published on the same number."""
    try:
        gone = {int(p.partition(":")[0].partition("/")[0]) for p in remove}
    except ValueError:
        raise ValidationError(f"expected PORT, got {remove!r}", "--publish-rm") from None
    missing = gone - {p["published"] for p in current}
    if missing:
        raise ValidationError(
            f"port {', '.join(map(str, sorted(missing)))} is not published", "--publish-rm"
        )
    adding = {p["published"] for p in add}
    kept = [p for p in current if p["published"] not in gone | adding]
    return [*kept, *add]


_TIMING_FLAGS = {
    "interval": "--health-interval", "timeout": "--health-timeout",
    "retries": "--health-retries", "startPeriod": "--health-start-period",
}  # fmt: skip


class HealthFlags:
    """--health-http/--health-tcp/--health-cmd and their timings → ``healthCheck``."""

    def __init__(
        self,
        http: str | None,
        tcp: bool,
        cmd: str | None,
        interval: float | None,
        timeout: float | None,
        retries: int | None,
        start_period: float | None = None,
    ) -> None:
        self.http, self.tcp, self.cmd = http, tcp, cmd
        self.timings = {
            "interval": interval, "timeout": timeout, "retries": retries,
            "startPeriod": start_period,
        }  # fmt: skip

    def to_spec(self) -> dict[str, Any] | None:
        kinds = [k for k, on in (("http", self.http), ("tcp", self.tcp), ("exec", self.cmd)) if on]
        if len(kinds) > 1:
            raise ValidationError("use only one of --health-http, --health-tcp, --health-cmd")
        timings = {k: v for k, v in self.timings.items() if v is not None}
        if not kinds:
            if timings:
                raise ValidationError(
                    "needs --health-http, --health-tcp or --health-cmd",
                    _TIMING_FLAGS[next(iter(timings))],
                )
            return None
        check: dict[str, Any] = dict(timings)
        if self.http:
            check["http"] = {"path": self.http}
        elif self.tcp:
            check["tcp"] = {}
        else:
            check["exec"] = {"command": self.cmd}
        return check


class DeployFlags:
    """The rolling-update flags → ``deploy`` (only the ones given)."""

    def __init__(self, **flags: Any) -> None:
        self.flags = {k: v for k, v in flags.items() if v is not None}

    def to_spec(self) -> dict[str, Any]:
        f = self.flags
        update = {
            camel: f[name]
            for name, camel in (
                ("parallelism", "parallelism"),
                ("delay", "delay"),
                ("failure_action", "failureAction"),
                ("order", "order"),
                ("monitor", "monitor"),
                ("max_failure_ratio", "maxFailureRatio"),
                ("healthy_deadline", "healthyDeadline"),
                ("progress_deadline", "progressDeadline"),
            )
            if name in f
        }
        rollback = {
            camel: f[name]
            for name, camel in (
                ("rollback_parallelism", "parallelism"),
                ("rollback_order", "order"),
            )
            if name in f
        }
        deploy: dict[str, Any] = {}
        if "strategy" in f:
            deploy["strategy"] = f["strategy"]
        if update:
            deploy["updateConfig"] = update
        if rollback:
            deploy["rollbackConfig"] = rollback
        return deploy
