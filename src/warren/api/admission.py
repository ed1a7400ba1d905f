"""What the API checks of a spec beyond its own validation, with the files of this manager:
each TLS port's certificate and key must load (readable, PEM, the key matching the
certificate), as the ingress will load them. One clear line names the port; nothing is stored.

Must not import the control plane or the store."""

from __future__ import annotations

import os

from ..domain.errors import ValidationError
from ..domain.specs import ServiceSpec
from ..ingress.tls import TlsError, server_context

__all__ = ["admit"]


def admit(spec: ServiceSpec) -> ServiceSpec:
    for i, port in enumerate(spec.ports):
        if port.tls is None:
            continue
        for path in (port.tls.cert, port.tls.key):
            if not os.path.isfile(path):
                raise ValidationError(f"no such file: {path}", f"ports[{i}].tls")
            if not os.access(path, os.R_OK):
                raise ValidationError(f"cannot read {path}", f"ports[{i}].tls")
        try:
            server_context(port.tls.cert, port.tls.key)
        except TlsError as exc:
            raise ValidationError(str(exc), f"ports[{i}].tls") from None
    return spec
