"""A strategy plugin as a third party writes one (docs/writing-a-strategy.md): ``all-at-once``
replaces every slot in one batch, whatever the update config's parallelism, and is otherwise a
rolling update (health, monitor, deadlines, automatic rollback). Found by Warren through this
package's entry point in the group ``warren.strategies``."""

from __future__ import annotations

import dataclasses

from warren.domain.specs import ServiceSpec
from warren.planning.previews import RolloutPlan
from warren.planning.rollouts import RolloutView, Step
from warren.planning.strategies import StrategyKind, rolling_step
from warren.planning.strategies.rolling import preview as rolling_preview


def _every_slot(view: RolloutView) -> Step:
    d = view.deployment
    one_batch = d.config.model_copy(update={"parallelism": 0})
    return rolling_step(
        dataclasses.replace(view, deployment=d.model_copy(update={"config": one_batch}))
    )


def _preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    update = spec.deploy.update_config.model_copy(update={"parallelism": 0})
    deploy = spec.deploy.model_copy(update={"update_config": update})
    return rolling_preview(spec.model_copy(update={"deploy": deploy}), revision, new)


def strategy() -> StrategyKind:
    return StrategyKind(name="all-at-once", next_step=_every_slot, preview=_preview)
