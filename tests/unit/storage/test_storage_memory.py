"""MemoryStorage: the conformance suite, plus what is specific to memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from openmhsm.errors import StorageUnavailable
from openmhsm.storage.base import Event, Put, Storage, StorageCompacted
from openmhsm.storage.conformance import CHECKS, Check, check_name
from openmhsm.storage.memory import MemoryStorage


async def make_small() -> Storage:
    return MemoryStorage(max_history=32)


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_memory_conformance(check: Check) -> None:
    asyncio.run(check(make_small))


def test_history_drops_whole_revisions() -> None:
    async def scenario() -> None:
        s = MemoryStorage(max_history=3)
        r1 = await s.put_if("k/0", b"0")
        r2 = await s.txn([Put(f"k/{i}", b"x") for i in range(1, 4)])
        # 4 events > 3: revision r1 goes; r2's three events stay together
        assert [e.key async for e in _take(s.watch_from("k/", r2), 3)] == ["k/1", "k/2", "k/3"]
        with pytest.raises(StorageCompacted):
            await anext(s.watch_from("k/", r1))
        await s.close()

    asyncio.run(scenario())


def test_watch_ends_when_closed() -> None:
    async def scenario() -> None:
        s = MemoryStorage()
        stream = s.watch_from("", 1)
        waiting = asyncio.create_task(anext(stream, None))
        await asyncio.sleep(0)
        await s.close()
        assert await asyncio.wait_for(waiting, 1) is None

    asyncio.run(scenario())


def test_closed_store_is_unavailable() -> None:
    async def scenario() -> None:
        s = MemoryStorage()
        await s.close()
        with pytest.raises(StorageUnavailable):
            await s.get("k")
        with pytest.raises(StorageUnavailable):
            await s.put_if("k", b"v")

    asyncio.run(scenario())


def test_bad_arguments() -> None:
    async def scenario() -> None:
        s = MemoryStorage()
        with pytest.raises(ValueError, match="once"):
            await s.txn([Put("k", b"1"), Put("k", b"2")])
        with pytest.raises(ValueError, match="limit"):
            await s.list_page("", limit=0)
        assert await s.revision() == 0
        await s.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        MemoryStorage(max_history=0)


async def _take(stream: AsyncIterator[Event], n: int) -> AsyncIterator[Event]:
    generator = cast(AsyncGenerator[Event, None], stream)
    for _ in range(n):
        yield await anext(generator)
    await generator.aclose()
