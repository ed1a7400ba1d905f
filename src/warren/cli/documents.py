"""Reading service YAML files (``warren apply -f``, ``service create -f``): UTF-8 text, each
key of a mapping once (YAML would keep the last of two silently)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from ..domain.errors import ValidationError
from ..domain.specs import ServiceSpec, service_from_document

__all__ = ["load_services"]


def load_services(path: Path) -> list[ServiceSpec]:
    """Every document of a (multi-document) YAML file, validated; errors name the document and
    the field."""
    try:
        data = path.read_bytes() if str(path) != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except RecursionError:
        raise ValidationError(f"{path}: nested too deeply to be a service") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ValidationError(f"{path}{where}: {problem}") from None
    if not docs:
        raise ValidationError(f"{path} holds no document")
    specs = []
    for i, doc in enumerate(docs, 1):
        try:
            specs.append(service_from_document(doc))
        except ValidationError as exc:
            label = f"{path}" + (f" (document {i})" if len(docs) > 1 else "")
            raise ValidationError(f"{label}: {exc.message}") from None
    return specs


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader``, refusing a mapping that gives a key twice."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)
