"""``planning.runnable.why_not_runnable``: what a rollback checks before it starts, as a table of
nodes, revisions and the answer."""

from __future__ import annotations

from typing import Any

import pytest

from warren.domain.nodes import Node, NodeAvailability, NodeStatus
from warren.domain.services import Revision
from warren.domain.specs import ServiceSpec
from warren.planning.runnable import why_not_runnable

DIGEST = "localhost/demo@sha256:" + "a" * 64
IMAGE_ID = "sha256:" + "b" * 64


def node(name: str, *drivers: str, down: bool = False, drained: bool = False) -> Node:
    return Node(
        name=name, cpus=2, memory=2**30, drivers=drivers or ("process",), registered_at=0,
        updated_at=0, status=NodeStatus.DOWN if down else NodeStatus.READY,
        availability=NodeAvailability.DRAIN if drained else NodeAvailability.ACTIVE,
    )  # fmt: skip


def revision(image_nodes: tuple[str, ...] = (), digest: str | None = None, **spec: Any) -> Revision:
    return Revision(
        service="web", number=2, spec=ServiceSpec(name="web", **spec), created_at=0,
        image_digest=digest, image_nodes=image_nodes,
    )  # fmt: skip


A_DOCKER, B_DOCKER = node("a", "process", "docker"), node("b", "docker")
NEVER = {"image": "demo:v0", "pull_policy": "never"}


@pytest.mark.parametrize(
    ("rev", "nodes", "expected"),
    [
        # the driver: a ready, active node must run it
        (revision(command=["app"]), [node("a")], None),
        (revision(image="demo:v1"), [node("a")], "no ready node runs the docker driver"),
        (revision(image="demo:v1"), [node("b", "docker", down=True)],
         "no ready node runs the docker driver"),
        (revision(image="demo:v1"), [node("b", "docker", drained=True)],
         "no ready node runs the docker driver"),
        # a pullable image is the driver's business
        (revision(image="demo:v1"), [A_DOCKER], None),
        (revision(digest=DIGEST, image="demo:v1"), [A_DOCKER], None),
        # pullPolicy never: a ready docker node has run it
        (revision(("b",), **NEVER), [A_DOCKER, B_DOCKER], None),
        (revision(**NEVER), [A_DOCKER],
         "image demo:v0 is not on any ready node and pullPolicy is never"),
        (revision(("b",), **NEVER), [A_DOCKER, node("b", "docker", down=True)],
         "image demo:v0 is not on any ready node (it ran on: b) and pullPolicy is never"),
        # pinned to an image ID: it cannot be pulled, whatever the policy
        (revision(("a",), IMAGE_ID, image="demo:v1"), [A_DOCKER], None),
        (revision(("b",), IMAGE_ID, image="demo:v1"), [A_DOCKER],
         "image demo:v1 (sha256:bbbbbbbbbbbb) came from no registry and is not on any ready "
         "node (it ran on: b)"),
    ],
)  # fmt: skip
def test_why_not_runnable(rev: Revision, nodes: list[Node], expected: str | None) -> None:
    assert why_not_runnable(rev, nodes) == expected


def test_a_missing_command_is_seen_only_when_this_node_is_the_only_one_that_could_run_it() -> None:
    rev = revision(command=["/gone/app", "--port", "1"])
    absent = {"/gone/app": False}.get
    assert why_not_runnable(rev, [node("here")], "here", lambda c: absent(c, True)) == (
        "/gone/app is not found on node here"
    )
    # Another node might have it: not known here, not refused.
    assert why_not_runnable(rev, [node("here"), node("there")], "here", lambda c: False) is None
    # This manager runs no tasks: nothing to look at.
    assert why_not_runnable(rev, [node("there")], None, lambda c: False) is None
    assert why_not_runnable(rev, [node("here")], "here", lambda c: True) is None
