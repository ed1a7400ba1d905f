"""Notifications of deployment events: who is told of a deployment, which of its milestones are
due to whom, what the POST says, and how a failed one is retried. Pure: no I/O, no clock reads
(the notifier, ``control/notifying.py``, does the sending and keeps the record).

A receiver is a URL, a format and the events it wants: the server's (``warren server --notify``,
every event, JSON) and the service's (``deploy.notify``). Receivers are told apart by their
*key*, a hash of format and URL — the same URL given twice is told once, of the events of
both; and the store keeps the key, never the URL.

Delivery is at least once, in order per receiver: a milestone is due to a receiver while its
number is above the one the receiver's cursor (``Delivery.sent``) holds. Retries: 1 s, 2 s,
4 s … up to ``max_delay``, ``attempts`` in all; an answer that will not change (a 4xx other
than 408, 425 and 429) is final at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..domain.deployments import Deployment, DeploymentKind, Milestone, Reason
from ..domain.notifications import Delivery, DeploymentEvent, NotifyFormat
from ..domain.specs import ServiceSpec

__all__ = [
    "Receiver",
    "RetryPolicy",
    "body",
    "due_receivers",
    "figures",
    "iso_time",
    "next_due",
    "redact",
    "retryable",
    "server_receiver",
    "service_receivers",
    "summary",
    "told_everything",
]

_ANALYSIS = frozenset(
    {Reason.ANALYSIS_PASSED, Reason.ANALYSIS_FAILED, Reason.ANALYSIS_INCONCLUSIVE}
)


@dataclass(frozen=True)
class Receiver:
    url: str
    format: NotifyFormat = NotifyFormat.JSON
    events: frozenset[DeploymentEvent] | None = None
    """None: every event."""
    source: str = "the server"
    """Where it was configured, for logs: ``the server`` (--notify) or ``service web``."""

    @property
    def key(self) -> str:
        """What the store keeps of it: a receiver whose URL or format changes is a new one."""
        return hashlib.sha256(f"{self.format} {self.url}".encode()).hexdigest()[:16]

    def wants(self, event: DeploymentEvent) -> bool:
        return self.events is None or event in self.events

    @property
    def label(self) -> str:
        """How logs and events name it: never its whole URL (a Slack URL's path is its
        secret)."""
        return f"{redact(self.url)} (of {self.source})"


def server_receiver(url: str) -> Receiver:
    return Receiver(url)


def service_receivers(cluster: Iterable[Receiver], spec: ServiceSpec | None) -> list[Receiver]:
    """Everyone told of the deployments of the service whose current spec is ``spec`` (None:
    removed — only the server's receivers): one per key, wanting what each of its entries
    wants."""
    found: dict[str, Receiver] = {}
    service = f"service {spec.name}" if spec is not None else ""
    configured = [
        *cluster,
        *(
            Receiver(n.url, n.format, frozenset(n.on) if n.on is not None else None, service)
            for n in (spec.deploy.notify if spec is not None else ())
        ),
    ]
    for receiver in configured:
        other = found.get(receiver.key)
        if other is not None:
            events = None
            if other.events is not None and receiver.events is not None:
                events = other.events | receiver.events
            receiver = Receiver(receiver.url, receiver.format, events, other.source)
        found[receiver.key] = receiver
    return list(found.values())


def next_due(d: Deployment, receiver: Receiver, told: int) -> Milestone | None:
    """The first milestone of ``d`` after number ``told`` that ``receiver`` wants."""
    return next((m for m in d.milestones if m.number > told and receiver.wants(m.event)), None)


def due_receivers(
    d: Deployment, delivery: Delivery, receivers: Sequence[Receiver]
) -> list[Receiver]:
    """The receivers with a milestone of ``d`` still to be told."""
    return [r for r in receivers if next_due(d, r, delivery.sent.get(r.key, 0)) is not None]


def told_everything(d: Deployment, delivery: Delivery, receivers: Sequence[Receiver]) -> bool:
    """``d`` has ended and every receiver was told all it wants: the record can go."""
    return d.phase.terminal and not due_receivers(d, delivery, receivers)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    """In all, the first included."""
    first_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 10.0
    """For one request, connection included."""

    def delay(self, failed: int) -> float:
        """The wait after ``failed`` attempts failed: 1 s, 2 s, 4 s … ``max_delay``."""
        return float(min(self.first_delay * 2 ** max(0, failed - 1), self.max_delay))


def retryable(status: int | None) -> bool:
    """Whether a later attempt may do better: no answer (None), a 5xx, 408, 425 or 429 —
    not any other answer (a 404 stays a 404)."""
    return status is None or status >= 500 or status in (408, 425, 429)


def redact(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/XYZ?a=b`` → ``https://hooks.slack.com/…``:
    scheme, host and port; no credentials, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def iso_time(t: float) -> str:
    """``2026-12-07T06:33:04.123Z``: ISO-8601, UTC, to the millisecond."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def figures(d: Deployment, m: Milestone, ready: int | None, desired: int | None) -> dict[str, Any]:
    """The numbers that go with milestone ``m``: the tasks of the deployment's revision ready
    and desired (as seen when it is sent), what the milestone's own decision measured, and the
    last analysis window judged before it."""
    out: dict[str, Any] = {}
    if ready is not None and desired is not None:
        out["readyTasks"], out["desiredTasks"] = ready, desired
    first = d.decision_count - len(d.decisions) + 1  # the number of the oldest decision kept
    analysis = None
    for number, decision in enumerate(d.decisions, start=first):
        if number > m.decision:
            break
        if number == m.decision and decision.measured:
            out["measured"] = dict(decision.measured)
        if decision.reason in _ANALYSIS and decision.measured:
            analysis = decision
    if analysis is not None:
        out["analysis"] = {**analysis.measured, "verdict": analysis.reason}
    return out


def body(
    d: Deployment, m: Milestone, fmt: NotifyFormat, ready: int | None, desired: int | None
) -> dict[str, Any]:
    """What is POSTed about milestone ``m`` of ``d`` (``docs/deployments.md``,
    Notifications)."""
    numbers = figures(d, m, ready, desired)
    if fmt == NotifyFormat.SLACK:
        return {"text": summary(d, m, numbers)}
    out: dict[str, Any] = {
        "service": d.service,
        "deployment": d.id,
        "kind": str(d.kind),
        "strategy": d.strategy,
        "event": str(m.event),
        "phase": str(m.phase),
        "reason": m.reason,
        "fromRevision": d.from_revision,
        "toRevision": d.to_revision,
        "message": m.message,
        "time": iso_time(m.time),
    }
    if numbers:
        out["figures"] = numbers
    return out


def summary(d: Deployment, m: Milestone, numbers: dict[str, Any] | None = None) -> str:
    """One line: ``web: rolling update web-2 (revision 1 → 2) succeeded — rolled out … (2/2
    tasks ready)``."""
    what = "rollback" if d.kind == DeploymentKind.ROLLBACK else f"{d.strategy} update"
    revisions = f"revision {d.from_revision} → {d.to_revision}"
    if d.from_revision is None:
        revisions = f"revision {d.to_revision}"
    event = str(m.event).replace("_", " ")
    line = f"{d.service}: {what} {d.id} ({revisions}) {event}"
    message = " ".join(m.message.split())
    if message:
        line += f" — {message}"
    numbers = numbers or {}
    if "readyTasks" in numbers:
        line += f" ({numbers['readyTasks']}/{numbers['desiredTasks']} tasks ready)"
    return line
