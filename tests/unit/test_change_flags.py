"""The change flags, declared once: each command takes the rows meant for it, and the values given
become one partial spec that the service model accepts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from warren.cli.changes import CREATE, FLAGS, PLAN, UPDATE, Changes
from warren.cli.main import app
from warren.domain.errors import ValidationError
from warren.domain.specs import ServiceSpec

BASE_SPEC = {"name": "web", "command": ["python", "-m", "warren.demo.app"]}


@pytest.mark.parametrize(
    ("command", "args"),
    [(CREATE, ["service", "create"]), (UPDATE, ["service", "update"]), (PLAN, ["deploy", "plan"])],
)
def test_every_command_lists_the_flags_meant_for_it(command: str, args: list[str]) -> None:
    shown = CliRunner().invoke(app, [*args, "--help"], terminal_width=200).output
    for flag in FLAGS:
        assert (flag.decl in shown) == (command in flag.on), flag.decl


def test_the_flags_given_make_a_spec_the_model_accepts() -> None:
    spec = Changes(
        {f.name: f.default for f in FLAGS}
        | {"image": "demo:v2", "replicas": 3, "env": ["A=1"], "health_http": "/healthz",
           "health_interval": 2.0, "parallelism": 2, "publish": ["8080:80"]}
    ).to_spec()  # fmt: skip
    assert spec["healthCheck"] == {"http": {"path": "/healthz"}, "interval": 2.0}
    ServiceSpec.model_validate({"name": "web", **spec})


def test_path_flags_make_the_list_of_prefixes() -> None:
    values = {f.name: f.default for f in FLAGS}
    spec = Changes(values | {"host": "shop.test", "paths": ["/api/", "/static"]}).to_spec()
    assert spec == {"host": "shop.test", "paths": ["/api/", "/static"]}
    assert ServiceSpec.model_validate({**BASE_SPEC, **spec}).paths == ("/api", "/static")
    assert "paths" not in Changes(values | {"host": "shop.test"}).to_spec()


def test_a_health_timing_alone_names_its_flag() -> None:
    changes = Changes({f.name: f.default for f in FLAGS} | {"health_timeout": 3.0})
    with pytest.raises(ValidationError, match="--health-timeout"):
        changes.to_spec()


def test_only_one_probe() -> None:
    values = {f.name: f.default for f in FLAGS} | {"health_http": "/", "health_tcp": True}
    with pytest.raises(ValidationError, match="only one of"):
        Changes(values).to_spec()
