"""The release practices a spec departs from are told as warnings (never refused): a moving image
tag, no health check, a rolling update that replaces every task at once, no monitor window."""

from __future__ import annotations

import pytest

from warren.domain.advice import advise
from warren.domain.specs import ServiceSpec

SAFE = {
    "name": "web",
    "image": "registry.local:5000/web:1.2",
    "replicas": 3,
    "health_check": {"http": {"path": "/healthz", "port": 8080}},
}


def spec(**changes: object) -> ServiceSpec:
    return ServiceSpec.model_validate(SAFE | changes)


def test_a_safe_spec_gets_no_warning() -> None:
    assert advise(spec()) == ()
    assert advise(spec(image="web@sha256:" + "a" * 64)) == ()
    assert advise(spec(image=None, command=["python", "-m", "app"])) == ()


@pytest.mark.parametrize("image", ["web", "web:latest", "registry.local:5000/web", "a/b:latest"])
def test_a_moving_tag(image: str) -> None:
    (warning,) = advise(spec(image=image))
    assert warning.startswith(f"image {image!r} has a moving tag")


def test_no_health_check() -> None:
    (warning,) = advise(spec(health_check=None))
    assert warning.startswith("no health check")


def test_parallelism_zero_on_more_than_one_replica() -> None:
    everything = {"update_config": {"parallelism": 0}}
    (warning,) = advise(spec(deploy=everything))
    assert warning.startswith("parallelism 0 replaces all 3 tasks at once")
    assert advise(spec(deploy=everything, replicas=1)) == ()
    # Not a rolling update: parallelism is not how it moves.
    assert advise(spec(deploy=everything | {"strategy": "blue-green"})) == ()


def test_no_monitor_window() -> None:
    (warning,) = advise(spec(deploy={"update_config": {"monitor": 0}}))
    assert warning.startswith("monitor 0s")
