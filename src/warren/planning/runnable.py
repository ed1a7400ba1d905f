"""Whether a revision can run, judged from what the managers know — checked before a rollback to
it starts, so that an operator's rollback is refused in one line instead of failing task by
task. Pure: the nodes, the revision and (for the process driver) a lookup of the command come
in; no engine or node is asked.

What is checked, in order:

1. a ready, active node runs the revision's driver;
2. docker driver, when the image cannot be pulled — ``pullPolicy: never``, or a revision pinned
   to an image ID (``sha256:…``, an image that came from no registry): a ready docker node has
   run the revision's image (``Revision.image_nodes``). Warren does not know what else a node
   holds, so an image loaded by hand on a node that never ran it counts as absent;
3. process driver: the command's executable exists, where that can be known here — on the
   manager's own node, when it is the only ready node of the process driver.

A pullable image is not looked up in its registry (that is the driver's job, and it fails a
task at once with "image not found").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..domain.nodes import Node
from ..domain.services import Revision

__all__ = ["why_not_runnable"]


def why_not_runnable(
    revision: Revision,
    nodes: Sequence[Node],
    local_node: str | None = None,
    command_found: Callable[[str], bool] | None = None,
) -> str | None:
    """Why ``revision`` cannot run now (one line, no trailing period), or None.
    ``local_node``: the node of this manager, where ``command_found(executable)`` tells whether
    the process driver would find the command."""
    spec = revision.spec
    driver = spec.effective_driver
    ready = [n for n in nodes if n.schedulable and driver in n.drivers]
    if not ready:
        return f"no ready node runs the {driver} driver"
    if driver == "docker" and spec.image:
        return _image_missing(revision, ready)
    only_here = [n.name for n in ready] == [local_node]
    if driver != "process" or not spec.command or command_found is None or not only_here:
        return None
    executable = spec.command[0]
    return None if command_found(executable) else f"{executable} is not found on node {local_node}"


def _image_missing(revision: Revision, ready: Sequence[Node]) -> str | None:
    """Example: image ``demo:v0``, pullPolicy never, run only on node b, which is down →
    "image demo:v0 is not on any ready node (it ran on: b) and pullPolicy is never"."""
    spec = revision.spec
    pinned = revision.image_digest or ""
    local_only = pinned.startswith("sha256:")
    if spec.pull_policy != "never" and not local_only:
        return None
    if {n.name for n in ready} & set(revision.image_nodes):
        return None
    ran = f" (it ran on: {', '.join(revision.image_nodes)})" if revision.image_nodes else ""
    if local_only:
        return (
            f"image {spec.image} ({pinned[:19]}) came from no registry "
            f"and is not on any ready node{ran}"
        )
    return f"image {spec.image} is not on any ready node{ran} and pullPolicy is never"
