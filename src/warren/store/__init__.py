"""StateStore implementations behind one etcd-shaped API (``warren.ports.StateStore``):
``memory`` for tests, ``sqlite`` (the embedded default), ``etcd`` (for HA; ``store.etcd``, imported
only when asked for: gRPC is slow to load, and comes with the ``etcd`` extra only). No SQL or etcd
call outside this package.
"""

from __future__ import annotations

from pathlib import Path

from ..domain.errors import ValidationError
from ..extras import ETCD, needs_extra
from ..ports import Clock, StateStore
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "open_store"]


def open_store(url: str, data_dir: Path, clock: Clock) -> StateStore:
    """``sqlite`` (default, ``DATA_DIR/state.db``), ``sqlite:///PATH``, ``memory``, or
    ``etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`` (keys under ``/warren`` unless a prefix is given;
    it connects on first use, and lease expiry follows etcd's clock, not ``clock``)."""
    if url.startswith("etcd://"):
        with needs_extra(ETCD):
            from .etcd import EtcdStore

        return EtcdStore.from_url(url)
    store: MemoryStore
    if url == "memory":
        store = MemoryStore(clock)
    elif url == "sqlite":
        store = SqliteStore(data_dir / "state.db", clock)
    elif url.startswith("sqlite:///"):
        store = SqliteStore(url[len("sqlite://") :], clock)
    else:
        raise ValidationError(
            f"unknown store {url!r}; use sqlite, sqlite:///PATH, memory or etcd://HOST:PORT,…",
            "--store",
        )
    store.start()
    return store
