"""Operator requests: what a person asked of a service's newest deployment — pause, resume,
promote, abort. Pure, frozen.

The API never writes a deployment: it stores the request (one per service, the last one wins,
like Kubernetes' ``spec.paused``), and the deployment controller — the one writer of
deployments — applies it on its next look, in the same write as the deployment it changes, and
answers it (applied, or refused with the reason). The API waits a bounded time for the answer.

Key: ``/requests/{service}``.
"""

from __future__ import annotations

from enum import StrEnum

from .base import Model

__all__ = ["Answer", "Intent", "OperatorRequest"]


class Intent(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"


class Answer(StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"


class OperatorRequest(Model):
    id: str
    service: str
    deployment: str
    """The deployment it was asked of: if a newer one took over meanwhile, it is refused."""
    intent: Intent
    full: bool = False
    """promote: skip every remaining step, not only the current pause."""
    force: bool = False
    """promote: even while the new revision's tasks are not all ready."""
    asked_at: float
    answer: Answer | None = None
    message: str = ""
    """Why it was refused, or what was done."""
    answered_at: float | None = None

    @property
    def pending(self) -> bool:
        return self.answer is None
