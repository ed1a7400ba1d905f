"""Shared building blocks of the domain models: the frozen camelCase base model, durations, and the
translation of pydantic's validation errors into one clear Warren ValidationError. Pure."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .durations import LONGEST, format_duration, parse_duration
from .errors import UNPROCESSABLE, UnprocessableError, ValidationError

__all__ = [
    "Duration",
    "Model",
    "Whole",
    "duration_schema",
    "error_from_details",
    "parse_model",
    "unprocessable",
    "validation_error",
    "whole_number",
]

M = TypeVar("M", bound=BaseModel)


class Model(BaseModel):
    """Frozen, strict about unknown fields, camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        ser_json_inf_nan="null",
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase form used by the API, the store and YAML."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _to_seconds(value: Any) -> Any:
    # A bool too: parse_duration refuses it, where the float field would take False for 0.
    if isinstance(value, str | int | float):
        try:
            return parse_duration(value)
        except ValidationError as exc:
            raise ValueError(exc.reason) from None  # pydantic adds the field's location
    return value


def _to_text(seconds: float) -> str | float:
    # Show "500ms" / "10s" where that is exact; keep odd values as numbers so nothing is lost.
    text = format_duration(seconds)
    return text if parse_duration(text) == seconds else seconds


_FRACTION = r"(\.[0-9]{1,9})?"
DURATION_PATTERN = (
    rf"^([0-9]{{1,9}}{_FRACTION}"
    # Hours first, then minutes and seconds under 60: what format_duration writes, up to LONGEST.
    rf"|(([0-9]{{1,5}}|[0-7][0-9]{{5}}|8[0-6][0-9]{{4}}|87[0-5][0-9]{{3}})h"
    rf"([0-5]?[0-9]m)?([0-5]?[0-9]{_FRACTION}s)?|876000h)"
    rf"|([0-9]{{1,11}}{_FRACTION}ms|[0-9]{{1,8}}{_FRACTION}s|[0-9]{{1,7}}{_FRACTION}m){{1,4}})$"
)
"""The text forms ``parse_duration`` takes, as the OpenAPI document states them: every text
``format_duration`` writes, and digits few enough that no duration so written is over LONGEST
(hours under 876000 with minutes and seconds under 60; else four parts of under 20 years at
most). ``parse_duration`` takes longer texts too, up to LONGEST."""


def duration_schema(number: dict[str, Any], pattern: str = DURATION_PATTERN) -> WithJsonSchema:
    """A duration's JSON schema: a ``number`` of seconds (its bounds) or a text."""
    return WithJsonSchema(
        {"anyOf": [{"type": "number", **number}, {"type": "string", "pattern": pattern}]}
    )


Duration = Annotated[
    float,
    BeforeValidator(_to_seconds),
    PlainSerializer(_to_text),
    duration_schema({"minimum": 0, "maximum": LONGEST}),
]
"""A duration in seconds; accepts ``500ms``, ``10s``, ``5m`` or a number of seconds."""


def unprocessable(message: str) -> PydanticCustomError:
    """The error of a model validator that refuses a combination of values each allowed on its
    own (what JSON Schema cannot state): the API answers it 422, an UnprocessableError."""
    return PydanticCustomError(UNPROCESSABLE, "{reason}", {"reason": message})


def whole_number(value: Any) -> Any:
    """``value`` as is unless it is a boolean or a string, which no integer field takes."""
    # JSON Schema's integer is any whole number, 3.0 too; a boolean or a string is not one
    # (pydantic's lax int would take true as 1 and "3" as 3).
    if isinstance(value, bool | str):
        raise ValueError("expected a whole number")
    return value


Whole = Annotated[int, BeforeValidator(whole_number)]
"""An integer field of the API: 3 or 3.0, never true or "3"."""

_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def error_from_details(
    errors: list[Any], prefix: str = "", skip: tuple[str, ...] = ()
) -> ValidationError:
    """The first of pydantic's error details as one line that names the field. ``skip`` drops
    leading location parts (FastAPI's ``body``). A value the API's document refuses comes
    before a combination it cannot state (an UnprocessableError, only when that is all)."""
    errors = sorted(errors, key=lambda e: e["type"] == UNPROCESSABLE)
    err = errors[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union"))]
    while loc and loc[0] in skip:
        loc = loc[1:]
    field = ".".join(([prefix] if prefix else []) + loc) or None
    message = _MESSAGES.get(err["type"], str(err["msg"]))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err["type"] == "json_invalid":
        message = "the request body is not valid JSON"
    extra = len(errors) - 1
    if extra:
        message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    kind = UnprocessableError if err["type"] == UNPROCESSABLE else ValidationError
    return kind(message, field)


def validation_error(exc: pydantic.ValidationError, prefix: str = "") -> ValidationError:
    """The first problem of a pydantic error as one line that names the field."""
    return error_from_details(exc.errors(include_url=False), prefix)


def parse_model(cls: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` into ``cls`` or raise one Warren ValidationError."""
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, prefix) from None
    except ValidationError as exc:
        raise type(exc)(exc.reason, ".".join(p for p in (prefix, exc.field or "") if p)) from None
