"""One record per rollout strategy: everything the rest of Warren needs to know about it. Pure.

A strategy is its planner (the next record of a deployment, from a view of the service), the
revisions each slot runs while it drives the service, what the ingress needs beyond weights
(a preview header, a sticky cookie), the ``deploy plan`` preview, the analysis it judges with,
and whether (and when) ``deploy promote`` applies. The controllers, the API and the preview
look a strategy up in the registry (``strategies.kind_of``) and never test its name, so that a
new strategy is one module, one line in the registry and its name in ``ServiceSpec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...domain.deployments import Deployment
from ...domain.specs import Analysis, HeaderRoute, ServiceSpec
from ..previews import RolloutPlan
from ..reconciling import SlotTarget
from ..rollouts import RolloutView, Step

__all__ = ["RouteExtras", "StrategyKind"]


@dataclass(frozen=True, slots=True)
class RouteExtras:
    """What a release asks of the ingress besides the weights (in the deployment record)."""

    preview_header: str | None = None
    """Requests with this header set to ``1`` reach the new revision (blue/green's preview)."""
    sticky_cookie: str | None = None
    """A client stays on the revision that first answered it (canary sticky sessions)."""
    header_routes: tuple[HeaderRoute, ...] = ()
    """Requests that match one of these go to the new revision whatever the weights (a
    canary's ``setHeaderRoute`` steps reached so far)."""


def _no_slot_targets(d: Deployment, replicas: int) -> Mapping[int, SlotTarget] | None:
    return None


def _no_analysis(spec: ServiceSpec | None) -> Analysis | None:
    return None


def _no_route_extras(d: Deployment, spec: ServiceSpec | None) -> RouteExtras:
    return RouteExtras()


def _never_blocks(view: RolloutView) -> str | None:
    return None


def _moves_to_new(d: Deployment) -> int | None:
    return d.to_revision


def _one_interval(d: Deployment, analysis: Analysis, now: float) -> float:
    return analysis.interval


@dataclass(frozen=True, slots=True)
class StrategyKind:
    name: str
    """The ``deploy.strategy`` of a spec that selects it."""
    next_step: Callable[[RolloutView], Step]
    """The planner of an update: the deployment's next record."""
    preview: Callable[[ServiceSpec, int, int], RolloutPlan]
    """``(new spec, revision it starts from, revision it makes)`` → the rollout, step by step,
    for ``warren deploy plan``."""
    slot_targets: Callable[[Deployment, int], Mapping[int, SlotTarget] | None] = _no_slot_targets
    """The revisions each of ``replicas`` slots runs while the update drives the service; None:
    slot by slot — the update's ``target_slots`` run the new revision, every other slot keeps
    what it runs (``strategies.slot_revisions``)."""
    analysis: Callable[[ServiceSpec | None], Analysis | None] = _no_analysis
    """The analysis (and webhooks) the release judges with, from the new revision's spec."""
    route_extras: Callable[[Deployment, ServiceSpec | None], RouteExtras] = _no_route_extras
    promotable: bool = False
    """Whether ``warren deploy promote`` means something to it."""
    weighted: bool = False
    """It moves traffic by weights, step by step (the new revision starts at weight 0, in the
    write that creates the deployment); else slot by slot, in batches."""
    promotion_blocker: Callable[[RolloutView], str | None] = _never_blocks
    """Why a promotion must wait (``0/2 canary tasks healthy``), or None: ``promote`` is
    refused with it unless forced."""
    sample_window: Callable[[Deployment, Analysis, float], float] = _one_interval
    """How many seconds back the planner's samples of both revisions reach: one analysis
    interval (the window just closed), or — an A/B test — since the test began."""
    stable_of: Callable[[Deployment], int | None] = _moves_to_new
    """The revision a newer update starts from when it supersedes an active update of this
    strategy: what the slots serve. A canary not promoted yet (a green not switched to) leaves
    its stable revision; a rolling update, its new one (each slot keeps what it runs)."""
