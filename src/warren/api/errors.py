"""How the APIs answer errors: every error as ``{"error": {"code", "message", "field"}}``
with its status — a 4xx for anything a caller did, a 500 only for a bug, never a traceback —
and how their OpenAPI documents say so: ``error_responses`` for a route's ``responses=``, and
``document_errors``, which drops FastAPI's 422 (a bad request is a 400 here).

Must not import the store or the control plane."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..domain.base import error_from_details
from ..domain.errors import (
    AuthError,
    ConflictError,
    DriverError,
    ForbiddenError,
    InvalidTransitionError,
    NotFoundError,
    StoreError,
    UnavailableError,
    UnprocessableError,
    ValidationError,
    WarrenError,
)
from .schemas import ErrorBody

__all__ = ["document_errors", "error_responses", "install_error_handlers"]

log = logging.getLogger("warren.api")

_STATUS: list[tuple[type[WarrenError], int]] = [
    (UnprocessableError, 422),
    (ValidationError, 400),
    (ForbiddenError, 403),
    (AuthError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidTransitionError, 409),
    (DriverError, 502),
    (UnavailableError, 503),
    (StoreError, 503),
]


_MEANING = {
    400: "A parameter or the body is not valid (``field`` names it).",
    401: "No token, or not the one this route takes.",
    403: "A token that is not for this route (a node's token on an admin route), or a node "
    "asking about another node's task.",
    404: "Not found (``message`` says what).",
    409: "Refused in the cluster's present state (``message`` says why); nothing was done.",
    422: "Each value is one the document allows, but the server cannot act on them "
    "(``message`` says why: a healthy deadline past the progress deadline, a body naming "
    "another service than its URL, a certificate file it cannot load …); nothing was done.",
    413: "The request's body is over 8 MiB.",
    503: "No manager answered in time (is a leader elected?), or the store does not answer; "
    "nothing was done — try again.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these error statuses, each with the
    error body."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in statuses}


def document_errors(app: FastAPI) -> None:
    """The app's OpenAPI document without FastAPI's 422 answers and their schemas: a request
    that does not validate is answered 400, with the error body (``error_responses``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    answers = operation.get("responses", {})
                    if answers.get("422", {}).get("description") == "Validation Error":
                        del answers["422"]  # FastAPI's: error_responses' is kept
            schemas = schema.get("components", {}).get("schemas", {})
            if schemas.pop("HTTPValidationError", None) is not None:
                schemas.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_MATCHED = ("fastapi", "route", "endpoint", "path_params")
"""What routing wrote into a request's scope: left out, each route matches the path afresh."""


def _allowed(request: Request) -> str:
    """Every method a route of the request's path takes (Starlette's 405 names only those of
    the first route that matched the path: GET of ``/v1/services/{name}``, not PUT)."""
    scope = {k: v for k, v in request.scope.items() if k not in _MATCHED}
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    )


def _status_of(exc: WarrenError) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": {"code", "message", "field"}}`` with its status; a 500 only
    for a bug, without a traceback."""

    @app.exception_handler(WarrenError)
    async def _warren_error(request: Request, exc: WarrenError) -> JSONResponse:
        field = exc.field if isinstance(exc, ValidationError) else None
        return _error(_status_of(exc), exc.code, exc.message, field)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = error_from_details(list(exc.errors()), skip=("body", "query", "path"))
        return _error(_status_of(err), err.code, err.message, err.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request) or headers.get("Allow", "")
        return _error(exc.status_code, code, str(exc.detail), headers=headers or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error; the server log has the details")
