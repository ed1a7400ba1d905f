"""Rollout strategies: pure ``next_step(view) -> Step`` functions over a read-only view of one
deployment. Rolling now; blue/green and canary join here."""

from .rolling import next_step as rolling_step

__all__ = ["rolling_step"]
