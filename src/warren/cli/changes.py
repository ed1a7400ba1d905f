"""The flags that change a service — ``service create``, ``service update`` and ``deploy plan``
take the same — and how they become a partial camelCase spec. Defaults in the help are the
spec's (docs/services.md); an update changes only the flags it is given."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .flags import DURATION, DeployFlags, HealthFlags, parse_env, parse_publish

__all__ = [
    "Command",
    "Delay",
    "DrainTimeout",
    "Driver",
    "Env",
    "EnvRm",
    "FailureAction",
    "HealthCmd",
    "HealthHttp",
    "HealthTcp",
    "HealthyDeadline",
    "Host",
    "Image",
    "Interval",
    "MaxFailureRatio",
    "Monitor",
    "Order",
    "Parallelism",
    "ProgressDeadline",
    "Publish",
    "PublishAdd",
    "PublishRm",
    "Pull",
    "Replicas",
    "Retries",
    "RollbackOrder",
    "RollbackParallelism",
    "StartPeriod",
    "StopGrace",
    "StopSignal",
    "Strategy",
    "Timeout",
    "TlsCert",
    "TlsKey",
    "spec_changes",
]  # fmt: skip

Image = Annotated[
    str | None, typer.Option("--image", metavar="IMAGE", help="Container image (docker driver).")
]
Command = Annotated[
    str | None,
    typer.Option(
        "--command",
        metavar="CMD",
        help="Command line to run (process driver); with --image, the container's.",
    ),
]
Driver = Annotated[
    str | None,
    typer.Option(
        "--driver",
        metavar="NAME",
        help="docker | process (default: docker with --image, else process).",
    ),
]
Pull = Annotated[
    str | None,
    typer.Option(
        "--pull",
        metavar="POLICY",
        help="always | if-not-present | never: pulling the image (docker; default if-not-present).",
    ),
]
StopSignal = Annotated[
    str | None,
    typer.Option(
        "--stop-signal", metavar="SIG", help="Signal that asks a task to stop (default SIGTERM)."
    ),
]
Env = Annotated[list[str], typer.Option("--env", "-e", metavar="K=V", help="Set K; repeatable.")]
Publish = Annotated[
    list[str],
    typer.Option(
        "--publish",
        "-p",
        metavar="PORT[:TARGET][/tls]",
        help="Ingress port (repeatable); TARGET: the task's; /tls: TLS ends here.",
    ),
]
PublishAdd = Annotated[
    list[str],
    typer.Option(
        "--publish-add",
        metavar="PORT[:TARGET][/tls]",
        help="Publish one more port (repeatable); the others stay.",
    ),
]
PublishRm = Annotated[
    list[str],
    typer.Option("--publish-rm", metavar="PORT", help="Stop publishing PORT (repeatable)."),
]
TlsCert = Annotated[
    str | None,
    typer.Option(
        "--tls-cert", metavar="FILE", help="PEM certificate chain of the /tls ports (on the nodes)."
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option("--tls-key", metavar="FILE", help="PEM key of that certificate."),
]
EnvRm = Annotated[list[str], typer.Option("--env-rm", metavar="K", help="Remove K; repeatable.")]
Host = Annotated[
    str | None,
    typer.Option("--host", metavar="HOST", help="Route this host on the shared port."),
]
Replicas = Annotated[
    int | None, typer.Option("--replicas", "-r", min=0, metavar="N", help="Tasks (default 1).")
]
HealthHttp = Annotated[
    str | None, typer.Option("--health-http", metavar="PATH", help="HTTP probe: GET this path.")
]
HealthTcp = Annotated[
    bool, typer.Option("--health-tcp", metavar="", help="TCP probe: connect to the task's port.")
]
HealthCmd = Annotated[
    str | None,
    typer.Option("--health-cmd", metavar="CMD", help="Exec probe: this command exits 0."),
]
Interval = Annotated[
    float | None,
    typer.Option("--health-interval", parser=DURATION, metavar="DUR", help="Default 1s."),
]
Timeout = Annotated[
    float | None,
    typer.Option("--health-timeout", parser=DURATION, metavar="DUR", help="Default 1s."),
]
Retries = Annotated[
    int | None,
    typer.Option(
        "--health-retries",
        min=1,
        metavar="N",
        help="Failed probes in a row that make a task unhealthy (default 3).",
    ),
]
StartPeriod = Annotated[
    float | None,
    typer.Option(
        "--health-start-period",
        parser=DURATION,
        metavar="DUR",
        help="Failed probes do not count this long after a start (slow starters; default 0s).",
    ),
]
Strategy = Annotated[
    str | None,
    typer.Option("--strategy", metavar="NAME", help="rolling (default) | blue-green | canary."),
]
Parallelism = Annotated[
    int | None,
    typer.Option(
        "--parallelism", min=0, metavar="N", help="Tasks replaced at a time (default 1; 0: all)."
    ),
]
Delay = Annotated[
    float | None,
    typer.Option("--delay", parser=DURATION, metavar="DUR", help="Between batches (default 0s)."),
]
FailureAction = Annotated[
    str | None,
    typer.Option(
        "--failure-action", metavar="ACTION", help="rollback (default) | pause | continue."
    ),
]
Order = Annotated[
    str | None,
    typer.Option("--order", metavar="ORDER", help="start-first (default) | stop-first."),
]
Monitor = Annotated[
    float | None,
    typer.Option(
        "--monitor",
        parser=DURATION,
        metavar="DUR",
        help="How long a new task must stay healthy to count (default 5s).",
    ),
]
MaxFailureRatio = Annotated[
    float | None,
    typer.Option(
        "--max-failure-ratio",
        min=0,
        max=1,
        metavar="R",
        help="Share of new tasks that may fail before the failure action (default 0).",
    ),
]
HealthyDeadline = Annotated[
    float | None,
    typer.Option(
        "--healthy-deadline",
        parser=DURATION,
        metavar="DUR",
        help="A new task not ready by then has failed (default 1m).",
    ),
]
ProgressDeadline = Annotated[
    float | None,
    typer.Option(
        "--progress-deadline",
        parser=DURATION,
        metavar="DUR",
        help="A deployment with no progress that long has failed (default 10m).",
    ),
]
RollbackParallelism = Annotated[
    int | None,
    typer.Option(
        "--rollback-parallelism", min=0, metavar="N", help="Rollback batch size (default 0: all)."
    ),
]
RollbackOrder = Annotated[
    str | None,
    typer.Option("--rollback-order", metavar="ORDER", help="start-first (default) | stop-first."),
]
StopGrace = Annotated[
    float | None,
    typer.Option(
        "--stop-grace",
        parser=DURATION,
        metavar="DUR",
        help="From the stop signal to SIGKILL (default 10s).",
    ),
]
DrainTimeout = Annotated[
    float | None,
    typer.Option(
        "--drain-timeout",
        parser=DURATION,
        metavar="DUR",
        help=(
            "How long in-flight requests may take once out of routing; one still running then"
            " gets 504 (default 5s)."
        ),
    ),
]

_DEPLOY_FLAGS = (
    "strategy", "parallelism", "delay", "failure_action", "order", "monitor",
    "max_failure_ratio", "healthy_deadline", "progress_deadline", "rollback_parallelism",
    "rollback_order",
)  # fmt: skip


def spec_changes(flags: dict[str, Any]) -> dict[str, Any]:
    """The change flags of a command (its ``locals()``) → a partial spec."""
    changes: dict[str, Any] = {}
    for flag, field in (
        ("image", "image"), ("command", "command"), ("driver", "driver"),
        ("pull", "pullPolicy"), ("stop_signal", "stopSignal"),
    ):  # fmt: skip
        if flags[flag] is not None:
            changes[field] = flags[flag]
    if flags["env"]:
        changes["env"] = parse_env(flags["env"])
    if flags["publish"] or flags.get("tls_cert") or flags.get("tls_key"):
        changes["ports"] = parse_publish(
            flags["publish"], flags.get("tls_cert"), flags.get("tls_key")
        )
    if flags["host"] is not None:
        changes["host"] = flags["host"]
    if flags["replicas"] is not None:
        changes["replicas"] = flags["replicas"]
    check = HealthFlags(
        flags["health_http"], flags["health_tcp"], flags["health_cmd"],
        flags["health_interval"], flags["health_timeout"], flags["health_retries"],
        flags["health_start_period"],
    ).to_spec()  # fmt: skip
    if check is not None:
        changes["healthCheck"] = check
    deploy = DeployFlags(**{name: flags[name] for name in _DEPLOY_FLAGS}).to_spec()
    if deploy:
        changes["deploy"] = deploy
    if flags["stop_grace"] is not None:
        changes["stopGrace"] = flags["stop_grace"]
    if flags["drain_timeout"] is not None:
        changes["drainTimeout"] = flags["drain_timeout"]
    return changes
