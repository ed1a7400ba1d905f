"""Service specs: validation messages that name the field, YAML documents, patches, templates."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from warren.domain.base import parse_model
from warren.domain.errors import ConflictError, UnprocessableError, ValidationError
from warren.domain.specs import (
    API_VERSION,
    Resources,
    ServiceSpec,
    Strategy,
    UpdateOrder,
    patch_spec,
    service_from_document,
    service_to_document,
)

BASE: dict[str, Any] = {"name": "web", "command": ["python", "-m", "warren.demo.app"]}

# The YAML example of the brief's section 7, verbatim.
BRIEF_YAML = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  command: ["python", "-m", "warren.demo.app"]     # or image: nginx:1.27
  replicas: 4
  env: {VERSION: v1}
  ports: [{published: 8080}]
  healthCheck: {http: {path: /healthz}, interval: 1s, timeout: 500ms, retries: 3}
  deploy:
    strategy: canary
    updateConfig: {parallelism: 2, delay: 0s, failureAction: rollback, order: start-first, monitor: 5s}
    canary: {steps: [{setWeight: 10}, {pause: 30s}, {setWeight: 50}, {pause: {}}],
             analysis: {interval: 10s, successRate: 0.99, maxLatencyP95: 500ms, minRequests: 50}}
    blueGreen: {autoPromote: true, scaleDownDelay: 60s}
"""  # noqa: E501


def spec_error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_model(ServiceSpec, data)
    return info.value


def brief_doc() -> dict[str, Any]:
    doc = yaml.safe_load(BRIEF_YAML)
    assert isinstance(doc, dict)
    return doc


