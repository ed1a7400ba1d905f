"""How a command reaches the API: the global ``--addr``, ``--token`` and ``--ca`` (``warren
--addr URL service ls``), else ``WARREN_ADDR``, ``WARREN_TOKEN`` and ``WARREN_CA``, else the
token file of the data dir (and, for an https server, the usual public CAs).

The client (httpx, pydantic) is imported by the first command that talks to a server, not when
the CLI starts: ``warren --help`` needs neither."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["connect", "use"]

_given: dict[str, str | None] = {"addr": None, "token": None, "ca": None}


def use(addr: str | None, token: str | None, ca: str | None = None) -> None:
    """The global flags' values (None: not given)."""
    _given.update(addr=addr, token=token, ca=ca)


def connect() -> Client:
    # httpx imports its own command-line tool (click, rich.syntax, pygments: a tenth of a second)
    # as it is imported, and falls back to a stub when that cannot be imported, as when the
    # `httpx[cli]` extra is not installed. Warren never runs it: take the fallback.
    sys.modules.setdefault("httpx._main", ModuleType("httpx._main"))
    from ..client import Client

    return Client(_given["addr"], _given["token"], ca=_given["ca"])
