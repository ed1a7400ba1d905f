"""The embedded default store: the in-memory engine, made durable in one SQLite file (WAL).

Every change is written to SQLite in one transaction *before* it becomes visible to readers or
watchers, so an acknowledged write survives ``kill -9`` of the server. Reads are served from
memory. Watch history does not survive a restart (it counts as compacted, as in etcd): watchers
re-list and watch from the listed revision.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..domain.errors import StoreError
from ..ports import Clock, KeyValue
from .memory import MemoryStore

__all__ = ["SqliteStore", "backup_revision", "restore_backup"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SqliteStore(MemoryStore):
    def __init__(self, path: str | Path, clock: Clock, history: int = 10_000) -> None:
        super().__init__(clock, history)
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: we issue BEGIN/COMMIT ourselves, one transaction per revision.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is in the OS before we return, so it survives the
            # death of this process; only a power cut can lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._load()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def _load(self) -> None:
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        kvs = [
            KeyValue(k, bytes(v), c, m, ver, lease)
            for k, v, c, m, ver, lease in self._db.execute(
                "SELECT key, value, create_revision, mod_revision, version, lease FROM kv"
            )
        ]
        leases = dict(self._db.execute("SELECT id, ttl FROM leases").fetchall())
        self._restore(meta.get("revision", 0), kvs, leases, meta.get("next_lease", 1))

    def _persist(self, revision: int, changes: dict[str, KeyValue | None]) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            for key, kv in changes.items():
                if kv is None:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                        (key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease),
                    )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def _persist_lease(self, lease_id: int, ttl: float | None, next_lease: int) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            if ttl is None:
                db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
            else:
                db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?)", (lease_id, ttl))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_lease', ?)", (next_lease,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def backup(self, target: Path) -> int:
        """Copy the store as it is now into a new SQLite file at ``target``; returns the
        revision it holds. Consistent: it runs on the event loop, between two writes, and
        SQLite's backup copies one transaction's state."""
        try:
            dest = sqlite3.connect(target)
            try:
                self._db.backup(dest)
            finally:
                dest.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot back up the store to {target}: {exc}") from exc
        return self.revision

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    async def close(self) -> None:
        await super().close()
        self._db.close()


def backup_revision(path: Path) -> int:
    """The store revision a backup holds; StoreError when ``path`` is not a sound Warren store
    (not SQLite, damaged, or another program's database)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise StoreError(f"{path} is damaged (SQLite's integrity check failed)")
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            if not {"kv", "leases", "meta"} <= tables:
                raise StoreError(f"{path} is a SQLite file, but not a Warren store")
            row = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a Warren store: {exc}") from exc
    return int(row[0]) if row else 0


def restore_backup(backup: Path, store: Path, now: float) -> tuple[int, Path | None]:
    """Make ``backup`` the store at ``store`` (no server may have it open): the store there
    now is kept beside it as ``state.db.before-restore-TIME`` (its WAL folded into it first).
    Returns the restored revision and where the previous store went (None: there was none)."""
    revision = backup_revision(backup)
    kept: Path | None = None
    if store.exists():
        # Fold the WAL into the file, so that what is kept is whole in one file.
        try:
            db = sqlite3.connect(store)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {store}: {exc}") from exc
        kept = store.with_name(f"{store.name}.before-restore-{int(now)}")
        store.rename(kept)
    for suffix in ("-wal", "-shm"):
        store.with_name(store.name + suffix).unlink(missing_ok=True)
    staged = store.with_name(store.name + ".restoring")
    staged.write_bytes(backup.read_bytes())
    staged.rename(store)
    return revision, kept
