"""A service YAML that cannot be read as written is refused in one line naming the file and what
is wrong: a key given twice (YAML would keep the last one silently), bytes that are not UTF-8,
nesting too deep to be a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from warren.cli.documents import load_services
from warren.domain.errors import ValidationError

SPEC = "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web}\nspec:\n"


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(SPEC + "  command: python -m app\n  replicas: 2\n  replicas: 3\n")
    with pytest.raises(ValidationError) as refused:
        load_services(path)
    assert refused.value.message == f"{path} at line 7: duplicate key 'replicas'"


def test_a_key_given_twice_deeper_down_too(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(SPEC + "  command: python -m app\n  env: {A: '1', A: '2'}\n")
    with pytest.raises(ValidationError, match="line 6: duplicate key 'A'"):
        load_services(path)


def test_the_same_key_in_two_mappings_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(SPEC + "  command: python -m app\n  env: {name: x}\n")
    (spec,) = load_services(path)
    assert spec.name == "web" and spec.env == {"name": "x"}


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_bytes(SPEC.encode() + b"  command: caf\xe9\n")
    with pytest.raises(ValidationError) as refused:
        load_services(path)
    assert refused.value.message == f"{path} is not UTF-8 text (byte {len(SPEC) + 14})"


def test_nesting_too_deep_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("spec: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValidationError) as refused:
        load_services(path)
    assert refused.value.message == f"{path}: nested too deeply to be a service"
