"""The ingress: the built-in HTTP data plane (``Ingress``, a ``warren.ports.DataPlane``) and its
routing table. It proxies requests on published ports and on the shared port (routed by Host) to
the ready endpoints of each service, and counts them per service and revision.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import native

COMPILED = native.choose(__name__)
"""Whether the ingress runs compiled by mypyc (see ``native``), or as Python."""

from .limits import Limits  # noqa: E402 (after the choice of build)

if TYPE_CHECKING:
    from .proxy import Ingress
    from .routing import RoutingTable, ServiceEntry, normalize_host

__all__ = ["COMPILED", "Ingress", "Limits", "RoutingTable", "ServiceEntry", "normalize_host"]

_LAZY = {
    "Ingress": "proxy",
    "RoutingTable": "routing",
    "ServiceEntry": "routing",
    "normalize_host": "routing",
}


def __getattr__(name: str) -> Any:
    # Imported when first asked for: the CLI reads ``Limits`` (the defaults its flags show)
    # without loading the proxy, its parser and the domain models.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
