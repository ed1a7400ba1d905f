"""How a deployment starts, and where a rollback goes. Pure.

A deployment is created in the same write as the change of the service it carries out — a new
revision, a rollback, a fast-track back to the stable spec — and from then on only the
deployment controller writes it. Creating one never touches the one before it: the controller
supersedes that one, or links it to the rollback that undoes it (``domain.transitions``).

- **Where an update starts.** From what the slots serve (``StrategyKind.stable_of``): a canary
  not promoted yet leaves its *stable* revision, never the unvalidated canary — the newer
  update's own canary starts at step 1 beside the stable tasks, and the old canary goes.
- **Fast-track rollback.** Applying again the spec an unpromoted canary (or a green not yet
  switched to) started from drops the release: a rollback to the stable revision, instant since
  its tasks never stopped — weight 0 for the canary at once, no new task, no step, no analysis.
- **Good revisions.** A revision is *good* when a deployment to it succeeded, when it served
  before the oldest deployment kept, or when a failed release fell back to it. A rollback —
  automatic or by ``warren service rollback`` — goes back to a good revision, never to one
  whose update failed; with none to go to, a manual rollback is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..domain import transitions
from ..domain.deployments import (
    Deployment,
    DeploymentKind,
    Phase,
    Reason,
    RolloutConfig,
    deployment_id,
)
from ..domain.services import Service
from ..domain.specs import ServiceSpec
from .strategies import STRATEGIES, kind_of
from .strategies.rolling import ROLLING

__all__ = [
    "fast_track_target",
    "good_revisions",
    "last_good_revision",
    "new_rollback",
    "new_update",
    "newest_good_revision",
    "previous_revision",
    "starts_from",
    "undone_by_rollback",
]


def starts_from(active: Deployment | None, current: int) -> int:
    """The revision a new update starts from: what the service's slots serve."""
    if active is None or not active.active or active.kind != DeploymentKind.UPDATE:
        return current
    return kind_of(active).stable_of(active) or current


def fast_track_target(
    active: Deployment | None, spec_of: Callable[[int], ServiceSpec | None], new: ServiceSpec
) -> int | None:
    """The stable revision of an active, unpromoted canary or blue/green release when ``new``
    is its spec again (replicas aside): the release is dropped for it. Else None."""
    if active is None or not active.active or active.kind != DeploymentKind.UPDATE:
        return None
    stable = active.from_revision
    if stable is None or kind_of(active).stable_of(active) != stable:
        return None  # promoted, or a rolling update: the slots run the new revision already
    spec = spec_of(stable)
    return stable if spec is not None and spec.same_template(new) else None


def new_update(
    service: Service, number: int, spec: ServiceSpec, start: int, now: float, sequence: int
) -> Deployment:
    """An update of ``service`` to revision ``number`` (``spec``), from ``start``. A release
    by weights gives the new revision weight 0 from this very write: a canary an update drops
    loses its traffic at once, before the new release's first look."""
    strategy = str(spec.deploy.strategy)
    weighted = STRATEGIES.get(strategy, ROLLING).weighted
    d = _new(
        service.name, sequence, now, strategy=strategy, from_revision=start,
        to_revision=number, replicas=spec.replicas,
        config=RolloutConfig.for_update(spec.deploy),
        weights=((start, 100), (number, 0)) if weighted else (),
    )  # fmt: skip
    return transitions.start(d, now, Reason.NEW_REVISION, f"update: revision {start} → {number}")


def first_release(service: Service, now: float) -> Deployment:
    """The release of a new service whose spec has a pre-deploy job: its revision 1, slot by
    slot, once the job has passed (a new service without one needs no deployment)."""
    spec = service.spec
    d = _new(
        service.name, 1, now, strategy=str(spec.deploy.strategy), from_revision=None,
        to_revision=service.revision, replicas=spec.replicas,
        config=RolloutConfig.for_update(spec.deploy),
    )  # fmt: skip
    return transitions.start(d, now, Reason.NEW_REVISION, "create: revision 1")


