"""Warren: a small container orchestrator for safe releases.

Layers (checked by import-linter, see pyproject.toml), highest first:
cli → demo → server → api → deploy → client → ingress | agent | control → store → ports →
planning → domain.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
