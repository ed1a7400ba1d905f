"""How far the drain of a node has come, from its tasks and their replacements. Pure.

The reconciler moves a draining node's tasks (``planning.reconciling``): each gets a
replacement in its slot on another node, and is shut down once that one is ready. So, per task
still wanting to run on the node:

- a replacement elsewhere that has a node → *moving*;
- only a replacement no node would take (unplaced, its message says why) → *stuck*;
- no replacement yet → waiting for its turn (``updateConfig.parallelism``) — unless its service
  already has a stuck replacement: the service's other tasks need the same driver and resources,
  so they are stuck too.

Worked example: node a holds web.1, web.2 (parallelism 1) and api.1; web.1's replacement waits
with "no ready node runs the process driver", api.1's runs on b → remaining 3, moving 1,
stuck 2 (web.1, and web.2 behind it): "draining: 2 tasks cannot move: no ready node runs the
process driver".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from ..domain.nodes import DrainStatus
from ..domain.tasks import Task

__all__ = ["drain_status"]


def drain_status(node: str, tasks: Iterable[Task]) -> DrainStatus:
    """``tasks``: every task of the cluster (at least those of the services on ``node``)."""
    live = [t for t in tasks if t.state.active]
    here = [t for t in live if t.node == node and t.wants_running]
    stopping = sum(1 for t in live if t.node == node and not t.wants_running)
    elsewhere: dict[tuple[str, int, int], list[Task]] = defaultdict(list)
    for t in live:
        if t.wants_running and t.node != node:
            elsewhere[(t.service, t.slot, t.revision)].append(t)
    moving = stuck = 0
    reasons: dict[str, str] = {}
    waiting: list[Task] = []
    for t in sorted(here, key=lambda t: (t.service, t.slot)):
        replacements = elsewhere.get((t.service, t.slot, t.revision), [])
        if not replacements:
            waiting.append(t)
        elif all(r.node is None and r.message for r in replacements):
            stuck += 1
            reasons.setdefault(t.service, replacements[0].message)
        else:
            moving += 1
    stuck += sum(1 for t in waiting if t.service in reasons)
    return DrainStatus(
        remaining=len(here),
        moving=moving,
        stuck=stuck,
        stopping=stopping,
        reason="; ".join(dict.fromkeys(reasons.values())),
    )
