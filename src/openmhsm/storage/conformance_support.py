"""What the storage conformance checks share: the factory type, assertions that say what failed,
and a store opened and closed around a check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Event, Storage

Factory = Callable[[], Awaitable[Storage]]
Check = Callable[[Factory], Coroutine[Any, Any, None]]

COMPACTION_WRITES = 200
WATCH_TIMEOUT = 5.0  # seconds a watcher may take to deliver an event before the check fails
_FAR = 1_000_000  # a revision offset no check reaches


def _eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def _true(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


async def _conflicts(write: Awaitable[Any], what: str) -> None:
    try:
        await write
    except StorageConflict:
        return
    raise AssertionError(f"{what}: expected StorageConflict")


@asynccontextmanager
async def _opened(make: Factory) -> AsyncIterator[Storage]:
    storage = await make()
    try:
        yield storage
    finally:
        await storage.close()


@asynccontextmanager
async def _watching(storage: Storage, prefix: str, revision: int) -> AsyncIterator[Any]:
    stream = storage.watch_from(prefix, revision)
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _next(stream: AsyncIterator[Event]) -> Event:
    async with asyncio.timeout(WATCH_TIMEOUT):
        return await anext(stream)


async def _keys(storage: Storage, prefix: str) -> list[str]:
    return [entry.key for entry in await storage.list_page(prefix)]
