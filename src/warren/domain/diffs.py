"""The changes between two documents, field by field — what ``warren deploy plan`` and
``warren apply --dry-run`` show before anything is done, as ``nomad job plan`` does. Pure; it
imports nothing of Warren's (the CLI shows a plan without pydantic).

A change has a dotted path (``env.VERSION``, ``deploy.updateConfig.parallelism``) and the old
and new values, None where the field is absent: ``old`` None is a field added, ``new`` None one
removed (documents come from ``to_wire``, which leaves out None fields, so that is never a
value). Mappings are compared key by key, down to their leaves — a mapping added or removed
whole is its leaves added or removed, so every line is one field. **Lists are compared as a
whole**, not index by index: a spec's lists are ordered steps (canary steps, a command's
arguments) where one step inserted at the front would show every later index as changed, or
short lists of records (ports, notify receivers) best read side by side; one line with the old
and the new list says what happened in both cases.

Worked example: ``{"env": {"VERSION": "v1"}}`` → ``{"env": {"VERSION": "v2", "DEBUG": "1"}}``
is ``~ env.VERSION: "v1" => "v2"`` and ``+ env.DEBUG: "1"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Change", "diff", "render"]


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    old: Any = None
    """None: the field is added."""
    new: Any = None
    """None: the field is removed."""
    new_tasks: bool = True
    """Whether the change needs new tasks (part of the template); a spec's replicas and
    rollout settings do not (``specs.spec_changes``)."""

    @property
    def sign(self) -> str:
        """``+`` added, ``-`` removed, ``~`` changed (nomad's marks)."""
        if self.old is None:
            return "+"
        return "-" if self.new is None else "~"

    def __str__(self) -> str:
        if self.old is None:
            return f"+ {self.path}: {render(self.new)}"
        if self.new is None:
            return f"- {self.path}: {render(self.old)}"
        return f"~ {self.path}: {render(self.old)} => {render(self.new)}"

    def to_wire(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "newTasks": self.new_tasks}

    @staticmethod
    def from_wire(doc: Mapping[str, Any]) -> Change:
        return Change(doc["path"], doc.get("old"), doc.get("new"), bool(doc.get("newTasks", True)))


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> tuple[Change, ...]:
    """The changes from ``old`` to ``new``: in ``new``'s order, then the keys only ``old`` has."""
    changes: list[Change] = []
    for key in [*new, *(k for k in old if k not in new)]:
        changes.extend(_changes_of(f"{prefix}{key}", old.get(key), new.get(key)))
    return tuple(changes)


def _changes_of(path: str, old: Any, new: Any) -> tuple[Change, ...]:
    if old == new:
        return ()
    if isinstance(old, Mapping) or isinstance(new, Mapping):
        both = (old, new)
        if all(isinstance(side, Mapping) or side is None for side in both) and (old or new):
            # Down to the leaves, a mapping added or removed whole included.
            return diff(old or {}, new or {}, f"{path}.")
    return (Change(path, old, new),)


def render(value: Any) -> str:
    """A value as JSON on one line: strings quoted, so ``"1"`` and ``1`` differ at a glance."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