def new_rollback(
    service: Service,
    target: int,
    cause: Reason,
    now: float,
    sequence: int,
    undoes: Deployment | None,
    note: str = "",
) -> Deployment:
    """A rollback of ``service`` (at its current revision) to ``target``, with the rollback
    config; ``undoes``: the deployment it undoes (the controller links the two); ``note``: why
    this target, for the log."""
    deploy = service.spec.deploy
    # Undoing a release whose stable revision still serves every slot (a canary, a green not
    # switched to): that revision gets all the traffic in this very write.
    warm = (
        undoes is not None
        and undoes.kind == DeploymentKind.UPDATE
        and undoes.from_revision == target
        and kind_of(undoes).stable_of(undoes) == target
    )
    d = _new(
        service.name, sequence, now, kind=DeploymentKind.ROLLBACK, strategy=str(deploy.strategy),
        from_revision=service.revision, to_revision=target, replicas=service.spec.replicas,
        config=RolloutConfig.for_rollback(deploy.rollback_config, deploy.update_config),
        rollback_of=undoes.id if undoes is not None else None, cause=str(cause),
        weights=((target, 100),) if warm else (),
    )  # fmt: skip
    message = f"rollback: revision {service.revision} → {target}" + (f", {note}" if note else "")
    return transitions.start(d, now, cause, message)


def _new(service: str, sequence: int, now: float, **fields: Any) -> Deployment:
    return Deployment(
        id=deployment_id(service, sequence), service=service, started_at=now, updated_at=now,
        progress_at=now, **fields,
    )  # fmt: skip


def undone_by_rollback(latest: Deployment | None) -> Deployment | None:
    """The deployment a rollback started now undoes: the active one, or one whose rollback
    was decided but not started yet."""
    if latest is None:
        return None
    if latest.active or (latest.phase == Phase.ROLLING_BACK and latest.rolled_back_by is None):
        return latest
    return None


def good_revisions(deployments: Sequence[Deployment]) -> set[int]:
    """Revisions known to have served well (see the module's docstring)."""
    good = {d.to_revision for d in deployments if d.phase == Phase.SUCCEEDED}
    good |= {d.reverted_to for d in deployments if d.reverted_to is not None}
    first = deployments[0] if deployments else None
    if first is not None and first.kind == DeploymentKind.UPDATE and first.from_revision:
        good.add(first.from_revision)  # what served before (a rollback's, it may have failed)
    return good


def _newest_good(
    deployments: Sequence[Deployment], other_than: int, kept: Collection[int] | None
) -> int | None:
    """The good revision that served most recently, other than ``other_than``."""
    good = good_revisions(deployments)
    for d in reversed(deployments):
        for rev in (d.to_revision, d.reverted_to, d.from_revision):
            if rev is not None and rev != other_than and rev in good and _kept(rev, kept):
                return rev
    return None


def newest_good_revision(deployments: Sequence[Deployment]) -> int | None:
    """The good revision that served most recently (kept from trimming: the last place a
    failed update can go back to)."""
    return _newest_good(deployments, 0, None)


def _kept(revision: int | None, kept: Collection[int] | None) -> bool:
    return revision is not None and (kept is None or revision in kept)


def last_good_revision(
    deployments: Sequence[Deployment], failed: Deployment, kept: Collection[int] | None = None
) -> int | None:
    """Where the automatic rollback of ``failed`` goes: the revision it started from if that
    one is good, else the last good one (revision 1 succeeded, 2's update was paused by a
    failure, 3's update fails → back to 1, not 2) — among the revisions still ``kept`` (not
    trimmed by ``revisionHistoryLimit``). None: nothing left to go back to."""
    start = failed.from_revision
    if start in good_revisions(deployments) and _kept(start, kept):
        return start
    newest = _newest_good(deployments, failed.to_revision, kept)
    if newest is not None:
        return newest
    return start if _kept(start, kept) else None


def previous_revision(
    deployments: Sequence[Deployment], current: int, kept: Collection[int] | None = None
) -> int | None:
    """What ``warren service rollback`` goes back to: the good revision that served before
    ``current`` went live — by the newest deployment that made it live, an update or a rollback
    (two rollbacks flip between two good revisions, as in Swarm), passing over those that left
    a failed revision (then an older one says: 1 → 2 succeeded, 2 → 3 failed and was rolled
    back to 2 → back to 1). Never a revision whose update failed, nor one trimmed: with none,
    None."""
    good = good_revisions(deployments)
    for d in reversed(deployments):
        start = d.from_revision
        if d.phase != Phase.SUCCEEDED or d.to_revision != current or start == current:
            continue
        if start in good and _kept(start, kept):
            return start
    return None
