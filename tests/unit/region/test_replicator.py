"""The replicator on memory storage: byte-exact copies, region-local keys, one target transaction
per source revision, checkpointed restarts, resync after a compaction gap, and lag."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from openmhsm.errors import StorageUnavailable
from openmhsm.region.replicator import (
    CHECKPOINT,
    LOCAL_PREFIXES,
    Lag,
    Replicator,
    checkpoint_record,
    parse_checkpoint,
)
from openmhsm.storage.base import Delete, Entry, Put, StorageCompacted, TxnOp
from openmhsm.storage.memory import MemoryStorage

PREFIX = "/pool1/"
CHECKPOINT_KEY = PREFIX + CHECKPOINT


class Target(MemoryStorage):
    """Memory storage that records each transaction, and can hold (`gate`) or fail them
    (`outcomes`: False fails the next transaction, True lets it through; then all pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.txns: list[list[TxnOp]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.outcomes: list[bool] = []

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        await self.gate.wait()
        if self.outcomes and not self.outcomes.pop(0):
            raise StorageUnavailable("the target is down (test)")
        self.txns.append(list(ops))
        return await super().txn(ops)


class Source(MemoryStorage):
    """Memory storage that counts snapshots read from their first page (one per resync)."""

    snapshots = 0

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        self.snapshots += start_after is None
        return await super().snapshot_page(prefix, revision, start_after, limit)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def sealed() -> bytes:
    """Stands in for a sealed record: bytes that must arrive exactly."""
    return b"\x01" + os.urandom(40)


async def until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.001)
    assert done(), what


async def settle(replicator: Replicator, revision: int) -> None:
    """Wait until the replicator has applied source revision `revision`."""
    await until(lambda: replicator.lag().applied_revision >= revision, f"applied {revision}")


@asynccontextmanager
async def running(replicator: Replicator) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(replicator.run())
    try:
        yield task
    finally:
        await replicator.close()
        assert task.cancelled()


async def replicated(store: MemoryStorage) -> dict[str, bytes]:
    """The store's replicated keys under the pool prefix and their bytes."""
    entries = await store.list_page(PREFIX, limit=10_000)
    keys = [e for e in entries if not e.key[len(PREFIX) :].startswith(LOCAL_PREFIXES)]
    return {e.key: e.value for e in keys}


async def checkpoint(target: MemoryStorage) -> int | None:
    entry = await target.get(CHECKPOINT_KEY)
    return parse_checkpoint(entry.value) if entry is not None else None


def test_changes_replicate_byte_exact() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(), Target()
        replicator = Replicator(source, target, PREFIX)
        first = await source.put_if(PREFIX + "keys/a/1", sealed())
        async with running(replicator):
            await settle(replicator, first)  # copied by the first resync
            await source.put_if(PREFIX + "keys/a/1", sealed())
            await source.txn(
                [
                    Put(PREFIX + "keys/b/1", sealed()),
                    Put(PREFIX + "rbac/assignments/x", sealed()),
                    Put("/pool2/keys/c/1", b"another pool"),
                ]
            )
            await source.put_if(PREFIX + "keys/empty", b"")
            await source.delete_if(PREFIX + "keys/a/1")
            last = await source.txn(
                [Put(PREFIX + "meta/domain", b'{"plaintext": 1}'), Delete(PREFIX + "keys/b/1")]
            )
            await settle(replicator, last)
        copied = await replicated(target)
        assert copied == await replicated(source)
        assert sorted(copied) == [
            PREFIX + "keys/empty",
            PREFIX + "meta/domain",
            PREFIX + "rbac/assignments/x",
        ]
        assert await target.get("/pool2/keys/c/1") is None
        assert await checkpoint(target) == last

    run(scenario)


def test_one_source_revision_is_one_target_transaction() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(), Target()
        replicator = Replicator(source, target, PREFIX)
        start = await source.put_if(PREFIX + "keys/c", sealed())
        async with running(replicator):
            await settle(replicator, start)
            target.txns.clear()
            a, b = sealed(), sealed()
            revision = await source.txn(
                [
                    Put(PREFIX + "keys/a", a),
                    Put(PREFIX + "jobs/active", b"lock"),
                    Put(PREFIX + "keys/b", b),
                    Delete(PREFIX + "keys/c"),
                ]
            )
            await settle(replicator, revision)
        assert target.txns == [
            [
                Put(PREFIX + "keys/a", a),
                Put(PREFIX + "keys/b", b),
                Delete(PREFIX + "keys/c"),
                Put(CHECKPOINT_KEY, checkpoint_record(revision)),
            ]
        ]

    run(scenario)


def test_queued_revisions_share_transactions_up_to_batch() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(), Target()
        replicator = Replicator(source, target, PREFIX, batch=4)
        await replicator.resync()
        target.txns.clear()
        k = [PREFIX + f"keys/{i}" for i in range(9)]
        v = [sealed() for _ in range(9)]
        await source.put_if(k[1], b"first")
        await source.txn([Put(k[2], v[2]), Put(k[3], v[3])])
        await source.put_if(k[1], v[1])  # collapses into the earlier change to k1
        local = await source.put_if(PREFIX + "scheduler/leader", b"lease")
        big = await source.txn([Put(k[i], v[i]) for i in range(4, 9)])  # 5 ops > batch
        last = await source.delete_if(k[2])
        async with running(replicator):
            await settle(replicator, last)
        assert target.txns == [
            [Put(k[1], v[1]), Put(k[2], v[2]), Put(k[3], v[3]), checkpoint_put(local)],
            [*(Put(k[i], v[i]) for i in range(4, 9)), checkpoint_put(big)],  # whole, alone
            [Delete(k[2]), checkpoint_put(last)],
        ]
        assert await replicated(target) == await replicated(source)

    run(scenario)


def checkpoint_put(revision: int) -> Put:
    return Put(CHECKPOINT_KEY, checkpoint_record(revision))


def test_region_local_keys_are_not_replicated() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(), Target()
        theirs = {PREFIX + p + "x": b"source " + p.encode() for p in LOCAL_PREFIXES}
        ours = {PREFIX + p + "x": b"target " + p.encode() for p in LOCAL_PREFIXES}
        ours[CHECKPOINT_KEY] = checkpoint_record(0)  # not a resync yet: follow from revision 1
        await target.txn([Put(key, value) for key, value in ours.items()])
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await source.txn([Put(key, value) for key, value in theirs.items()])
            kept = await source.put_if(PREFIX + "keys/k", b"kept")
            await settle(replicator, kept)
            for key in theirs:  # and a later change of each, alone in its revision
                last = await source.put_if(key, b"again")
            await settle(replicator, last)
        assert target.txns[-1] == [Put(PREFIX + "keys/k", b"kept"), checkpoint_put(kept)]
        await replicator.resync()  # a resync neither copies nor deletes them either
        for key, value in ours.items():
            if key != CHECKPOINT_KEY:
                assert (await target.get(key) or Entry(key, b"", 0)).value == value
        assert await replicated(target) == {PREFIX + "keys/k": b"kept"}

    run(scenario)


def test_restart_resumes_from_the_checkpoint() -> None:
    async def scenario() -> None:
        source, target = Source(), Target()
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            for i in range(5):
                last = await source.put_if(PREFIX + f"keys/{i}", sealed())
            await settle(replicator, last)
        assert await checkpoint(target) == last
        stopped_at = last
        target.txns.clear()
        await source.put_if(PREFIX + "keys/0", sealed())  # while no replicator runs
        await source.delete_if(PREFIX + "keys/1")
        target.gate.clear()  # the next replicator is killed with its write in flight
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await until(lambda: replicator.lag().source_revision > stopped_at, "delivered")
        assert await checkpoint(target) == stopped_at and target.txns == []
        target.gate.set()
        last = await source.put_if(PREFIX + "keys/5", sealed())
        snapshots = source.snapshots
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await settle(replicator, last)
        assert source.snapshots == snapshots  # resumed, no resync
        assert [sorted(op.key for op in txn) for txn in target.txns] == [
            [PREFIX + "keys/0", PREFIX + "keys/1", PREFIX + "keys/5", CHECKPOINT_KEY]
        ]  # exactly the changes after the checkpoint, once
        assert await replicated(target) == await replicated(source)

    run(scenario)


def test_compaction_gap_triggers_a_resync() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(max_history=8), Target()
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            for i in range(5):
                last = await source.put_if(PREFIX + f"keys/{i}", sealed())
            await settle(replicator, last)
        stopped_at = last
        await target.put_if(PREFIX + "keys/stray", b"only in the target")
        await source.delete_if(PREFIX + "keys/0")
        for i in range(30):
            last = await source.put_if(PREFIX + f"keys/{i % 3 + 10}", sealed())
        with pytest.raises(StorageCompacted):
            await anext(source.watch_from(PREFIX, stopped_at + 1))
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await settle(replicator, last)
            revision = await source.put_if(PREFIX + "keys/after", sealed())  # then follows
            await settle(replicator, revision)
        copied = await replicated(target)
        assert copied == await replicated(source)
        assert PREFIX + "keys/stray" not in copied and PREFIX + "keys/0" not in copied
        assert await checkpoint(target) == revision

    run(scenario)


def test_resync_copies_one_revision_and_deletes_what_the_source_lacks() -> None:
    async def scenario() -> None:
        source, target = Source(), Target()
        same = sealed()
        for name in ("b", "d", "e", "f", "h", "i", "j"):
            await source.put_if(PREFIX + f"keys/{name}", sealed())
        await source.put_if(PREFIX + "keys/same", same)
        await source.put_if(PREFIX + "jobs/j1", b"source job")
        stale = {PREFIX + f"keys/{n}": b"stale" for n in ("a", "d", "g", "z", "e")}
        await target.txn(
            [
                *(Put(key, value) for key, value in stale.items()),
                Put(PREFIX + "keys/same", same),
                Put(PREFIX + "jobs/j2", b"target job"),
                Put("/pool10/keys/x", b"another pool"),
            ]
        )
        target.txns.clear()
        replicator = Replicator(source, target, PREFIX, batch=3)
        revision = await replicator.resync()
        assert revision == await source.revision()
        assert await replicated(target) == await replicated(source)
        assert await target.get(PREFIX + "jobs/j1") is None
        assert (await target.get(PREFIX + "jobs/j2") or Entry("", b"", 0)).value == b"target job"
        assert await target.get("/pool10/keys/x") is not None
        assert all(len(txn) <= 3 for txn in target.txns)
        assert all(txn[-1] == Delete(CHECKPOINT_KEY) for txn in target.txns[:-1])
        assert target.txns[-1][-1] == checkpoint_put(revision)
        written = [op.key for txn in target.txns for op in txn[:-1]]
        assert PREFIX + "keys/same" not in written  # equal bytes are left alone
        assert len(written) == len(set(written)) == 7 + 3  # 7 puts (d, e stale), 3 deletes
        assert replicator.lag() == Lag(revision, revision, 0, 0.0)

    run(scenario)


def test_an_interrupted_resync_starts_over() -> None:
    async def scenario() -> None:
        source, target = Source(), Target()
        replicator = Replicator(source, target, PREFIX, batch=3)
        async with running(replicator):  # it follows, then stops
            revision = await source.put_if(PREFIX + "keys/first", sealed())
            await settle(replicator, revision)
        for i in range(6):
            revision = await source.put_if(PREFIX + f"keys/{i}", sealed())
        target.outcomes = [True, False]  # the copy's second transaction fails
        with pytest.raises(StorageUnavailable):
            await replicator.resync()
        assert await checkpoint(target) is None  # a part copied: no checkpoint holds
        assert len(await replicated(target)) == 3
        async with running(replicator):
            await settle(replicator, revision)
        assert source.snapshots == 3  # the first start's, the interrupted one, again
        assert await replicated(target) == await replicated(source)
        assert await checkpoint(target) == revision

    run(scenario)


def test_lag_follows_what_is_delivered_and_applied() -> None:
    async def scenario() -> None:
        clock = Clock()
        source, target = MemoryStorage(), Target()
        replicator = Replicator(source, target, PREFIX, clock=clock)
        assert replicator.lag() == Lag(0, 0, 0, 0.0)
        await source.put_if("/other/k", b"x")  # another prefix: never delivered, never lag
        r0 = await source.put_if(PREFIX + "keys/0", sealed())
        async with running(replicator):
            await settle(replicator, r0)
            assert replicator.lag() == Lag(r0, r0, 0, 0.0)
            target.gate.clear()  # the target stalls
            r1 = await source.put_if(PREFIX + "keys/1", sealed())
            await until(lambda: replicator.lag().source_revision == r1, "r1 delivered")
            clock.t += 2.5
            assert replicator.lag() == Lag(r0, r1, r1 - r0, 2.5)
            r2 = await source.put_if(PREFIX + "keys/2", sealed())
            await until(lambda: replicator.lag().source_revision == r2, "r2 delivered")
            clock.t += 1.0
            assert replicator.lag() == Lag(r0, r2, r2 - r0, 3.5)  # since the oldest
            target.gate.set()
            await settle(replicator, r2)
            assert replicator.lag() == Lag(r2, r2, 0, 0.0)
            r3 = await source.put_if(PREFIX + "joblog/1", b"local")  # nothing to write
            await settle(replicator, r3)
            assert replicator.lag() == Lag(r3, r3, 0, 0.0)
        assert await checkpoint(target) == r2

    run(scenario)


def test_an_unavailable_target_is_retried() -> None:
    async def scenario() -> None:
        source, target = MemoryStorage(), Target()
        replicator = Replicator(source, target, PREFIX)
        r0 = await source.put_if(PREFIX + "keys/0", sealed())
        async with running(replicator):
            await settle(replicator, r0)
            target.outcomes = [False, False]  # two sessions end; the third applies
            revision = await source.put_if(PREFIX + "keys/k", sealed())
            await settle(replicator, revision)
        assert target.outcomes == []
        assert await replicated(target) == await replicated(source)

    run(scenario)


@pytest.mark.parametrize(
    "stored",
    [b"", b"\xff", b"not json", b"[1]", b'{"format": 2, "revision": 1}'],
    ids=["empty", "not-utf8", "not-json", "not-object", "unknown-format"],
)
def test_an_unreadable_checkpoint_means_a_resync(stored: bytes) -> None:
    with pytest.raises(ValueError):
        parse_checkpoint(stored)

    async def scenario() -> None:
        source, target = Source(), Target()
        revision = await source.put_if(PREFIX + "keys/k", sealed())
        await target.put_if(CHECKPOINT_KEY, stored)
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await settle(replicator, revision)
        assert source.snapshots == 1
        assert await checkpoint(target) == revision

    run(scenario)


def test_a_checkpoint_ahead_of_the_source_means_a_resync() -> None:
    async def scenario() -> None:
        source, target = Source(), Target()
        revision = await source.put_if(PREFIX + "keys/k", sealed())
        await target.put_if(CHECKPOINT_KEY, checkpoint_record(revision + 50))
        replicator = Replicator(source, target, PREFIX)
        async with running(replicator):
            await until(lambda: source.snapshots == 1, "resynced")
            await settle(replicator, revision)
        assert await checkpoint(target) == revision
        assert await replicated(target) == await replicated(source)

    run(scenario)


def test_checkpoint_record_round_trips() -> None:
    assert parse_checkpoint(checkpoint_record(0)) == 0
    assert parse_checkpoint(checkpoint_record(123456789)) == 123456789
    for revision in (b"-1", b"true", b'"7"', b"1.5"):
        with pytest.raises(ValueError, match="revision"):
            parse_checkpoint(b'{"format": 1, "revision": ' + revision + b"}")


def test_arguments_and_close() -> None:
    with pytest.raises(ValueError, match="end with '/'"):
        Replicator(MemoryStorage(), MemoryStorage(), "/pool1")
    with pytest.raises(ValueError, match="batch"):
        Replicator(MemoryStorage(), MemoryStorage(), PREFIX, batch=1)

    async def scenario() -> None:
        source, target = MemoryStorage(), MemoryStorage()
        replicator = Replicator(source, target, PREFIX)
        await replicator.close()  # never ran
        task = asyncio.create_task(replicator.run())
        await asyncio.sleep(0.01)
        await replicator.close()
        await replicator.close()
        assert task.cancelled()
        assert await target.revision() == 1  # the first resync's checkpoint, then nothing
        assert await source.revision() == 0  # the source is only read

    run(scenario)