def doc_error(doc: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        service_from_document(doc)
    return info.value


# --- ServiceSpec: accepted input -------------------------------------------------------------


def test_minimal_spec_has_documented_defaults() -> None:
    spec = parse_model(ServiceSpec, BASE)
    assert spec.replicas == 1
    assert spec.effective_driver == "process"
    assert spec.restart_policy.condition == "any"
    assert (spec.restart_policy.delay, spec.restart_policy.max_delay) == (1.0, 30.0)
    assert spec.deploy.strategy == Strategy.ROLLING
    assert spec.deploy.update_config.order == UpdateOrder.START_FIRST
    assert spec.stop_grace == 10.0


def test_camel_and_snake_case_are_both_accepted() -> None:
    camel = parse_model(ServiceSpec, {**BASE, "stopGrace": "2s", "minReady": "500ms"})
    snake = parse_model(ServiceSpec, {**BASE, "stop_grace": 2, "min_ready": 0.5})
    assert camel == snake
    assert camel.stop_grace == 2.0


def test_command_string_is_split_like_a_shell() -> None:
    spec = parse_model(ServiceSpec, {"name": "web", "command": "python -m 'my app'"})
    assert spec.command == ("python", "-m", "my app")


def test_env_numbers_become_strings() -> None:
    spec = parse_model(ServiceSpec, {**BASE, "env": {"WORKERS": 4, "RATIO": 0.5}})
    assert spec.env == {"WORKERS": "4", "RATIO": "0.5"}


def test_image_means_docker_and_host_is_lowercased() -> None:
    spec = parse_model(ServiceSpec, {"name": "web", "image": "nginx:1.27", "host": "Web.Example"})
    assert spec.effective_driver == "docker"
    assert spec.host == "web.example"


def test_paths_lose_their_trailing_slash() -> None:
    spec = parse_model(
        ServiceSpec, {**BASE, "host": "h.test", "paths": ["/api/", "/static", "/", "/a/b//"]}
    )
    assert spec.paths == ("/api", "/static", "/", "/a/b")
    assert parse_model(ServiceSpec, {**BASE, "host": "h.test"}).paths == ()


def test_a_repeated_path_prefix_is_unprocessable() -> None:
    err = spec_error({**BASE, "host": "h.test", "paths": ["/", "//"]})
    assert isinstance(err, UnprocessableError)
    assert str(err) == "paths: / and // are the same path prefix"


def test_memory_sizes() -> None:
    assert Resources.model_validate({"memory": "256Mi"}).memory == 256 * 1024**2
    assert Resources.model_validate({"memory": "1G"}).memory == 1000**3
    assert Resources.model_validate({"memory": 1024}).memory == 1024


def test_spec_is_frozen() -> None:
    spec = parse_model(ServiceSpec, BASE)
    with pytest.raises(pydantic.ValidationError):
        spec.replicas = 3  # type: ignore[misc]


# --- ServiceSpec: rejected input, the message names the field ----------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"bogus": 1}, "bogus", "unknown field"),
        ({"stopGrace": "5x"}, "stopGrace", "expected a duration like 500ms, 10s or 5m, got '5x'"),
        ({"drainTimeout": "-1s"}, "drainTimeout", "expected a duration"),
        ({"restartPolicy": {"delay": "soon"}}, "restartPolicy.delay", "expected a duration"),
        (
            {"healthCheck": {"tcp": {}, "interval": "fast"}},
            "healthCheck.interval",
            "expected a duration",
        ),
        ({"replicas": -1}, "replicas", "Input should be greater than or equal to 0"),
        ({"replicas": 10_001}, "replicas", "less than or equal to 10000"),
        ({"ports": [{"published": 0}]}, "ports.0.published", "greater than or equal to 1"),
        ({"ports": [{"published": 65536}]}, "ports.0.published", "less than or equal to 65535"),
        (
            {"ports": [{"published": 80}, {"published": 81, "target": 70000}]},
            "ports.1.target",
            "less than or equal to 65535",
        ),
        ({"name": "Web"}, "name", "lowercase"),
        ({"name": "-web"}, "name", "starting and ending"),
        ({"name": "web-"}, "name", "starting and ending"),
        ({"name": "a" * 64}, "name", "1-63"),
        ({"name": ""}, "name", "1-63"),
        ({"name": "web_1"}, "name", "lowercase"),
        ({"env": {"PORT": "8080"}}, "env", "PORT is set by Warren and cannot be overridden"),
        ({"env": {"WARREN_TASK_ID": "x"}}, "env", "WARREN_TASK_ID is set by Warren"),
        ({"env": {"1ABC": "x"}}, "env", "'1ABC' is not a valid variable name"),
        ({"env": {"DEBUG": True}}, "env", "quote booleans"),
        ({"healthCheck": {"http": {}, "tcp": {}}}, "healthCheck", "exactly one of http, tcp"),
        ({"healthCheck": {}}, "healthCheck", "exactly one of http, tcp, exec"),
        ({"healthCheck": {"http": {"path": "healthz"}}}, "healthCheck.http.path", "'/'"),
        ({"healthCheck": {"tcp": {}, "interval": 0}}, "healthCheck", "interval must be > 0"),
        ({"healthCheck": {"tcp": {}, "retries": 0}}, "healthCheck.retries", "greater than"),
        (
            {"deploy": {"canary": {"steps": [{"setWeight": 10, "pause": "1s"}]}}},
            "deploy.canary.steps.0",
            "a step is one of setWeight, pause, setHeaderRoute",
        ),
        (
            {"deploy": {"canary": {"steps": [{"setWeight": 10}, {}]}}},
            "deploy.canary.steps.1",
            "a step is one of setWeight, pause, setHeaderRoute",
        ),
        (
            {"deploy": {"canary": {"steps": [{"setWeight": 101}]}}},
            "deploy.canary.steps.0.setWeight",
            "less than or equal to 100",
        ),
        (
            {"deploy": {"canary": {"steps": [{"pause": {"until": "x"}}]}}},
            "deploy.canary.steps.0.pause",
            "a pause is a duration or {}",
        ),
        ({"deploy": {"strategy": "big-bang"}}, "deploy.strategy", "blue-green, canary, rolling"),
        ({"deploy": {"updateConfig": {"order": "x"}}}, "deploy.updateConfig.order", "start-first"),
        ({"resources": {"memory": "12Q"}}, "resources.memory", "expected a size like 256Mi"),
        ({"resources": {"cpus": -1}}, "resources.cpus", "greater than or equal to 0"),
        ({"host": "bad host"}, "host", "not a valid host name"),
        ({"host": "h.test", "paths": ["api"]}, "paths", "'api' is not a path prefix"),
        ({"host": "h.test", "paths": ["/a b"]}, "paths", "is not a path prefix"),
        ({"host": "h.test", "paths": ["/a?q"]}, "paths", "but '?' and '#'"),
        ({"host": "h.test", "paths": ["/a#x"]}, "paths", "is not a path prefix"),
        ({"host": "h.test", "paths": ["/a\x01"]}, "paths", "is not a path prefix"),
        ({"host": "h.test", "paths": ["/café"]}, "paths", "percent-encode"),
        ({"host": "h.test", "paths": ["/api", "/api/"]}, "paths", "/api and /api/ are the same"),
        ({"command": ""}, "command", "must not be empty"),
        ({"command": []}, "command", "must not be empty"),
        ({"driver": "podman"}, "driver", "'process'"),
        # `$` of a regex also matches before a last newline: the whole name must match.
        ({"name": "web\n"}, "name", "lowercase letters"),
        # A bool is an int to Python: false was taken for 0 seconds.
        ({"minReady": False}, "minReady", "expected a duration"),
    ],
)
def test_invalid_spec_names_the_field(changes: dict[str, Any], field: str, fragment: str) -> None:
    err = spec_error({**BASE, **changes})
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert fragment in str(err)


