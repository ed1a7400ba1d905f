"""Rollout strategies: pure ``next_step(view) -> Step`` functions over a read-only view of one
deployment — rolling, canary, blue/green, and the rollback (instant when the old revision is
still warm)."""

from .blue_green import next_step as blue_green_step
from .canary import next_step as canary_step
from .rollback import next_step as rollback_step
from .rolling import next_step as rolling_step

__all__ = ["blue_green_step", "canary_step", "rollback_step", "rolling_step"]
