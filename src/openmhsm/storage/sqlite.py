"""SQLite storage for embedded (dev) mode: one file in WAL mode, shared safely between processes.

Tables: `kv(key, value, mod_revision)`, `meta(name, value)` holding the store revision, the
compacted revision, the snapshot floor and the schema version, and `changes(seq, revision, key,
kind, value, prev_value, prev_revision)`, a change log pruned (whole revisions at a time) to at
most `max_history` events, which serves `watch_from` and `snapshot_page`.

Snapshots. Each change records the entry it replaced (`prev_revision` its mod_revision, 0 when the
key was absent): new values alone cannot say what a key held at R when its last change at or
before R was pruned and it changed again after R. The state at revision R is: for each key with a
change after R, the entry its first such change replaced; for every other key, its `kv` row. R
must be no older than max(`compacted`, `snapshot_floor`) (every change after it is kept with its
previous entry), else StorageCompacted. Schema 1 files (changes without previous entries) are
migrated in place, with the snapshot floor at their revision then.

Every write call is one `BEGIN IMMEDIATE` transaction, so the revision is read and raised under
SQLite's write lock and stays monotonic across processes. Calls are synchronous (fast on a local
file) and serialised per object by an asyncio lock; watchers poll the change log every
`poll_interval` seconds and are woken at once by writes made through the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Final

from openmhsm.errors import StorageUnavailable
from openmhsm.storage.base import (
    Delete,
    Entry,
    Event,
    Put,
    StorageCompacted,
    TxnOp,
    check_compare,
    check_snapshot_revision,
    check_unique_keys,
    snapshot_merge,
)

SCHEMA_VERSION: Final = 2
DEFAULT_MAX_HISTORY: Final = 10_000

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " key TEXT PRIMARY KEY, value BLOB NOT NULL, mod_revision INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, revision INTEGER NOT NULL,"
    " key TEXT NOT NULL, kind TEXT NOT NULL, value BLOB NOT NULL,"
    " prev_value BLOB NOT NULL DEFAULT x'', prev_revision INTEGER NOT NULL DEFAULT -1)",
    "CREATE INDEX IF NOT EXISTS changes_by_revision ON changes(revision)",
    "INSERT OR IGNORE INTO meta(name, value) VALUES ('schema', 2), ('revision', 0),"
    " ('compacted', 0), ('snapshot_floor', 0)",
)
# Schema 1 -> 2: changes learn the entry they replaced; older changes cannot be undone.
_MIGRATE_1: Final = (
    "ALTER TABLE changes ADD COLUMN prev_value BLOB NOT NULL DEFAULT x''",
    "ALTER TABLE changes ADD COLUMN prev_revision INTEGER NOT NULL DEFAULT -1",
    "UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision')"
    " WHERE name = 'snapshot_floor'",
    "UPDATE meta SET value = 2 WHERE name = 'schema'",
)

# (lower bound is strict, prefix has an upper bound) -> query; constant strings, no SQL building.
_SELECT = "SELECT key, value, mod_revision FROM kv WHERE "
_LIST_QUERIES: Final = {
    (False, True): _SELECT + "key >= ? AND key < ? ORDER BY key LIMIT ?",
    (True, True): _SELECT + "key > ? AND key < ? ORDER BY key LIMIT ?",
    (False, False): _SELECT + "key >= ? ORDER BY key LIMIT ?",
    (True, False): _SELECT + "key > ? ORDER BY key LIMIT ?",
}
_CHANGES = "SELECT revision, key, kind, value FROM changes WHERE revision >= ? AND key >= ?"
_CHANGES_QUERIES: Final = {
    True: _CHANGES + " AND key < ? ORDER BY seq",
    False: _CHANGES + " ORDER BY seq",
}
_UNDO = "SELECT key, prev_value, prev_revision FROM changes WHERE revision > ? AND key >= ?"
_UNDO_QUERIES: Final = {
    True: _UNDO + " AND key < ? ORDER BY seq DESC",
    False: _UNDO + " ORDER BY seq DESC",
}


class SqliteStorage:
    """The `Storage` Protocol on a SQLite file (created with mode 0600)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_history: int = DEFAULT_MAX_HISTORY,
        poll_interval: float = 0.05,
        busy_timeout: float = 5.0,
    ) -> None:
        """Open (or create) the store at `path`. Raises StorageUnavailable."""
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.path = Path(path)
        self._max_history = max_history
        self._poll_interval = poll_interval
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # replaced after each local commit: a generation signal
        self._closed = False
        _create_private_file(self.path)
        with _unavailable():
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        try:
            self._init_schema()
        except BaseException:
            self._db.close()
            raise

    async def get(self, key: str) -> Entry | None:
        """The entry at `key`, or None."""
        async with self._open_db() as db:
            row = db.execute("SELECT value, mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
        return Entry(key, row[0], row[1]) if row is not None else None

    async def put_if(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        """Write `value` at `key`; return the new revision. Raises StorageConflict."""
        return await self.txn([Put(key, value, expected_revision)])

    async def delete_if(self, key: str, expected_revision: int | None = None) -> int:
        """Remove `key`; return the store revision. Raises StorageConflict."""
        return await self.txn([Delete(key, expected_revision)])

    async def list_page(
        self, prefix: str, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` in key order, after `start_after`, at most `limit`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        strict = start_after is not None and start_after >= prefix
        lower = start_after if strict and start_after is not None else prefix
        upper = _prefix_end(prefix)
        params = (lower, limit) if upper is None else (lower, upper, limit)
        async with self._open_db() as db:
            rows = db.execute(_LIST_QUERIES[strict, upper is not None], params).fetchall()
        return [Entry(k, v, r) for k, v, r in rows if k.startswith(prefix)]

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` as they were at `revision`, in key order, after
        `start_after`, at most `limit`, read in one SQLite snapshot. Raises StorageCompacted,
        ValueError."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        strict = start_after is not None and start_after >= prefix
        lower = start_after if strict and start_after is not None else prefix
        upper = _prefix_end(prefix)
        async with self._open_db() as db:
            db.execute("BEGIN")
            try:
                oldest = max(_meta(db, "compacted"), _meta(db, "snapshot_floor"))
                check_snapshot_revision(revision, _meta(db, "revision"), oldest)
                params: tuple[object, ...] = (revision, prefix)
                if upper is not None:
                    params += (upper,)
                undone: dict[str, Entry | None] = {}
                # newest first, so each key ends with the entry its first change replaced
                for key, value, mod in db.execute(_UNDO_QUERIES[upper is not None], params):
                    undone[key] = Entry(key, value, mod) if mod > 0 else None
                count = limit + len(undone)
                params = (lower, count) if upper is None else (lower, upper, count)
                rows = db.execute(_LIST_QUERIES[strict, upper is not None], params).fetchall()
            finally:
                db.execute("COMMIT")
        current = [Entry(k, v, r) for k, v, r in rows if k.startswith(prefix)]
        return snapshot_merge(current, undone, prefix, start_after, limit)

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Apply every operation in one SQLite transaction if every compare holds; return the
        new revision. Raises StorageConflict (nothing applied), StorageUnavailable, and
        ValueError when a key appears twice."""
        check_unique_keys(ops)
        async with self._open_db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                revision = self._apply(db, ops)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return revision

    async def revision(self) -> int:
        """The store's current revision."""
        async with self._open_db() as db:
            return _meta(db, "revision")

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        """Changes under `prefix` from `revision` on, then live ones; ends when the store closes.

        Raises StorageCompacted (on iteration) for a revision older than the kept change log,
        also when a slow consumer falls that far behind.
        """
        return self._watch(prefix, revision)

    async def close(self) -> None:
        """Close the connection and end every watcher. Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
        self._changed.set()

    def _init_schema(self) -> None:
        with _unavailable():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                schema = _meta(self._db, "schema")
                if schema == 1:
                    for statement in _MIGRATE_1:
                        self._db.execute(statement)
                    schema = _meta(self._db, "schema")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if schema != SCHEMA_VERSION:
            self._db.close()
            raise StorageUnavailable(f"{self.path}: unknown storage schema version {schema}")

    def _apply(self, db: sqlite3.Connection, ops: Sequence[TxnOp]) -> int:
        """Compare, then write every op; runs inside BEGIN IMMEDIATE. Returns the revision."""
        before: dict[str, tuple[bytes, int]] = {}
        for op in ops:
            row = db.execute(
                "SELECT value, mod_revision FROM kv WHERE key = ?", (op.key,)
            ).fetchone()
            check_compare(op, row[1] if row is not None else 0)
            before[op.key] = (row[0], row[1]) if row is not None else (b"", 0)
        current = _meta(db, "revision")
        revision = current + 1
        changes: list[tuple[int, str, str, bytes, bytes, int]] = []
        for op in ops:
            if isinstance(op, Put):
                value = bytes(op.value)
                db.execute(
                    "INSERT INTO kv(key, value, mod_revision) VALUES (?, ?, ?) ON CONFLICT(key)"
                    " DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision",
                    (op.key, value, revision),
                )
                changes.append((revision, op.key, "put", value, *before[op.key]))
            elif db.execute("DELETE FROM kv WHERE key = ?", (op.key,)).rowcount:
                changes.append((revision, op.key, "delete", b"", *before[op.key]))
        if not changes:
            return current
        db.executemany(
            "INSERT INTO changes(revision, key, kind, value, prev_value, prev_revision)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            changes,
        )
        db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        self._prune_changes(db)
        return revision

    def _prune_changes(self, db: sqlite3.Connection) -> None:
        """Drop the oldest whole revisions until at most `max_history` events remain."""
        first, last = db.execute("SELECT min(seq), max(seq) FROM changes").fetchone()
        if last - first + 1 <= self._max_history:
            return
        (cut,) = db.execute(
            "SELECT revision FROM changes WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
            (last - self._max_history,),
        ).fetchone()
        db.execute("DELETE FROM changes WHERE revision <= ?", (cut,))
        db.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'", (cut,))

    async def _watch(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        next_revision = max(revision, 1)
        upper = _prefix_end(prefix)
        while not self._closed:
            changed = self._changed
            async with self._lock:
                if self._closed:
                    return
                with _unavailable():
                    batch, upto = self._read_changes(prefix, upper, next_revision)
            next_revision = max(next_revision, upto + 1)
            for event in batch:
                yield event
            if not batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await changed.wait()

    def _read_changes(self, prefix: str, upper: str | None, since: int) -> tuple[list[Event], int]:
        """Events under `prefix` with revision >= `since`, and the revision they run up to,
        read in one snapshot. Raises StorageCompacted."""
        db = self._db
        db.execute("BEGIN")
        try:
            compacted = _meta(db, "compacted")
            upto = _meta(db, "revision")
            if since <= compacted:
                raise StorageCompacted(
                    f"revision {since} is compacted (history starts after {compacted})"
                )
            params = (since, prefix) if upper is None else (since, prefix, upper)
            rows = db.execute(_CHANGES_QUERIES[upper is not None], params).fetchall()
        finally:
            db.execute("COMMIT")
        events = [
            Event("put" if kind == "put" else "delete", key, value, rev)
            for rev, key, kind, value in rows
            if key.startswith(prefix)
        ]
        return events, upto

    @contextlib.asynccontextmanager
    async def _open_db(self) -> AsyncIterator[sqlite3.Connection]:
        """The connection, held under the lock, with sqlite errors as StorageUnavailable."""
        async with self._lock:
            if self._closed:
                raise StorageUnavailable("storage is closed")
            with _unavailable():
                yield self._db


def _meta(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise StorageUnavailable(f"storage metadata {name!r} is missing")
    return int(row[0])


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates cannot be encoded for SQLite; skip past them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _create_private_file(path: Path) -> None:
    """Create `path` with mode 0600 unless it exists. Raises StorageUnavailable."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageUnavailable(f"cannot create {path}: {exc.strerror}") from exc
    os.close(fd)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"sqlite: {exc}") from exc
