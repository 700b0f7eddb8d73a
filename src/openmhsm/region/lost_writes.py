"""What an old primary committed that its extended region never replicated (DESIGN §8).

When the extended region was promoted it had applied the primary's storage up to one revision;
whatever the old primary committed after that, under replicated keys, is lost to the pool once
the old primary rejoins and resyncs from the new one. Those writes were committed, and most were
acknowledged to a client (a commit is acknowledged unless the partition died in between), so
they are reported: how many storage transactions, and which keys, principals, role assignments
and settings they touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Final

from openmhsm.storage.base import Event, Storage, StorageCompacted

log = logging.getLogger(__name__)

MAX_NAMES: Final = 1000
FIRST_EVENT: Final = 10.0  # history is already committed: it comes at once
TAIL: Final = 0.5  # after the newest revision, for the rest of its transaction's events


def describe(relative: str) -> str:
    """The name a report shows for the record at `relative` (a key's versions and its policy
    are one key: `keys/<name>`)."""
    parts = relative.split("/")
    if parts[0] in ("keys", "deleted") and len(parts) > 1:
        return f"{parts[0]}/{parts[1]}"
    return relative


async def unreplicated(
    storage: Storage, prefix: str, after: int, replicated: Callable[[str], bool]
) -> dict[str, Any]:
    """The writes `storage` committed under `prefix` after revision `after` to keys that
    `replicated` copies: {"count": transactions, "names": [...], "from_revision": after}. When
    the history is compacted past `after`, the names come from the records' revisions and the
    count is None (unknown). Raises StorageUnavailable."""
    current = await storage.revision()
    report: dict[str, Any] = {
        "count": 0,
        "names": [],
        "from_revision": after,
        "to_revision": current,
    }
    if current <= after:
        return report
    revisions: set[int] = set()
    names: set[str] = set()
    try:
        async with aclosing(_history(storage, prefix, after + 1, current)) as events:
            async for event in events:
                if replicated(event.key):
                    revisions.add(event.revision)
                    names.add(describe(event.key[len(prefix) :]))
    except StorageCompacted:
        log.warning("history before revision %d is compacted: counting records instead", after)
        changed = await _changed_since(storage, prefix, after, replicated)
        return {**report, "count": None, "names": changed}
    return {**report, "count": len(revisions), "names": sorted(names)[:MAX_NAMES]}


async def _history(
    storage: Storage, prefix: str, start: int, current: int
) -> AsyncGenerator[Event, None]:
    """Events from `start` through `current` (and no later), ending when none come in time."""
    stream = storage.watch_from(prefix, start)
    iterator = aiter(stream)
    reached = False
    try:
        while True:
            try:
                event = await asyncio.wait_for(anext(iterator), TAIL if reached else FIRST_EVENT)
            except (TimeoutError, StopAsyncIteration):
                return
            if event.revision > current:
                return
            reached = event.revision == current
            yield event
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _changed_since(
    storage: Storage, prefix: str, after: int, replicated: Callable[[str], bool]
) -> list[str]:
    """Names of live records modified after `after` (deletions leave no trace here)."""
    names: set[str] = set()
    start: str | None = None
    while True:
        page = await storage.list_page(prefix, start)
        if not page:
            break
        for entry in page:
            if entry.mod_revision > after and replicated(entry.key):
                names.add(describe(entry.key[len(prefix) :]))
        start = page[-1].key
    return sorted(names)[:MAX_NAMES]
