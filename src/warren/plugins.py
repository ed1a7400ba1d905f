"""Strategy plugins: rollout strategies other packages ship, found through the entry point group
``warren.strategies`` (docs/writing-a-strategy.md). Each entry point names a ``StrategyKind`` —
or a function that returns one — and is registered by its ``name`` beside rolling, canary and
blue/green.

The server loads them as it starts (a plugin that does not load stops it, naming the plugin:
a service whose strategy is missing would otherwise be released by another strategy). A spec
needs only the name, the entry point's (``domain.specs.plugin_strategy_names``): the CLI and
the Python client take it without loading the plugin.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from .domain.errors import ValidationError
from .domain.specs import STRATEGY_GROUP
from .planning.strategies import STRATEGIES, StrategyKind, register

__all__ = ["GROUP", "load_strategies"]

GROUP = STRATEGY_GROUP
log = logging.getLogger("warren.plugins")
_loaded = False


def _kind_of(entry: EntryPoint) -> StrategyKind:
    try:
        found = entry.load()
        kind = found() if callable(found) and not isinstance(found, StrategyKind) else found
    except Exception as exc:  # a plugin's own error, whatever it is: named, with the plugin
        raise ValidationError(
            f"strategy plugin {entry.name!r} ({entry.value}) does not load: {exc}"
        ) from None
    if not isinstance(kind, StrategyKind):
        raise ValidationError(
            f"strategy plugin {entry.name!r} ({entry.value}) is not a StrategyKind: "
            f"{type(kind).__name__}"
        )
    return kind


def load_strategies() -> list[str]:
    """Register every strategy of the ``warren.strategies`` entry points (once); their names."""
    global _loaded
    if _loaded:
        return []
    _loaded = True
    names = []
    for entry in entry_points(group=GROUP):
        kind = _kind_of(entry)
        if kind.name != entry.name:  # a spec names it by its entry point (domain.specs)
            raise ValidationError(
                f"strategy plugin {entry.name!r} ({entry.value}) is named {kind.name!r}: "
                "the entry point's name must be the strategy's"
            )
        if kind.name in STRATEGIES:
            raise ValidationError(
                f"strategy plugin {entry.name!r} ({entry.value}) is named {kind.name!r}, "
                "which is taken"
            )
        register(kind)
        names.append(kind.name)
        log.info("strategy %s from %s", kind.name, entry.value)
    return names
