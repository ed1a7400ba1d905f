"""The one exception tree of Warren. Pure: imports nothing but the standard library.

    WarrenError                      every error Warren raises on purpose
    ├── ValidationError              bad input: spec, YAML, flag, API body (names the field)
    │   └── UnprocessableError       each value allowed, yet not to be acted on (deadlines…)
    ├── NotFoundError                no such service, task, revision, node
    ├── ConflictError                already exists, or a compare-and-swap lost a race
    │   └── CompactedError           a watch asked for a revision the store no longer keeps
    ├── InvalidTransitionError       a task state change the state machine forbids
    ├── MissingExtraError            a store or driver chosen whose extra is not installed
    ├── AuthError                    missing or wrong token
    │   └── ForbiddenError           a valid token, not allowed this (a worker's token)
    ├── UnavailableError             a dependency is down (server, store, engine); retry later
    ├── DriverError                  a driver could not start, stop or inspect a task
    └── StoreError                   the store failed for a reason other than a conflict

Adapters translate foreign exceptions into this tree at the boundary (``raise … from exc``);
cancellation is never swallowed.
"""

from __future__ import annotations

__all__ = [
    "UNPROCESSABLE",
    "AuthError",
    "CompactedError",
    "ConflictError",
    "DriverError",
    "ForbiddenError",
    "InvalidTransitionError",
    "MissingExtraError",
    "NotFoundError",
    "StoreError",
    "UnavailableError",
    "UnprocessableError",
    "ValidationError",
    "WarrenError",
    "error_for_code",
]


class WarrenError(Exception):
    """Base of every error Warren raises on purpose. ``code`` is stable for API clients."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(WarrenError):
    """Bad input. ``field`` is the dotted path of the offending field, when there is one."""

    code = "invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class UnprocessableError(ValidationError):
    """Input whose every value is one the API's document allows, which the server still cannot
    act on: values that do not go together (a healthy deadline past the progress deadline, a
    body naming another service than its URL), a certificate file it cannot load — what no
    JSON Schema states. Answered 422, where a value the document refuses is a 400."""

    code = "unprocessable"


UNPROCESSABLE = "unprocessable"
"""The pydantic error type of an UnprocessableError (``PydanticCustomError``'s first argument)."""


class NotFoundError(WarrenError):
    code = "not_found"


class ConflictError(WarrenError):
    code = "conflict"


class CompactedError(ConflictError):
    code = "compacted"


class InvalidTransitionError(WarrenError):
    code = "invalid_transition"


class MissingExtraError(WarrenError):
    """A store or driver was chosen whose libraries come with an extra that is not installed
    (``pip install 'warren[etcd]'``). The CLI exits with status 2 on it, as on a bad flag."""

    code = "missing_extra"

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the {extra} extra: pip install 'warren[{extra}]'")
        self.extra = extra


class AuthError(WarrenError):
    code = "unauthorized"


class ForbiddenError(AuthError):
    code = "forbidden"


class UnavailableError(WarrenError):
    code = "unavailable"


class DriverError(WarrenError):
    code = "driver_error"


class StoreError(WarrenError):
    code = "store_error"


def error_for_code(code: str, message: str, field: str | None = None) -> WarrenError:
    """Rebuild an error from its API form ``{"code", "message", "field"}`` (used by the client)."""
    classes: list[type[WarrenError]] = [
        ValidationError, UnprocessableError, NotFoundError, ConflictError, CompactedError,
        InvalidTransitionError, AuthError, ForbiddenError, UnavailableError, DriverError,
        StoreError,
    ]  # fmt: skip
    for cls in classes:
        if cls.code == code:
            if issubclass(cls, ValidationError):
                # The message already names the field ("spec.replicas: …"): keep it as is.
                err = cls(message)
                err.field = field
                return err
            return cls(message)
    return WarrenError(message)