def test_replicas_message_is_exactly_one_line() -> None:
    assert str(spec_error({**BASE, "replicas": -1})) == (
        "replicas: Input should be greater than or equal to 0"
    )


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    err = spec_error({**BASE, "replicas": -1, "bogus": 1})
    assert err.field in ("replicas", "bogus")
    assert str(err).endswith("(and 1 more problem)")


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            {"name": "web", "image": "nginx", "command": "x", "driver": "process"},
            ("process", "image"),
        ),
        ({"name": "web"}, ("image", "command")),
        ({"name": "web", "command": "x", "driver": "docker"}, ("docker", "image")),
        ({"name": "web", "image": "nginx", "driver": "process"}, ("process", "command")),
        (
            {**BASE, "ports": [{"published": 8080}, {"published": 8080, "target": 80}]},
            ("published port", "twice"),
        ),
        ({**BASE, "paths": ["/api"]}, ("paths needs a host",)),
    ],
)
def test_cross_field_errors_name_the_fields_in_the_message(
    data: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    message = str(spec_error(data))
    for fragment in fragments:
        assert fragment in message


# --- documents ---------------------------------------------------------------------------------


def test_brief_example_document() -> None:
    spec = service_from_document(brief_doc())
    assert spec.name == "web"
    assert spec.labels == {"tier": "front"}
    assert spec.command == ("python", "-m", "warren.demo.app")
    assert spec.image is None
    assert spec.effective_driver == "process"
    assert spec.replicas == 4
    assert spec.env == {"VERSION": "v1"}
    assert [(p.published, p.target) for p in spec.ports] == [(8080, None)]
    hc = spec.health_check
    assert hc is not None
    assert hc.kind == "http"
    assert hc.http is not None
    assert hc.http.path == "/healthz"
    assert (hc.interval, hc.timeout, hc.retries) == (1.0, 0.5, 3)
    deploy = spec.deploy
    assert deploy.strategy == Strategy.CANARY
    uc = deploy.update_config
    assert (uc.parallelism, uc.delay, uc.failure_action, uc.order, uc.monitor) == (
        2,
        0.0,
        "rollback",
        UpdateOrder.START_FIRST,
        5.0,
    )
    assert deploy.canary is not None
    steps = [(s.set_weight, s.pause) for s in deploy.canary.steps]
    assert steps == [(10, None), (None, 30.0), (50, None), (None, {})]
    analysis = deploy.canary.analysis
    assert analysis is not None
    assert (analysis.interval, analysis.success_rate) == (10.0, 0.99)
    assert (analysis.max_latency_p95, analysis.min_requests) == (0.5, 50)
    assert deploy.blue_green is not None
    assert deploy.blue_green.auto_promote is True
    assert deploy.blue_green.scale_down_delay == 60.0
    assert spec.version_label == "VERSION=v1"


def test_brief_example_round_trips_through_service_to_document() -> None:
    spec = service_from_document(brief_doc())
    doc = service_to_document(spec)
    assert doc["apiVersion"] == API_VERSION
    assert doc["kind"] == "Service"
    assert doc["metadata"] == {"name": "web", "labels": {"tier": "front"}}
    assert "name" not in doc["spec"]
    assert "labels" not in doc["spec"]
    # Durations are shown as users write them.
    assert doc["spec"]["healthCheck"]["timeout"] == "500ms"
    assert doc["spec"]["deploy"]["canary"]["steps"][1] == {"pause": "30s"}
    assert doc["spec"]["deploy"]["canary"]["steps"][3] == {"pause": {}}
    assert service_from_document(doc) == spec
    assert service_from_document(yaml.safe_load(yaml.safe_dump(doc))) == spec


def test_document_without_labels_has_none_in_metadata() -> None:
    doc = {"apiVersion": API_VERSION, "kind": "Service", "metadata": {"name": "api"}}
    spec = service_from_document({**doc, "spec": {"image": "nginx:1.27"}})
    out = service_to_document(spec)
    assert out["metadata"] == {"name": "api"}
    assert service_from_document(out) == spec


def _with(path: str, value: Any) -> dict[str, Any]:
    """The brief's document with one key (``a.b``) set, or removed when value is ...."""
    doc = brief_doc()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        (_with("apiVersion", "warren.io/v2"), "apiVersion", "must be 'warren.io/v1'"),
        (_with("apiVersion", ...), "apiVersion", "got None"),
        (_with("kind", "Deployment"), "kind", "must be 'Service', got 'Deployment'"),
        (_with("kind", ...), "kind", "must be 'Service'"),
        (_with("metadata.name", ...), "metadata.name", "required field is missing"),
        (_with("metadata", ...), "metadata.name", "required field is missing"),
        (_with("metadata", "web"), "metadata.name", "required field is missing"),
        (_with("metadata.namespace", "x"), "metadata", "unknown field 'namespace'"),
        (_with("metadata.name", "Web"), "metadata.name", "lowercase"),
        (_with("metadata.labels", {"tier": 1}), "metadata.labels.tier", "valid string"),
        (_with("spec.name", "web"), "spec", "unknown field 'name' (it belongs in metadata)"),
        (_with("spec.labels", {}), "spec", "unknown field 'labels' (it belongs in metadata)"),
        (_with("spec", ...), "spec", "required mapping is missing"),
        (_with("spec.replicas", -1), "spec.replicas", "greater than or equal to 0"),
        (_with("spec.healthCheck.timeout", "5x"), "spec.healthCheck.timeout", "duration"),
        (_with("spec.env", {"PORT": "1"}), "spec.env", "set by Warren"),
        (_with("spec.driver", "docker"), "spec", "the docker driver needs an image"),
        (_with("spec.replica", 3), "spec.replica", "unknown field"),
    ],
)
def test_invalid_document_names_the_field(doc: Any, field: str, fragment: str) -> None:
    err = doc_error(doc)
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([1, 2], "expected a mapping"),
        ("web", "expected a mapping"),
        (None, "expected a mapping"),
        (_with("status", {}), "unknown field 'status'"),
    ],
)
def test_malformed_document(doc: Any, fragment: str) -> None:
    assert fragment in str(doc_error(doc))


