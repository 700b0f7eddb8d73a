"""Counting what an old primary committed after its peer's promotion revision."""

from __future__ import annotations

import asyncio

from openmhsm.region.lost_writes import describe, unreplicated
from openmhsm.storage.base import Delete, Put
from openmhsm.storage.memory import MemoryStorage

PREFIX = "/p/"


def replicated(key: str) -> bool:
    return key.startswith(PREFIX) and not key[len(PREFIX) :].startswith(("jobs/", "region/"))


def test_names_collapse_a_keys_records() -> None:
    assert describe("keys/k1/v1") == "keys/k1" and describe("keys/k1/policy") == "keys/k1"
    assert describe("deleted/k2") == "deleted/k2"
    assert describe("rbac/assignments/a1") == "rbac/assignments/a1"


def test_writes_after_the_promotion_revision_are_counted_by_transaction() -> None:
    async def scenario() -> None:
        storage = MemoryStorage()
        promoted_at = await storage.put_if(PREFIX + "keys/old/v1", b"replicated")
        await storage.txn([Put(PREFIX + "keys/new/v1", b"x"), Put(PREFIX + "keys/new/v2", b"y")])
        await storage.put_if(PREFIX + "jobs/lease", b"local")  # never replicated: not lost
        await storage.txn([Delete(PREFIX + "keys/old/v1"), Put(PREFIX + "deleted/old", b"z")])
        await storage.put_if(PREFIX + "region/link", b"local")
        report = await asyncio.wait_for(unreplicated(storage, PREFIX, promoted_at, replicated), 30)
        assert report["count"] == 2
        assert report["names"] == ["deleted/old", "keys/new", "keys/old"]
        nothing = await unreplicated(storage, PREFIX, await storage.revision(), replicated)
        assert nothing["count"] == 0 and nothing["names"] == []

    asyncio.run(scenario())


def test_compacted_history_names_the_changed_records_and_leaves_the_count_unknown() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(max_history=2)
        first = await storage.put_if(PREFIX + "keys/a/v1", b"a")
        for n in range(5):
            await storage.put_if(PREFIX + f"keys/b/v{n}", b"b")
        report = await asyncio.wait_for(unreplicated(storage, PREFIX, first, replicated), 30)
        assert report["count"] is None and report["names"] == ["keys/b"]

    asyncio.run(scenario())
