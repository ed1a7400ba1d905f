"""Upgraded connections: a request that asked for an upgrade (WebSocket or any other protocol)
is routed like any other; if its task answers 101, both connections are handed to a ``_Tunnel``
that pipes bytes both ways (their transports get its ``_TunnelEnd`` protocols), counted in flight
to the task until it closes, so that a drain closes it at the drain timeout.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .downstream import _Client
    from .proxy import Ingress

__all__ = ["_Tunnel", "_TunnelEnd"]


class _Tunnel:
    """A connection upgraded to another protocol (WebSocket, or any the task agreed to): bytes
    piped both ways, as they come, until either side closes. It counts as in flight to its
    upstream address, so that a drain waits for it for the drain timeout, and then closes it
    (``Ingress._give_up_on``). No timeout of its own: its protocol has its pings."""

    __slots__ = ("address", "client", "closed", "ends", "ingress", "upstream")

    def __init__(
        self,
        ingress: Ingress,
        address: str,
        client: _Client,
        upstream: asyncio.Transport,
        paused: bool,
    ) -> None:
        self.ingress = ingress
        self.address = address
        self.closed = False
        transport = client._transport
        assert transport is not None
        self.client: asyncio.Transport = transport
        self.upstream = upstream
        self.ends = (_TunnelEnd(self, upstream), _TunnelEnd(self, transport))
        ingress._tunnels.add(self)
        pending = client.became_tunnel()
        transport.set_protocol(self.ends[0])
        upstream.set_protocol(self.ends[1])
        if pending:
            upstream.write(pending)
        transport.resume_reading()
        if paused and not client.write_paused:
            upstream.resume_reading()

    def close(self, abort: bool = False) -> None:
        """Close both sides (what is still to be written is sent first, unless ``abort``)."""
        if self.closed:
            return
        self.closed = True
        self.ingress._tunnels.discard(self)
        for transport in (self.client, self.upstream):
            if abort:
                transport.abort()
            else:
                transport.close()
        self.ingress._counters.add_in_flight(self.address, -1)


class _TunnelEnd(asyncio.Protocol):
    """The protocol of one of a tunnel's transports: what it reads goes to ``to``; when its own
    writes back up, ``to`` stops being read."""

    def __init__(self, tunnel: _Tunnel, to: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.to = to
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.to.write(data)

    def eof_received(self) -> bool:
        # A half-close is passed on: the other side may still answer.
        self.eof = True
        tunnel = self.tunnel
        if all(end.eof for end in tunnel.ends) or not self.to.can_write_eof():
            tunnel.close()
            return False
        try:
            self.to.write_eof()
        except (OSError, RuntimeError):
            tunnel.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()

    def pause_writing(self) -> None:
        if not self.to.is_closing():
            self.to.pause_reading()

    def resume_writing(self) -> None:
        if not self.to.is_closing():
            self.to.resume_reading()
