"""The ingress: the built-in HTTP data plane (``Ingress``, a ``warren.ports.DataPlane``) and its
routing table. It proxies requests on published ports and on the shared port (routed by Host) to
the ready endpoints of each service, and counts them per service and revision.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

from . import native

COMPILED = native.choose(__name__)
"""Whether the ingress runs compiled by mypyc (see ``native``), or as Python."""

from .limits import Limits  # noqa: E402 (after the choice of build)
from .proxy import Ingress  # noqa: E402
from .routing import RoutingTable, ServiceEntry, normalize_host  # noqa: E402

__all__ = ["COMPILED", "Ingress", "Limits", "RoutingTable", "ServiceEntry", "normalize_host"]
