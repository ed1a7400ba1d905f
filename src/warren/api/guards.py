"""The token checks of the API's routes — guards — and the route class that runs them first.

A guard is a FastAPI dependency built by ``guard(check, scheme)``: it declares its bearer token
in the OpenAPI document (``securitySchemes``), and ``GuardedRoute`` runs its check before the
route reads or validates the request's body — so a caller without the token learns 401, never
whether their body was well formed (FastAPI reads the body before it solves the dependencies).
Each check runs once per request: the dependency, solved later, returns what it found.

Must not import the store or the control plane: the checks come in as functions.
"""

# No ``from __future__ import annotations``: a guard's signature names its own scheme, a local
# that FastAPI could not resolve from a string.
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..domain.errors import AuthError

__all__ = ["GuardedRoute", "bearer", "guard"]

T = TypeVar("T")
Check = Callable[[Request], Awaitable[Any]]

_CHECK = "warren_check"
"""The attribute of a guard's dependency that holds its check."""
_DONE = "warren.guards"
"""Where a request's scope keeps what each check found."""


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing token: send 'Authorization: Bearer <token>'")
    return token.strip()


async def _once(request: Request, check: Callable[[Request], Awaitable[T]]) -> T:
    done: dict[object, Any] = request.scope.setdefault(_DONE, {})
    if check not in done:
        done[check] = await check(request)
    result: T = done[check]
    return result


def guard(
    check: Callable[[Request], Awaitable[T]], scheme: str, description: str
) -> Callable[..., Awaitable[T]]:
    """A dependency that runs ``check`` (it raises ``AuthError`` or ``ForbiddenError``), shown
    in the OpenAPI document as the bearer token ``scheme``."""
    security = HTTPBearer(auto_error=False, scheme_name=scheme, description=description)

    async def dependency(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(security)],
    ) -> T:
        return await _once(request, check)

    setattr(dependency, _CHECK, check)  # read back by GuardedRoute
    return dependency


class GuardedRoute(APIRoute):
    """A route whose guards run before FastAPI reads the request's body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks: list[Check] = [
            check
            for dep in self.dependant.dependencies
            if (check := getattr(dep.call, _CHECK, None)) is not None
        ]
        if not checks:
            return handler

        async def guarded(request: Request) -> Response:
            for check in checks:
                await _once(request, check)
            return await handler(request)

        return guarded
