"""What the API checks of a spec beyond its own validation, with what this manager knows: no
published port is one Warren itself listens on (its API, its shared HTTP port), and each TLS
port's certificate and key load (readable, PEM, the key matching the certificate), as the
ingress will load them (422: a path the document allows, which this server cannot load). One
clear line names the port; nothing is stored. (A port another
service publishes is refused by the store, in the write: ``ClusterStore``.)

Must not import the control plane or the store."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..domain.errors import ConflictError, UnprocessableError
from ..domain.specs import ServiceSpec
from ..ingress.tls import TlsError, server_context

__all__ = ["admit"]


def admit(spec: ServiceSpec, reserved: Mapping[int, str] = {}) -> ServiceSpec:
    """``reserved``: the ports Warren listens on here, each with what it is."""
    for port in spec.ports:
        if port.published in reserved:
            raise ConflictError(f"ports: port {port.published} is {reserved[port.published]}")
    for i, port in enumerate(spec.ports):
        if port.tls is None:
            continue
        for path in (port.tls.cert, port.tls.key):
            if not os.path.isfile(path):
                raise UnprocessableError(f"no such file: {path}", f"ports[{i}].tls")
            if not os.access(path, os.R_OK):
                raise UnprocessableError(f"cannot read {path}", f"ports[{i}].tls")
        try:
            server_context(port.tls.cert, port.tls.key)
        except TlsError as exc:
            raise UnprocessableError(str(exc), f"ports[{i}].tls") from None
    return spec