# --- patch_spec --------------------------------------------------------------------------------

CMD_SPEC = ServiceSpec(name="web", command=("python", "app.py"), env={"A": "1", "B": "2"})
IMG_SPEC = ServiceSpec(name="web", image="nginx:1.27", replicas=3)


def test_patch_merges_env() -> None:
    patched = patch_spec(CMD_SPEC, {"env": {"A": "9", "C": "3"}})
    assert patched.env == {"A": "9", "B": "2", "C": "3"}
    assert CMD_SPEC.env == {"A": "1", "B": "2"}  # the original is untouched


def test_patch_removes_env_keys() -> None:
    assert patch_spec(CMD_SPEC, {}, env_rm=["A"]).env == {"B": "2"}
    assert patch_spec(CMD_SPEC, {"env": {"C": "3"}}, env_rm=["A", "B"]).env == {"C": "3"}
    assert patch_spec(CMD_SPEC, {"env": {"A": None}}).env == {"B": "2"}


def test_patch_removing_an_unset_env_key_is_a_conflict_naming_env_rm() -> None:
    # A key the document allows, which the service has not: its state (409), not a bad value.
    with pytest.raises(ConflictError) as info:
        patch_spec(CMD_SPEC, {}, env_rm=["NOPE"])
    assert str(info.value) == "envRm: NOPE is not set"


def test_patch_switches_command_to_image_and_back() -> None:
    to_image = patch_spec(CMD_SPEC, {"image": "nginx:1.27"})
    assert (to_image.image, to_image.command) == ("nginx:1.27", None)
    assert to_image.env == CMD_SPEC.env
    back = patch_spec(to_image, {"command": "python app.py"})
    assert (back.image, back.command) == (None, ("python", "app.py"))


def test_patch_replaces_the_probe_kind_and_keeps_its_timings() -> None:
    http = patch_spec(CMD_SPEC, {"healthCheck": {"http": {"path": "/healthz"}, "retries": 5}})
    tcp = patch_spec(http, {"healthCheck": {"tcp": {}}})
    assert tcp.health_check is not None and tcp.health_check.kind == "tcp"
    assert (tcp.health_check.http, tcp.health_check.retries) == (None, 5)
    slower = patch_spec(tcp, {"healthCheck": {"interval": 10}})
    assert slower.health_check is not None and slower.health_check.kind == "tcp"


def test_patch_keeps_what_it_does_not_mention() -> None:
    patched = patch_spec(IMG_SPEC, {"image": "nginx:1.28", "deploy": {"strategy": "canary"}})
    assert patched.image == "nginx:1.28"
    assert patched.replicas == 3
    assert patched.deploy.strategy == Strategy.CANARY
    assert patched.deploy.update_config == IMG_SPEC.deploy.update_config


