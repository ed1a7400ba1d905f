"""The ingress: the built-in HTTP data plane (``Ingress``, a ``warren.ports.DataPlane``) and its
routing table. It proxies requests on published ports and on the shared port (routed by Host) to
the ready endpoints of each service, and counts them per service and revision.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

from .limits import Limits
from .proxy import Ingress
from .routing import RoutingTable, ServiceEntry, normalize_host

__all__ = ["Ingress", "Limits", "RoutingTable", "ServiceEntry", "normalize_host"]
