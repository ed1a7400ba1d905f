"""Reading service YAML files (``warren apply -f``, ``service create -f``)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..domain.errors import ValidationError
from ..domain.specs import ServiceSpec, service_from_document

__all__ = ["load_services"]


def load_services(path: Path) -> list[ServiceSpec]:
    """Every document of a (multi-document) YAML file, validated; errors name the document and
    the field."""
    try:
        text = path.read_text() if str(path) != "-" else sys.stdin.read()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
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
