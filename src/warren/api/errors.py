"""How the APIs answer errors: every error as ``{"error": {"code", "message", "field"}}``
with its status — a 4xx for anything a caller did, a 500 only for a bug, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    ValidationError,
    WarrenError,
)

__all__ = ["install_error_handlers"]

log = logging.getLogger("warren.api")

_STATUS: list[tuple[type[WarrenError], int]] = [
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


def _status_of(exc: WarrenError) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
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
        return _error(400, err.code, err.message, err.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error; the server log has the details")
