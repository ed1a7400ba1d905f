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


def open_store(
    url: str,
    data_dir: Path,
    clock: Clock,
    *,
    etcd_ca: str | None = None,
    etcd_cert: str | None = None,
    etcd_key: str | None = None,
) -> StateStore:
    """``sqlite`` (default, ``DATA_DIR/state.db``), ``sqlite:///PATH``, ``memory``, or
    ``etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`` (keys under ``/warren`` unless a prefix is given;
    it connects on first use, and lease expiry follows etcd's clock, not ``clock``), or
    ``etcds://…``: the same over TLS, etcd verified with the CA file ``etcd_ca`` (default: the
    system's CAs), this client's certificate ``etcd_cert`` and key ``etcd_key`` presented to it.
    The TLS files are read here: one that cannot be is a ValidationError naming it."""
    if (etcd_ca or etcd_cert or etcd_key) and not url.startswith("etcds://"):
        raise ValidationError(
            "--etcd-ca, --etcd-cert and --etcd-key are for an etcd store over TLS: "
            f"--store etcds://HOST:PORT,… (not {url!r})",
            "--store",
        )
    if url.startswith(("etcd://", "etcds://")):
        with needs_extra(ETCD):
            from .etcd import EtcdStore, EtcdTls

        tls = EtcdTls.load(etcd_ca, etcd_cert, etcd_key) if url.startswith("etcds://") else None
        return EtcdStore.from_url(url, tls=tls)
    store: MemoryStore
    if url == "memory":
        store = MemoryStore(clock)
    elif url == "sqlite":
        store = SqliteStore(data_dir / "state.db", clock)
    elif url.startswith("sqlite:///"):
        store = SqliteStore(url[len("sqlite://") :], clock)
    else:
        raise ValidationError(
            f"unknown store {url!r}; use sqlite, sqlite:///PATH, memory, etcd://HOST:PORT,… "
            "or etcds://HOST:PORT,…",
            "--store",
        )
    store.start()
    return store
