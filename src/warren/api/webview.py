"""The web view: the static page at ``/ui/`` (``src/warren/ui``: HTML, CSS, JavaScript, no
build step) that shows every rollout, live, through the API's own routes.

The page holds nothing of the cluster — like ``/docs`` it is served without a token; the script
asks for the admin token and sends it with every API call, as ``Authorization: Bearer``. Its
answers carry a Content-Security-Policy that allows this server's own scripts, styles and API
only: no inline script, nothing from elsewhere, no framing.

Must not import the store or the control plane: it serves files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["UI_DIR", "UI_HEADERS", "mount_web_view"]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
"""The page's files, shipped in the package (``[tool.setuptools.package-data]``)."""

UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # The token travels in the fragment (``#token=…``), which no browser sends; and no page
    # the view links to learns where it came from.
    "Referrer-Policy": "no-referrer",
    # Asked again each time (answered 304 when unchanged): an upgraded server serves its page.
    "Cache-Control": "no-cache",
}


class _Files(StaticFiles):
    """The page's files, each answer with ``UI_HEADERS``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(UI_HEADERS)
        return response


def mount_web_view(app: FastAPI) -> None:
    """``/ui/`` (index.html) and its files; ``/ui`` redirects there."""

    @app.get("/ui", include_in_schema=False)
    async def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    app.mount("/ui", _Files(directory=UI_DIR, html=True), name="ui")
