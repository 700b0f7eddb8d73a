"""snapshot_page on memory and SQLite: random writes against recorded states, and the SQLite
schema 1 -> 2 migration (changes without previous entries cannot be undone)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openmhsm.storage.base import Delete, Entry, Event, Put, Storage, StorageCompacted, TxnOp
from openmhsm.storage.memory import MemoryStorage
from openmhsm.storage.sqlite import SqliteStorage


async def _snapshot(s: Storage, prefix: str, revision: int, limit: int) -> list[Entry]:
    entries: list[Entry] = []
    after: str | None = None
    while page := await s.snapshot_page(prefix, revision, after, limit):
        entries += page
        after = page[-1].key
    return entries


async def _random_writes_match_recorded_states(s: Storage) -> None:
    rng = random.Random(6)
    keys = [f"{p}/{i}" for p in ("a", "b") for i in range(8)]
    states = {await s.revision(): await s.list_page("")}
    for _ in range(150):
        chosen = rng.sample(keys, rng.randint(1, 4))
        ops: list[TxnOp] = [
            Put(k, rng.randbytes(3)) if rng.random() < 0.6 else Delete(k) for k in chosen
        ]
        revision = await s.txn(ops)
        states[revision] = await s.list_page("")
    for revision, state in states.items():
        for prefix in ("", "a/", "b/"):
            expected = [e for e in state if e.key.startswith(prefix)]
            for limit in (1, 3, 100):
                got = await _snapshot(s, prefix, revision, limit)
                assert got == expected, (revision, prefix, limit)
    await s.close()


def test_memory_random_snapshots() -> None:
    asyncio.run(_random_writes_match_recorded_states(MemoryStorage()))


def test_sqlite_random_snapshots(tmp_path: Path) -> None:
    asyncio.run(_random_writes_match_recorded_states(SqliteStorage(tmp_path / "pool.db")))


def test_fresh_store_snapshot_at_zero(tmp_path: Path) -> None:
    async def scenario(s: Storage) -> None:
        await s.put_if("k", b"v")
        assert await s.snapshot_page("", 0) == []
        with pytest.raises(ValueError):
            await s.snapshot_page("", -1)
        with pytest.raises(ValueError, match="limit"):
            await s.snapshot_page("", 1, limit=0)
        await s.close()

    asyncio.run(scenario(MemoryStorage()))
    asyncio.run(scenario(SqliteStorage(tmp_path / "pool.db")))


def test_sqlite_schema_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    with sqlite3.connect(path) as db:  # a schema 1 file, as the first release wrote it
        db.executescript(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " mod_revision INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE changes (seq INTEGER PRIMARY KEY, revision INTEGER NOT NULL,"
            " key TEXT NOT NULL, kind TEXT NOT NULL, value BLOB NOT NULL);"
            "INSERT INTO kv VALUES ('k', x'31', 1), ('j', x'32', 2);"
            "INSERT INTO changes(revision, key, kind, value) VALUES"
            " (1, 'k', 'put', x'31'), (2, 'j', 'put', x'32');"
            "INSERT INTO meta VALUES ('schema', 1), ('revision', 2), ('compacted', 0);"
        )
    db.close()

    async def scenario() -> None:
        s = SqliteStorage(path)
        assert [e.key async for e in _take(s, 2)] == ["k", "j"]  # watch history kept
        with pytest.raises(StorageCompacted):
            await s.snapshot_page("", 1)
        assert await s.snapshot_page("", 2) == [Entry("j", b"2", 2), Entry("k", b"1", 1)]
        r3 = await s.put_if("k", b"new")
        assert await s.snapshot_page("", 2) == [Entry("j", b"2", 2), Entry("k", b"1", 1)]
        assert await s.snapshot_page("", r3) == [Entry("j", b"2", 2), Entry("k", b"new", r3)]
        await s.close()

    asyncio.run(scenario())


async def _take(s: Storage, n: int) -> AsyncIterator[Event]:
    stream = s.watch_from("", 1)
    for _ in range(n):
        yield await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
