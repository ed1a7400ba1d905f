"""Every text a pattern of the API's document allows is one the server takes: hypothesis writes
texts from each pattern (as schemathesis does) and the parser must take every one — a duration
no longer than LONGEST, a memory size, a condition, a webhook's timeout — and a zero the
document leaves out is a zero (or not a duration)."""

from __future__ import annotations

import contextlib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from warren.domain.base import DURATION_PATTERN
from warren.domain.durations import LONGEST, format_duration, parse_duration
from warren.domain.errors import ValidationError
from warren.domain.sizes import MEMORY_SCHEMA, parse_memory
from warren.domain.specs import (
    CONDITION_RE,
    NOT_ZERO,
    Webhook,
    parse_condition,
)


def _texts(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(re.compile(pattern), fullmatch=True)


@settings(max_examples=400)
@given(_texts(DURATION_PATTERN))
def test_every_duration_the_document_allows_is_taken(text: str) -> None:
    assert 0 <= parse_duration(text) <= LONGEST


@settings(max_examples=400)
@given(st.floats(min_value=0, max_value=LONGEST))
def test_every_duration_the_server_writes_is_one_the_document_allows(seconds: float) -> None:
    # An answer's durations are texts format_duration writes ("875999h59m59s").
    assert re.search(DURATION_PATTERN, format_duration(seconds))


@settings(max_examples=400)
@given(_texts(MEMORY_SCHEMA["anyOf"][1]["pattern"]))
def test_every_memory_size_the_document_allows_is_taken(text: str) -> None:
    assert 0 <= parse_memory(text) <= MEMORY_SCHEMA["anyOf"][0]["maximum"]


@settings(max_examples=400)
@given(_texts(CONDITION_RE.pattern))
def test_every_condition_the_document_allows_is_taken(text: str) -> None:
    parse_condition(text)


@settings(max_examples=400)
@given(_texts(Webhook.model_json_schema()["properties"]["timeout"]["anyOf"][1]["pattern"]))
def test_every_webhook_timeout_the_document_allows_is_taken(text: str) -> None:
    assert 0 < parse_duration(text) <= 60


@settings(max_examples=400)
@given(_texts(NOT_ZERO["not"]["anyOf"][1]["pattern"]))
def test_what_the_document_leaves_out_as_zero_is_zero_or_no_duration(text: str) -> None:
    with contextlib.suppress(ValidationError):  # "0ms0": not a duration, refused as well
        assert parse_duration(text) == 0
