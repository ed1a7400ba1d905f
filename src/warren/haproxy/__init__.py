"""HAProxy as Warren's data plane (``warren server|worker --data-plane haproxy``): a real HAProxy
per node, driven through its Runtime API by ``warren ingress`` (``HaproxyIngress``), its counters
read from its per-request log lines. ``config`` works out what HAProxy must be told (pure),
``runtime`` speaks its Runtime API, ``process`` starts, adopts, reloads and stops it.

Must not import control, agent, api or store: only ``ingress`` (its routing table, counters and
limits), ``ports``, ``domain``, the standard library.
"""

from __future__ import annotations

from .plane import HaproxyIngress

__all__ = ["HaproxyIngress"]
