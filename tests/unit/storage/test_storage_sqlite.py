"""SqliteStorage: the conformance suite, plus files, reopening and sharing one file."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from openmhsm.errors import StorageConflict, StorageUnavailable
from openmhsm.storage.base import Event, Put, Storage, StorageCompacted
from openmhsm.storage.conformance import CHECKS, Check, check_name
from openmhsm.storage.sqlite import SqliteStorage


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_sqlite_conformance(check: Check, tmp_path: Path) -> None:
    counter = itertools.count()

    async def make() -> Storage:
        return SqliteStorage(tmp_path / f"store{next(counter)}.db", max_history=32)

    asyncio.run(check(make))


def test_file_is_private(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = SqliteStorage(tmp_path / "pool.db")
        await s.put_if("k", b"v")
        for name in ("pool.db", "pool.db-wal", "pool.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        await s.close()

    asyncio.run(scenario())


def test_reopen_keeps_data_revision_and_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = SqliteStorage(tmp_path / "pool.db")
        r1 = await s.put_if("k/1", b"one")
        r2 = await s.txn([Put("k/2", b"two"), Put("k/3", b"three")])
        await s.close()
        s = SqliteStorage(tmp_path / "pool.db")
        assert await s.revision() == r2
        assert [e.key for e in await s.list_page("k/")] == ["k/1", "k/2", "k/3"]
        assert await s.put_if("k/1", b"uno", r1) == r2 + 1
        stream = s.watch_from("k/", r1)
        assert [await anext(stream) for _ in range(4)] == [
            Event("put", "k/1", b"one", r1),
            Event("put", "k/2", b"two", r2),
            Event("put", "k/3", b"three", r2),
            Event("put", "k/1", b"uno", r2 + 1),
        ]
        await stream.aclose()  # type: ignore[attr-defined]
        await s.close()

    asyncio.run(scenario())


def test_two_connections_share_one_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = SqliteStorage(tmp_path / "pool.db")
        b = SqliteStorage(tmp_path / "pool.db", poll_interval=0.01)
        stream = b.watch_from("k/", 1)
        r1 = await a.put_if("k/x", b"from a", 0)
        assert await b.get("k/x") is not None
        await _conflicts(b.put_if("k/x", b"from b", 0))
        r2 = await b.put_if("k/x", b"from b", r1)
        assert r2 == r1 + 1
        assert await a.revision() == r2
        results = await asyncio.gather(
            a.put_if("k/x", b"a wins", r2), b.put_if("k/x", b"b wins", r2), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["StorageConflict", "int"]
        seen = [await asyncio.wait_for(anext(stream), 5) for _ in range(3)]
        assert [e.revision for e in seen] == [r1, r2, r2 + 1]
        assert seen[0] == Event("put", "k/x", b"from a", r1)
        await stream.aclose()  # type: ignore[attr-defined]
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_threads_on_one_file_keep_revisions_unique(tmp_path: Path) -> None:
    """Two connections in two threads race compare-and-set increments through SQLite's locks."""
    revisions: list[int] = []

    async def increment_many() -> None:
        s = SqliteStorage(tmp_path / "pool.db")
        for _ in range(40):
            while True:
                entry = await s.get("counter")
                count = int(entry.value) if entry else 0
                try:
                    expected = entry.mod_revision if entry else 0
                    revisions.append(await s.put_if("counter", b"%d" % (count + 1), expected))
                    break
                except StorageConflict:
                    continue
        await s.close()

    asyncio.run(SqliteStorage(tmp_path / "pool.db").close())  # create the schema once
    threads = [threading.Thread(target=asyncio.run, args=(increment_many(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def final() -> None:
        s = SqliteStorage(tmp_path / "pool.db")
        entry = await s.get("counter")
        assert entry is not None and entry.value == b"80"
        await s.close()

    asyncio.run(final())
    assert sorted(revisions) == list(range(1, 81))


def test_history_is_pruned_to_its_bound(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = SqliteStorage(tmp_path / "pool.db", max_history=5)
        first = await s.put_if("k", b"0")
        for i in range(1, 20):
            await s.put_if("k", b"%d" % i)
        with pytest.raises(StorageCompacted):
            await anext(s.watch_from("", first))
        await s.close()
        with sqlite3.connect(tmp_path / "pool.db") as db:
            (count,) = db.execute("SELECT count(*) FROM changes").fetchone()
        db.close()
        assert count == 5

    asyncio.run(scenario())


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    asyncio.run(SqliteStorage(tmp_path / "pool.db").close())
    with sqlite3.connect(tmp_path / "pool.db") as db:
        db.execute("UPDATE meta SET value = 99 WHERE name = 'schema'")
    db.close()
    with pytest.raises(StorageUnavailable, match="schema version 99"):
        SqliteStorage(tmp_path / "pool.db")


def test_missing_directory_and_closed_store_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        SqliteStorage(tmp_path / "missing" / "pool.db")

    async def scenario() -> None:
        s = SqliteStorage(tmp_path / "pool.db")
        stream = s.watch_from("", 1)
        await s.close()
        with pytest.raises(StorageUnavailable):
            await s.get("k")
        assert await anext(stream, None) is None

    asyncio.run(scenario())


async def _conflicts(write: object) -> None:
    with pytest.raises(StorageConflict):
        await write  # type: ignore[misc]
