"""Group commit: concurrent transactions share one while another is in flight, each with the
outcome it would have had alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Delete, Put, TxnOp
from openmhsm.storage.group_commit import GroupCommit
from openmhsm.storage.memory import MemoryStorage

GUARD = Delete("jobs/fence", 0)


class SlowStorage(MemoryStorage):
    """Memory storage whose transactions take a while, as a consensus round does."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        self.sizes.append(len(ops))
        await asyncio.sleep(0.01)
        return await super().txn(ops)


def run(body: object) -> None:
    asyncio.run(asyncio.wait_for(body, 10))  # type: ignore[arg-type]


def test_a_lone_writer_goes_at_once() -> None:
    async def body() -> None:
        store = SlowStorage()
        commits = GroupCommit(store)
        revision = await commits.txn([Put("a", b"1"), GUARD])
        assert revision == await store.revision() and store.sizes == [2]

    run(body())


def test_writers_that_arrive_meanwhile_share_the_next_transaction() -> None:
    async def body() -> None:
        store = SlowStorage()
        commits = GroupCommit(store)
        revisions = await asyncio.gather(
            *(commits.txn([Put(f"k{n}", b"v"), GUARD]) for n in range(10))
        )
        assert store.sizes == [2, 10]  # the first alone, then nine puts and one shared guard
        assert len(set(revisions[1:])) == 1 and revisions[0] < revisions[1]
        assert [e.key for e in await store.list_page("k")] == sorted(f"k{n}" for n in range(10))

    run(body())


def test_writers_of_one_key_are_never_grouped() -> None:
    async def body() -> None:
        store = SlowStorage()
        commits = GroupCommit(store)
        await asyncio.gather(
            commits.txn([Put("first", b"")]),
            commits.txn([Put("same", b"1")]),
            commits.txn([Put("same", b"2")]),
            commits.txn([Put("other", b"")]),
        )
        assert store.sizes == [1, 1, 2]  # keeps order: "same" twice means two transactions
        entry = await store.get("same")
        assert entry is not None and entry.value == b"2"

    run(body())


def test_a_failed_compare_fails_only_its_own_writer() -> None:
    async def body() -> None:
        store = SlowStorage()
        taken = await store.put_if("taken", b"x")
        commits = GroupCommit(store)
        results = await asyncio.gather(
            commits.txn([Put("first", b"")]),
            commits.txn([Put("ok1", b"")]),
            commits.txn([Put("taken", b"y", expected_revision=taken - 1)]),
            commits.txn([Put("ok2", b"")]),
            return_exceptions=True,
        )
        assert isinstance(results[2], StorageConflict)
        assert all(isinstance(r, int) for i, r in enumerate(results) if i != 2)
        assert await store.get("ok1") is not None and await store.get("ok2") is not None
        entry = await store.get("taken")
        assert entry is not None and entry.value == b"x"

    run(body())


@pytest.mark.parametrize("max_ops", [2, 5])
def test_a_shared_transaction_stays_within_the_limit(max_ops: int) -> None:
    async def body() -> None:
        store = SlowStorage()
        commits = GroupCommit(store, max_ops=max_ops)
        await asyncio.gather(*(commits.txn([Put(f"k{n}", b"v"), GUARD]) for n in range(9)))
        assert max(store.sizes) <= max_ops and len(await store.list_page("k")) == 9

    run(body())
