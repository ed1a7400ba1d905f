"""StateStore implementations behind one etcd-shaped API (``warren.ports.StateStore``):
``memory`` for tests, ``sqlite`` (the embedded default). No SQL or etcd call outside this package.
"""

from __future__ import annotations

from pathlib import Path

from ..domain.errors import ValidationError
from ..ports import Clock, StateStore
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "open_store"]


def open_store(url: str, data_dir: Path, clock: Clock) -> StateStore:
    """``sqlite`` (default, ``DATA_DIR/state.db``), ``sqlite:///PATH`` or ``memory``."""
    store: MemoryStore
    if url == "memory":
        store = MemoryStore(clock)
    elif url == "sqlite":
        store = SqliteStore(data_dir / "state.db", clock)
    elif url.startswith("sqlite:///"):
        store = SqliteStore(url[len("sqlite://") :], clock)
    elif url.startswith("etcd://"):
        raise ValidationError("the etcd store is not available in this version", "--store")
    else:
        raise ValidationError(f"unknown store {url!r}; use sqlite or memory", "--store")
    store.start()
    return store
