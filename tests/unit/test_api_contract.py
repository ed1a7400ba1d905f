"""What the API's request bodies state in their JSON schema, against what they accept: a rule
the validators keep is written in the schema too, so that a client (or schemathesis) can know
it, and a type the schema names is the only one taken."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic.alias_generators import to_snake

from warren.api.schemas import ScaleRequest, ServicePatch
from warren.clocks import FakeClock
from warren.domain.base import Model, parse_model
from warren.domain.durations import LONGEST, parse_duration
from warren.domain.errors import ConflictError, UnprocessableError, ValidationError
from warren.domain.sizes import LARGEST_MEMORY, parse_memory
from warren.domain.specs import (
    URL_PATTERN,
    Analysis,
    BlueGreenConfig,
    CanaryConfig,
    HealthCheck,
    ServiceSpec,
    Webhook,
    parse_condition,
)
from warren.store.cluster import ClusterStore
from warren.store.memory import MemoryStore


def test_a_spec_states_that_it_needs_an_image_or_a_command() -> None:
    schema = ServiceSpec.model_json_schema(by_alias=True)
    needs = [alt.get("required") for alt in schema["anyOf"]]
    assert ["image"] in needs and ["command"] in needs


def test_a_spec_states_its_env_names_and_host_names() -> None:
    props = ServiceSpec.model_json_schema(by_alias=True)["properties"]
    names = props["env"]["propertyNames"]
    assert re.search(names["pattern"], "VERSION") and not re.search(names["pattern"], "þÄé")
    assert "PORT" in names["not"]["enum"]
    host = next(a for a in props["host"]["anyOf"] if a.get("type") == "string")
    assert re.search(host["pattern"], "Web.example.com") and not re.search(host["pattern"], "a b")


@pytest.mark.parametrize("field", ["maxLatencyIncrease", "significance", "successRate"])
def test_a_number_is_not_a_boolean(field: str) -> None:
    with pytest.raises(ValidationError):
        parse_model(Analysis, {field: False})


def test_replicas_are_a_whole_number_written_either_way_but_not_a_boolean() -> None:
    assert parse_model(ScaleRequest, {"replicas": 3.0}).replicas == 3
    for wrong in (True, 2.5, "3"):
        with pytest.raises(ValidationError):
            parse_model(ScaleRequest, {"replicas": wrong})


def test_force_is_a_boolean_not_a_number() -> None:
    with pytest.raises(ValidationError):
        parse_model(ServicePatch, {"force": 0})


async def test_rolling_back_to_the_revision_the_service_runs_is_a_conflict() -> None:
    clock = FakeClock()
    cluster = ClusterStore(MemoryStore(clock), clock)
    spec: dict[str, Any] = {"name": "web", "command": ["python", "-m", "warren.demo.app"]}
    await cluster.create_service(ServiceSpec.model_validate(spec))
    with pytest.raises(ConflictError, match="already runs revision 1"):
        await cluster.rollback_service("web", 1)


@pytest.mark.parametrize(
    ("model", "field"),
    [(Analysis, "minRequests"), (Analysis, "failureLimit"), (ServiceSpec, "replicas")],
)
def test_a_whole_number_is_not_a_boolean_but_may_be_written_3_0(
    model: type[Analysis | ServiceSpec], field: str
) -> None:
    base: dict[str, Any] = {"name": "web", "command": ["x"]} if model is ServiceSpec else {}
    with pytest.raises(ValidationError):
        parse_model(model, {**base, field: True})
    assert getattr(parse_model(model, {**base, field: 3.0}), to_snake(field)) == 3


def test_durations_state_their_forms_and_that_they_are_not_negative() -> None:
    props = ServiceSpec.model_json_schema(by_alias=True)["properties"]
    number, text = props["stopGrace"]["anyOf"]
    assert number == {"type": "number", "minimum": 0, "maximum": LONGEST}
    for good in ("10s", "1m30s", "500ms", "2.5", "1h"):
        assert re.search(text["pattern"], good), good
    for bad in ("-1s", "10 s", "soon"):
        assert not re.search(text["pattern"], bad), bad


def test_memory_states_its_forms_and_that_it_is_not_negative() -> None:
    props = ServiceSpec.model_json_schema(by_alias=True)["$defs"]["Resources"]["properties"]
    number, text = props["memory"]["anyOf"]
    assert number == {"type": "integer", "minimum": 0, "maximum": LARGEST_MEMORY}
    assert re.search(text["pattern"], "256Mi") and not re.search(text["pattern"], "-3")


def test_a_port_states_its_range_and_refuses_a_boolean() -> None:
    props = ServiceSpec.model_json_schema(by_alias=True)["$defs"]["PortSpec"]["properties"]
    assert (props["published"]["minimum"], props["published"]["maximum"]) == (1, 65535)
    with pytest.raises(ValidationError):
        parse_model(ServiceSpec, {"name": "web", "command": ["x"], "ports": [{"published": True}]})


@pytest.mark.parametrize(
    ("model", "field"), [(BlueGreenConfig, "autoPromote"), (CanaryConfig, "stickySessions")]
)
def test_a_flag_is_a_boolean_not_a_number(model: type[Model], field: str) -> None:
    with pytest.raises(ValidationError):
        parse_model(model, {field: 0})


def test_a_health_check_states_that_it_has_exactly_one_probe() -> None:
    schema = HealthCheck.model_json_schema(by_alias=True)
    assert sorted(alt["required"][0] for alt in schema["anyOf"]) == ["exec", "http", "tcp"]
    http = next(alt for alt in schema["anyOf"] if alt["required"] == ["http"])
    assert http["properties"]["tcp"] == {"type": "null"}
    zero = schema["properties"]["interval"]["not"]["anyOf"]
    assert {"const": 0} in zero
    assert all(re.search(zero[1]["pattern"], t) for t in ("0s", "0", "0.0ms"))
    assert not re.search(zero[1]["pattern"], "10s")


def test_a_memory_size_too_large_for_a_float_is_refused_in_one_line() -> None:
    # 400 digits: float() of it is infinite, and int() of that raised OverflowError (a 500).
    with pytest.raises(ValueError, match="memory must be 0 to 4Pi"):
        parse_memory("9" * 400 + "Gi")
    assert parse_memory("1.5Gi") == 1536 * 1024**2


def test_a_combination_the_document_cannot_state_is_unprocessable() -> None:
    late = {"healthyDeadline": "20m", "progressDeadline": "10m"}
    with pytest.raises(UnprocessableError, match="healthyDeadline is longer"):
        parse_model(ServiceSpec, {"name": "w", "command": ["x"], "deploy": {"updateConfig": late}})
    # A value the document refuses comes first, and is a 400's plain ValidationError.
    with pytest.raises(ValidationError) as info:
        parse_model(
            ServiceSpec,
            {"name": "w", "command": ["x"], "replicas": -1, "deploy": {"updateConfig": late}},
        )
    assert type(info.value) is ValidationError and info.value.field == "replicas"


def test_a_canary_step_states_that_it_is_a_weight_or_a_pause() -> None:
    schema = CanaryConfig.model_json_schema(by_alias=True)["$defs"]["CanaryStep"]
    kinds = {alt["required"][0]: alt["properties"] for alt in schema["anyOf"]}
    assert kinds["setWeight"]["pause"] == {"type": "null"}
    assert kinds["pause"]["setWeight"] == {"type": "null"}
    weight = schema["properties"]["setWeight"]["anyOf"][0]
    assert (weight["minimum"], weight["maximum"]) == (0, 100)
    assert parse_model(CanaryConfig, {"steps": [{"pause": {}}]}).steps[0].pause == {}


def test_strategies_urls_conditions_and_env_values_state_their_forms() -> None:
    spec = ServiceSpec.model_json_schema(by_alias=True)
    defs = spec["$defs"]
    assert defs["DeployConfig"]["properties"]["strategy"]["enum"] == [
        "ab-test", "blue-green", "canary", "rolling",
    ]  # fmt: skip
    url = defs["Webhook"]["properties"]["url"]["pattern"]
    # No \s: hypothesis writes \x1f for [^\s], which Python's re takes for a space.
    assert url == URL_PATTERN and re.search(url, "https://a.example/x")
    assert not re.search(url, "http://\x1fa") and not re.search(url, "https:// a")
    timeout = defs["Webhook"]["properties"]["timeout"]["anyOf"][0]
    assert (timeout["exclusiveMinimum"], timeout["maximum"]) == (0, 60)
    condition = defs["MetricCheck"]["properties"]["successCondition"]["pattern"]
    assert re.search(condition, "result < 0.05") and not re.search(condition, "< 1.2.3")
    assert parse_condition("< .5") == ("<", 0.5)
    values = spec["properties"]["env"]["additionalProperties"]["anyOf"]
    assert {"type": "number"} in values
    spec_ = parse_model(ServiceSpec, {"name": "w", "command": ["x"], "env": {"N": 8080}})
    assert spec_.env == {"N": "8080"}
    assert Webhook.model_json_schema()["required"] == ["name", "type", "url"]
    assert parse_duration("1h") <= LONGEST


@pytest.mark.parametrize("command", [False, 3, {}])
def test_a_command_that_is_no_list_nor_text_is_a_bad_value_not_a_crash(command: object) -> None:
    # false reached len() in the validator: a TypeError, answered 500.
    with pytest.raises(ValidationError) as info:
        parse_model(ServiceSpec, {"name": "w", "command": command})
    assert info.value.field == "command"


def test_a_receiver_names_at_least_one_event_or_none_for_all() -> None:
    notify = ServiceSpec.model_json_schema(by_alias=True)["$defs"]["Notify"]["properties"]["on"]
    events = next(alt for alt in notify["anyOf"] if alt.get("type") == "array")
    assert events["minItems"] == 1
