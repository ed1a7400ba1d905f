"""Turning command-line flags into (partial) camelCase specs, and the parameter types that make a
bad flag fail with a message naming the flag."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import typer

from ..domain.durations import parse_duration
from ..domain.errors import ValidationError
from ..domain.logs import parse_since
from ..domain.sizes import parse_memory

__all__ = [
    "DURATION",
    "POSITIVE_DURATION",
    "SINCE",
    "SIZE",
    "UNTIL",
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


def UNTIL(value: str) -> float:
    """Typer parser for ``--until``: a duration from now (``2h``, ``3h30m``) or an RFC 3339
    time (``2026-12-24T18:00:00+01:00``) → Unix time, in the future."""
    try:
        when = datetime.fromisoformat(value.replace("z", "Z")).timestamp()
    except ValueError:
        try:
            when = time.time() + parse_duration(value)
        except ValidationError:
            raise typer.BadParameter(
                f"expected a duration like 2h or a time like 2026-12-24T18:00:00Z, got {value!r}"
            ) from None
    if when <= time.time():
        raise typer.BadParameter(f"must be in the future, got {value!r}")
    return when


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
