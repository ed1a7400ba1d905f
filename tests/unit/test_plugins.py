"""Strategy plugins that cannot be used stop the server with one line naming the plugin: one
that does not load, one that is not a StrategyKind, one whose entry point's name is not its
strategy's, one named like a strategy already there."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from warren import plugins
from warren.domain.errors import ValidationError
from warren.planning.strategies import STRATEGIES, unregister
from warren.planning.strategies.rolling import ROLLING


def _load(monkeypatch: pytest.MonkeyPatch, *entries: EntryPoint) -> list[str]:
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "entry_points", lambda group: list(entries))
    return plugins.load_strategies()


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("broken", "no_such_module_here:strategy", "does not load: No module named"),
        ("odd", "warren.planning.strategies:STRATEGIES", "is not a StrategyKind: dict"),
        ("other", "warren.planning.strategies.rolling:ROLLING", "is named 'rolling'"),
        ("rolling", "warren.planning.strategies.rolling:ROLLING", "which is taken"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    with pytest.raises(ValidationError, match=said) as info:
        _load(monkeypatch, EntryPoint(name, value, plugins.GROUP))
    assert f"strategy plugin {name!r} ({value})" in str(info.value)


def test_a_plugin_is_registered_by_its_name_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import sys
    import types

    module = types.ModuleType("warren_test_plugin")
    module.strategy = lambda: dataclasses.replace(ROLLING, name="slow-rolling")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "warren_test_plugin", module)
    entry = EntryPoint("slow-rolling", "warren_test_plugin:strategy", plugins.GROUP)
    try:
        assert _load(monkeypatch, entry) == ["slow-rolling"]
        assert STRATEGIES["slow-rolling"].next_step is ROLLING.next_step
        assert plugins.load_strategies() == []  # once per process
    finally:
        unregister("slow-rolling")
