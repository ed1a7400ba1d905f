"""TLS termination on published ports: one server context per port, made from the certificate and
key files its route names (TLS 1.2 and up), and reloaded when those files change.

A reload loads into the context the listener already serves with, so the next handshake uses the
new certificate and no connection is dropped. The new files are first loaded into a scratch
context: a certificate replaced by halves (the key written after the chain) or a bad one leaves
the old one serving, with a warning, until the files are whole again.

Must not import anything of Warren's: the standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass

__all__ = ["Certificates", "TlsError", "server_context"]

log = logging.getLogger("warren.ingress")

Stamp = tuple[tuple[int, int, int], ...]
"""(inode, size, mtime in ns) of each file: what says it changed."""


class TlsError(Exception):
    """A certificate or key that cannot be loaded; the message is one line."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context serving ``cert`` (a PEM chain) with ``key``. Raises TlsError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert, key)
    return context


_REASONS = {
    "PEM lib": "not a PEM certificate chain and its key",
    "KEY_VALUES_MISMATCH": "the key is not the certificate's",
    "NO_START_LINE": "not a PEM file",
}
"""OpenSSL's reasons, said plainly."""


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        reason = next((said for m, said in _REASONS.items() if m in reason), reason)
        raise TlsError(f"cannot load the certificate {cert} with the key {key}: {reason}") from None


def _stamp(*paths: str) -> Stamp:
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@dataclass
class _Served:
    context: ssl.SSLContext
    cert: str
    key: str
    stamp: Stamp
    refused: Stamp | None = None
    """The files' stamp when they last failed to load (warned about once)."""


class Certificates:
    """The TLS contexts of the published ports, checked for changed files every ``every``
    seconds while any port has one."""

    def __init__(self, every: float = 1.0) -> None:
        self._served: dict[int, _Served] = {}
        self._every = every
        self._timer: asyncio.TimerHandle | None = None

    def context(self, port: int, cert: str, key: str) -> ssl.SSLContext:
        """The context for ``port`` serving ``cert`` and ``key``: the one it has if it already
        serves these files, else a new one. Raises TlsError."""
        served = self._served.get(port)
        if served is not None and (served.cert, served.key) == (cert, key):
            return served.context
        stamp = _stamp(cert, key)
        context = server_context(cert, key)
        self._served[port] = _Served(context, cert, key, stamp)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._every, self._tick)
        return context

    def forget(self, port: int) -> None:
        self._served.pop(port, None)
        if not self._served:
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reload_changed(self) -> list[int]:
        """Reload the ports whose files changed and load whole; returns those ports."""
        reloaded = []
        for port, served in self._served.items():
            stamp = _stamp(served.cert, served.key)
            if stamp in (served.stamp, served.refused):
                continue
            try:
                server_context(served.cert, served.key)  # whole and matching?
                _load(served.context, served.cert, served.key)
            except TlsError as exc:
                served.refused = stamp
                log.warning("ingress: port %s keeps its certificate: %s", port, exc)
                continue
            served.stamp, served.refused = stamp, None
            reloaded.append(port)
            log.info("ingress: port %s: certificate %s reloaded", port, served.cert)
        return reloaded

    def _tick(self) -> None:
        try:
            self.reload_changed()
        finally:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._every, self._tick) if self._served else None
