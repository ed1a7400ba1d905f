"""The HTTP API: FastAPI routes, wire schemas, auth; OpenAPI at /docs. Talks to the cluster
through the store layer and the control plane's caches; never to drivers directly."""

from .app import ApiContext, create_app

__all__ = ["ApiContext", "create_app"]
