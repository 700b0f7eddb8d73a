"""In-process storage for unit tests: a sorted dict, a revision counter and a bounded history.

Every method runs to completion without awaiting, so under asyncio each call is atomic by
construction. The change history keeps whole revisions while it holds at most `max_history` events;
`watch_from` a revision older than that raises `StorageCompacted`. Each change also remembers the
entry it replaced, so `snapshot_page` at revision R is the present state with every change after R
undone (each key changed after R takes the entry its first such change replaced); R must be no
older than the history (R >= the last dropped revision), else `StorageCompacted`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import AsyncIterator, Sequence

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

DEFAULT_MAX_HISTORY = 10_000


class MemoryStorage:
    """The `Storage` Protocol in memory. Nothing survives the object."""

    def __init__(self, max_history: int = DEFAULT_MAX_HISTORY) -> None:
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self._max_history = max_history
        self._entries: dict[str, Entry] = {}
        self._keys: list[str] = []  # sorted, for list_page
        self._revision = 0
        self._compacted = 0  # history for revisions <= this is gone
        # (revision, its events, the entry each event replaced: None when the key was absent)
        self._history: deque[tuple[int, tuple[Event, ...], tuple[Entry | None, ...]]] = deque()
        self._history_events = 0
        self._changed = asyncio.Event()  # replaced after each commit: a generation signal
        self._closed = False

    async def get(self, key: str) -> Entry | None:
        """The entry at `key`, or None."""
        self._check_open()
        return self._entries.get(key)

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
        self._check_open()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if start_after is not None and start_after >= prefix:
            index = bisect.bisect_right(self._keys, start_after)
        else:
            index = bisect.bisect_left(self._keys, prefix)
        return self._page(prefix, index, limit)

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` as they were at `revision`, in key order, after
        `start_after`, at most `limit`. Raises StorageCompacted, ValueError."""
        self._check_open()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        check_snapshot_revision(revision, self._revision, self._compacted)
        undone: dict[str, Entry | None] = {}
        for rev, events, previous in reversed(self._history):
            if rev <= revision:
                break
            for event, before in zip(events, previous, strict=True):
                if event.key.startswith(prefix):
                    undone[event.key] = before  # older changes overwrite: the first one wins
        if start_after is not None and start_after >= prefix:
            index = bisect.bisect_right(self._keys, start_after)
        else:
            index = bisect.bisect_left(self._keys, prefix)
        current = self._page(prefix, index, limit + len(undone))
        return snapshot_merge(current, undone, prefix, start_after, limit)

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Apply every operation if every compare holds; return the new revision.

        Raises StorageConflict (nothing applied) on a failed compare, ValueError when a key appears
        twice. A transaction that changes nothing (only deletes of missing keys) keeps the revision.
        """
        self._check_open()
        check_unique_keys(ops)
        for op in ops:
            current = self._entries.get(op.key)
            check_compare(op, current.mod_revision if current is not None else 0)
        revision = self._revision + 1
        events: list[Event] = []
        previous: list[Entry | None] = []
        for op in ops:
            before = self._entries.get(op.key)
            if isinstance(op, Put):
                value = bytes(op.value)
                if op.key not in self._entries:
                    bisect.insort(self._keys, op.key)
                self._entries[op.key] = Entry(op.key, value, revision)
                events.append(Event("put", op.key, value, revision))
                previous.append(before)
            elif op.key in self._entries:
                del self._entries[op.key]
                del self._keys[bisect.bisect_left(self._keys, op.key)]
                events.append(Event("delete", op.key, b"", revision))
                previous.append(before)
        if events:
            self._revision = revision
            self._record(revision, tuple(events), tuple(previous))
        return self._revision

    async def revision(self) -> int:
        """The store's current revision."""
        self._check_open()
        return self._revision

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        """Changes under `prefix` from `revision` on, then live ones; ends when the store closes.

        Raises StorageCompacted (on iteration) for a revision older than the kept history, also
        when a slow consumer falls that far behind.
        """
        return self._watch(prefix, revision)

    async def close(self) -> None:
        """Drop the data and end every watcher. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._entries.clear()
        self._keys.clear()
        self._history.clear()
        self._changed.set()

    async def _watch(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        next_revision = max(revision, 1)
        while not self._closed:
            if next_revision <= self._compacted:
                raise StorageCompacted(
                    f"revision {next_revision} is compacted (history starts after "
                    f"{self._compacted})"
                )
            changed = self._changed
            upto = self._revision
            batch = [e for e in self._events_since(next_revision) if e.key.startswith(prefix)]
            next_revision = max(next_revision, upto + 1)
            for event in batch:
                yield event
            if self._revision < next_revision and not self._closed:
                await changed.wait()

    def _events_since(self, revision: int) -> list[Event]:
        groups: list[tuple[Event, ...]] = []
        for rev, events, _ in reversed(self._history):
            if rev < revision:
                break
            groups.append(events)
        return [event for events in reversed(groups) for event in events]

    def _page(self, prefix: str, index: int, limit: int) -> list[Entry]:
        """Up to `limit` present entries under `prefix` from `self._keys[index]` on."""
        page: list[Entry] = []
        while index < len(self._keys) and len(page) < limit:
            key = self._keys[index]
            if not key.startswith(prefix):
                break
            page.append(self._entries[key])
            index += 1
        return page

    def _record(
        self, revision: int, events: tuple[Event, ...], previous: tuple[Entry | None, ...]
    ) -> None:
        self._history.append((revision, events, previous))
        self._history_events += len(events)
        while self._history_events > self._max_history:
            dropped_revision, dropped, _ = self._history.popleft()
            self._history_events -= len(dropped)
            self._compacted = dropped_revision
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailable("storage is closed")
