"""The release practices a spec departs from, as warnings: printed when a service is created,
updated or applied, never refused (each can be what its author means).

- an image by a moving tag (``:latest``, or none, which means it): a rollback pulls whatever the
  tag names then, not what ran;
- no health check: a task counts as ready as soon as it runs, so a rollout cannot tell a task
  that serves from one that does not;
- a rolling update with ``parallelism: 0`` over more than one replica: every task is replaced
  at once, which is a restart, not a rolling update;
- ``monitor: 0s``: a task that fails right after it became ready does not count against the
  update, which then cannot roll back on it.

Pure: a spec in, sentences out.
"""

from __future__ import annotations

from .specs import ServiceSpec, Strategy

__all__ = ["advise"]


def advise(spec: ServiceSpec) -> tuple[str, ...]:
    """What ``spec`` does that a safe release usually does not, one sentence each."""
    found: list[str] = []
    if spec.image is not None and _moving_tag(spec.image):
        found.append(
            f"image {spec.image!r} has a moving tag: a rollback runs what the tag names then, "
            "not what ran; name a version (or a digest)"
        )
    if spec.health_check is None:
        found.append(
            "no health check: a task counts as ready as soon as it runs; "
            "give --health-http, --health-tcp or --health-cmd"
        )
    update = spec.deploy.update_config
    if spec.deploy.strategy == Strategy.ROLLING.value:
        if update.parallelism == 0 and spec.replicas > 1:
            found.append(
                f"parallelism 0 replaces all {spec.replicas} tasks at once: "
                "give --parallelism 1 (or more) for a rolling update"
            )
        if update.monitor == 0:
            found.append(
                "monitor 0s: a task failing right after it is ready does not count against "
                "the update, which cannot roll back on it; give --monitor (5s by default)"
            )
    return tuple(found)


def _moving_tag(image: str) -> bool:
    """``web``, ``web:latest``, ``registry:5000/web`` → True; ``web:1.2``, ``web@sha256:…`` →
    False. (A colon before the last slash belongs to the registry's port.)"""
    if "@" in image:
        return False
    name = image.rsplit("/", 1)[-1]
    return ":" not in name or name.endswith(":latest")
