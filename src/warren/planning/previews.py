"""What ``warren deploy plan`` shows: a rollout's steps as a strategy would run them — tasks per
revision, weights, the analysis of each step, the earliest time it can be reached — and the
changes of the spec that lead to it, field by field. Pure data; each strategy makes its own
(``strategies``), ``previewing`` picks the strategy."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pydantic.alias_generators import to_camel

from ..domain.diffs import Change

__all__ = ["PlannedStep", "RolloutPlan"]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    description: str
    tasks: dict[str, int]
    """Tasks per revision (``old`` / ``new``) once the step is done."""
    weights: dict[str, int] = field(default_factory=dict)
    """Traffic share per revision, when the release sets weights."""
    analysis: str = ""
    earliest_after: float | None = 0.0
    """Seconds after the start at which this step can be done at the earliest (None: it waits
    for a person)."""


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    strategy: str
    from_revision: int
    to_revision: int | None
    steps: tuple[PlannedStep, ...]
    peak_tasks: int
    earliest_finish: float | None
    notes: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    """The spec's changes that lead to this rollout (``domain.diffs``)."""

    def to_wire(self) -> dict[str, Any]:
        """camelCase, as the API's other documents (``earliestAfter``, ``peakTasks`` …)."""
        doc = _camel(self)
        doc["steps"] = [_camel(step) for step in self.steps]
        doc["changes"] = [change.to_wire() for change in self.changes]
        return doc


def _camel(record: PlannedStep | RolloutPlan) -> dict[str, Any]:
    return {to_camel(f.name): getattr(record, f.name) for f in fields(record)}
