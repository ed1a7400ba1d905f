"""Notifications of deployment events: the events a receiver can be told of, the formats it can
be told in, and the stored record of what each receiver was told. Pure, frozen; imports only
``domain.base``.

A deployment records its *milestones* (``domain.deployments.Milestone``: its start, every
change of phase, a resume, a promotion), each named by one ``DeploymentEvent``. The notifier
(``control/notifying.py``) POSTs each milestone to every receiver that wants it, and keeps in
the store, per deployment, the number of the last milestone each receiver was told of
(``Delivery``): a restarted manager resends only what was not acknowledged.

Key: ``/notifications/{service}/{sequence:08d}``, beside ``/deployments/{service}/…``. It is
created with the deployment (in the same write), so a deployment the notifier has not looked
at yet is known to be due; the notifier deletes it once the deployment has ended and every
receiver was told everything. A deployment without one is told to nobody: it was made before
notifications existed, or everything about it was delivered.
"""

from __future__ import annotations

from enum import StrEnum

from .base import Model

__all__ = ["Delivery", "DeploymentEvent", "NotifyFormat"]


class DeploymentEvent(StrEnum):
    """What a deployment notification is about — the one list (``deploy.notify[].on``).

    Each is a milestone the deployment controller records as it happens: a deployment's start
    or one of its transitions (``domain.transitions``)."""

    STARTED = "started"
    """A deployment was created: an update (new revision) or a rollback (manual, automatic,
    an abort's, a fast-track's)."""
    PAUSED = "paused"
    """``deploy pause``; a failure with ``failureAction: pause``; an inconclusive analysis
    window."""
    RESUMED = "resumed"
    """``deploy resume``."""
    AWAITING_PROMOTION = "awaiting_promotion"
    """A canary's ``pause: {}``; a blue/green release without ``autoPromote``."""
    PROMOTED = "promoted"
    """``deploy promote`` (an automatic promotion is no event: the release goes on to
    ``succeeded``)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """The release failed and did not roll back (a canary or green that failed goes back to
    its stable revision in the same write; ``failureAction: continue`` past the deadline); or
    its rollback failed."""
    ROLLING_BACK = "rolling_back"
    """The release failed (``failureAction: rollback``), or ``service rollback`` undoes it: a
    rollback deployment follows (with its own ``started``)."""
    ROLLED_BACK = "rolled_back"
    """The rollback that undid this release succeeded."""
    ABORTED = "aborted"
    """``deploy abort``: an update rolls back (``rolled_back`` follows), anything else stops."""
    SUPERSEDED = "superseded"
    """A newer update of the service took over."""


class NotifyFormat(StrEnum):
    JSON = "json"
    """Warren's JSON body (``docs/deployments.md``, Notifications)."""
    SLACK = "slack"
    """``{"text": "…"}``: one line, the shape of Slack's incoming webhooks (and of Mattermost's,
    Rocket.Chat's …)."""


class Delivery(Model):
    """What each receiver of one deployment's notifications was told."""

    deployment: str
    sent: dict[str, int] = {}
    """Receiver key (``planning.notifications.Receiver.key``) → number of the last milestone it
    was told of (or given up on). A receiver not in it has been told nothing yet."""