def test_patch_refuses_renaming() -> None:
    with pytest.raises(ValidationError) as info:
        patch_spec(CMD_SPEC, {"name": "other"})
    assert info.value.field == "spec.name"
    assert "cannot be renamed" in str(info.value)
    assert patch_spec(CMD_SPEC, {"name": "web"}) == CMD_SPEC  # the same name is no rename


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        ({"stopGrace": "5x"}, "spec.stopGrace", "expected a duration"),
        ({"env": {"PORT": "1"}}, "spec.env", "set by Warren"),
        ({"healthCheck": {"http": {}, "tcp": {}}}, "spec.healthCheck", "exactly one"),
        ({"bogus": 1}, "spec.bogus", "unknown field"),
        ({"command": None}, "spec", "set an image (docker driver) or a command"),
    ],
)
def test_invalid_patch_names_the_field(changes: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        patch_spec(CMD_SPEC, changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)


# --- same_template -----------------------------------------------------------------------------


def test_same_template_ignores_replicas() -> None:
    assert IMG_SPEC.same_template(IMG_SPEC.model_copy(update={"replicas": 7}))
    assert IMG_SPEC.same_template(patch_spec(IMG_SPEC, {"replicas": 0}))


@pytest.mark.parametrize(
    "deploy",
    [
        {"strategy": "blue-green"},
        {"updateConfig": {"parallelism": 2, "delay": "5s", "monitor": "1s"}},
        {"updateConfig": {"failureAction": "pause", "order": "stop-first"}},
        {"rollbackConfig": {"parallelism": 2}},
        {"strategy": "canary", "canary": {"steps": [{"setWeight": 5}, {"pause": {}}]}},
        {"blueGreen": {"autoPromote": False}},
        {"revisionHistoryLimit": 2},
        {"notify": [{"url": "http://hooks.example/x"}]},
    ],
)
def test_same_template_ignores_the_rollout_settings(deploy: dict[str, Any]) -> None:
    """How the next rollout runs is no reason to replace a task (Swarm's update_config)."""
    assert IMG_SPEC.same_template(patch_spec(IMG_SPEC, {"deploy": deploy}))


@pytest.mark.parametrize(
    "changes",
    [
        {"image": "nginx:1.28"},
        {"env": {"VERSION": "v2"}},
        {"labels": {"tier": "back"}},
        {"ports": [{"published": 8080}]},
        {"healthCheck": {"tcp": {}}},
        {"resources": {"cpus": 0.5}},
        {"stopGrace": "11s"},
        {"restartPolicy": {"condition": "none"}},
        {"drainTimeout": "1s"},
        {"minReady": "2s"},
    ],
)
def test_same_template_sees_everything_but_replicas_and_settings(changes: dict[str, Any]) -> None:
    assert not IMG_SPEC.same_template(patch_spec(IMG_SPEC, changes))


# --- serialization ----------------------------------------------------------------------------


def test_every_valid_spec_serializes() -> None:
    spec = parse_model(ServiceSpec, {**BASE, "stopGrace": 60.00001})
    assert parse_model(ServiceSpec, spec.to_wire()) == spec


def test_odd_durations_serialize_as_numbers() -> None:
    spec = parse_model(ServiceSpec, {**BASE, "stopGrace": 0.0001})
    assert spec.to_wire()["stopGrace"] == 0.0001
    assert parse_model(ServiceSpec, spec.to_wire()) == spec


def test_null_in_a_change_resets_a_field_or_removes_a_key_and_is_a_value_deeper() -> None:
    # Top level: the field's default; in env or labels: the key goes.
    assert patch_spec(CMD_SPEC, {"replicas": None}).replicas == 1
    assert patch_spec(CMD_SPEC, {"env": {"A": None}}).env == {"B": "2"}
    # In a nested object, a value the spec checks: deploy.notify is a list, never null.
    with pytest.raises(ValidationError) as info:
        patch_spec(CMD_SPEC, {"deploy": {"notify": None}})
    assert info.value.field == "spec.deploy.notify"
    assert patch_spec(CMD_SPEC, {"deploy": {"canary": None}}).deploy.canary is None


def test_a_change_that_renames_the_service_is_unprocessable() -> None:
    with pytest.raises(UnprocessableError, match="cannot be renamed"):
        patch_spec(CMD_SPEC, {"name": "other"})


def test_a_change_whose_values_do_not_go_together_is_unprocessable() -> None:
    late = {"deploy": {"updateConfig": {"healthyDeadline": "20m", "progressDeadline": "10m"}}}
    with pytest.raises(UnprocessableError, match="healthyDeadline is longer"):
        patch_spec(CMD_SPEC, late)
