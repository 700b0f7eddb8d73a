"""Asynchronous replication of a pool's storage to its extended region (DESIGN §8).

The replicator follows the primary's storage watch under the pool prefix and applies every change
to the extended region's storage, copying the sealed bytes verbatim. Both regions use the same pool
name, so a record keeps its path, hence its AAD, and opens in either region: nothing here unseals
anything, and secrets never cross regions in clear.

- Everything under the prefix is replicated except the region-local keys of `LOCAL_PREFIXES`.
- The checkpoint (the newest source revision the target holds) lives in the target at
  `<prefix>region/checkpoint`, written in the same transaction as the changes it covers, so a
  restart resumes at checkpoint + 1: nothing lost, nothing applied twice. A target write reported
  unavailable may still have committed; the next session replays it from the older checkpoint,
  which is harmless because target writes are unconditional puts and deletes replayed in order.
- One source revision (one source transaction) is applied in one target transaction. Revisions
  that queue up share a transaction of at most `batch` operations, the checkpoint included (changes
  to one key collapse into the last). A revision too large for `batch` goes whole in a
  transaction of its own, because splitting it would show readers half a source transaction: the
  target must accept a transaction one operation larger than the source's largest.
- Revisions with nothing to replicate (only region-local keys) advance the applied revision in
  memory and write nothing; the next write's checkpoint covers them.
- No checkpoint, an unreadable one, one ahead of the source (another store), or a compaction gap
  (StorageCompacted) starts a full resync at one source revision (`region/resync.py`), then the
  watch resumes at that revision + 1. While a resync spans several transactions the checkpoint is
  absent, so an interrupted resync is started again rather than resumed.
- StorageUnavailable on either side ends the session; the next one starts after a backoff
  (0.1 s doubling to 5 s, back to 0.1 s after progress) at the applied revision + 1.

A reader task moves watch events into an inbox and the applier takes all it holds at once. This
relies on backends delivering one revision's events back to back, without suspending in between
(etcd sends a revision in one WatchResponse; memory and SQLite yield from a list), so the applier
never takes part of a revision; the reader waits for room only between revisions.

Lag is measured from what the replicator knows already, without a storage round trip: the newest
source revision delivered, the applied one, and when the oldest unapplied revision was delivered.
The time between the source's commit and its watch delivery is not seen (the regions share no
clock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from itertools import groupby
from typing import Final

from openmhsm.errors import StorageUnavailable
from openmhsm.region.resync import differences
from openmhsm.storage.base import Delete, Event, Put, Storage, StorageCompacted, TxnOp

log = logging.getLogger(__name__)

LOCAL_PREFIXES: Final = ("jobs/", "joblog/", "staging/", "scheduler/", "region/")
"""Keys under these (relative to the pool prefix) belong to one region and are never replicated:
job locks and logs, restore staging, the scheduler's lease, and the replicator's own state."""
CHECKPOINT: Final = "region/checkpoint"
CHECKPOINT_FORMAT: Final = 1
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
INBOX_BATCHES: Final = 10  # events the reader may hold ahead of the applier, in batches

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the target is behind the source, as far as the replicator knows."""

    applied_revision: int  # the newest source revision the target holds (0: none yet)
    source_revision: int  # the newest source revision seen (delivered by the watch, or resynced)
    revisions: int  # source_revision - applied_revision
    seconds: float  # how long the oldest unapplied source change has been known (0.0: none)


class Replicator:
    """Keeps `target` a replica of `source` under `prefix` (one pool)."""

    def __init__(
        self,
        source: Storage,
        target: Storage,
        prefix: str,
        *,
        clock: Clock = time.monotonic,
        batch: int = 100,
    ) -> None:
        """`prefix` is the pool's, e.g. "/pool1/"; `batch` the most operations per target
        transaction, the checkpoint included. Raises ValueError for a prefix not ending in "/"
        or a batch under 2. The storages stay the caller's: `close` does not close them."""
        if not prefix.endswith("/"):
            raise ValueError(f"the pool prefix must end with '/': {prefix!r}")
        if batch < 2:
            raise ValueError("batch must leave room for a change and the checkpoint")
        self._source = source
        self._target = target
        self.prefix = prefix
        self._checkpoint_key = prefix + CHECKPOINT
        self._clock = clock
        self._batch = batch
        self._applied: int | None = None  # unknown until the checkpoint is read
        self._seen = 0
        self._unapplied: deque[tuple[int, float]] = deque()  # (revision, when first delivered)
        self._resync_due = False
        self._task: asyncio.Task[None] | None = None

    def replicated(self, key: str) -> bool:
        """Whether the full storage key `key` is one this replicator copies."""
        return key.startswith(self.prefix) and not key[len(self.prefix) :].startswith(
            LOCAL_PREFIXES
        )

    async def run(self) -> None:
        """Replicate until cancelled (or `close`d): resume at the checkpoint, or resync when there
        is none or the source compacted past it, then follow the source's watch and apply. Rides
        out StorageUnavailable on either side with a backoff; other errors propagate."""
        self._task = asyncio.current_task()
        backoff = BACKOFF_FIRST
        try:
            while True:
                before = self._applied
                try:
                    await self._session()
                except StorageCompacted as exc:
                    log.warning("replication fell behind the source's compaction (%s)", exc)
                    self._resync_due = True
                except StorageUnavailable as exc:
                    log.warning("replication paused: %s; retrying in %.1f s", exc, backoff)
                if self._applied != before:
                    backoff = BACKOFF_FIRST
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX)
        finally:
            self._task = None

    async def resync(self) -> int:
        """Make the target's replicated keys equal the source's at the source's current revision
        (deleting those the source lacks) and checkpoint that revision, which it returns. Not to
        be called while `run` is running. Raises StorageCompacted (the snapshot was compacted
        during the copy), StorageUnavailable."""
        self._resync_due = True  # until it completes: an interrupted resync starts over
        revision = await self._source.revision()
        self._saw(revision)
        ops: list[TxnOp] = []
        changes = differences(
            self._source, self._target, self.prefix, revision, self.replicated, self._batch
        )
        async with aclosing(changes):
            async for op in changes:
                ops.append(op)
                if len(ops) + 1 == self._batch:  # a part of the copy: no checkpoint holds
                    await self._target.txn([*ops, Delete(self._checkpoint_key)])
                    ops = []
        await self._target.txn([*ops, Put(self._checkpoint_key, checkpoint_record(revision))])
        self._resync_due = False
        self._applied_through(revision)
        log.info("resynced %s at source revision %d", self.prefix, revision)
        return revision

    def lag(self) -> Lag:
        """The replication lag, from memory (no storage call)."""
        applied = self._applied or 0
        seconds = self._clock() - self._unapplied[0][1] if self._unapplied else 0.0
        return Lag(applied, self._seen, self._seen - applied, max(0.0, seconds))

    async def close(self) -> None:
        """Stop `run` (if it runs) and wait for it to end. Idempotent."""
        task = self._task
        if task is None or task is asyncio.current_task() or task.done():
            return
        task.cancel()
        await asyncio.wait([task])

    async def _session(self) -> None:
        """One connected stretch: settle where to start, then follow until something fails."""
        applied = self._applied
        if applied is None and not self._resync_due:
            applied = await self._load_checkpoint()
        if applied is not None and not self._resync_due:
            newest = await self._source.revision()
            if applied > newest:
                log.warning(
                    "checkpoint %d is ahead of the source (revision %d): another source store",
                    applied,
                    newest,
                )
                applied = None
        if applied is None or self._resync_due:
            applied = await self.resync()
        else:
            self._applied_through(applied)
        log.info("following %s from source revision %d", self.prefix, applied + 1)
        await self._follow(applied + 1)

    async def _load_checkpoint(self) -> int | None:
        entry = await self._target.get(self._checkpoint_key)
        if entry is None:
            return None
        try:
            return parse_checkpoint(entry.value)
        except ValueError as exc:
            log.warning("unreadable replication checkpoint (%s): resyncing", exc)
            return None

    async def _follow(self, revision: int) -> None:
        """Apply the source's changes from `revision` on, until the watch fails or ends."""
        inbox = _Inbox(INBOX_BATCHES * self._batch)
        reader = asyncio.create_task(self._read(revision, inbox))
        try:
            while True:
                items = await inbox.take()
                await self._apply([item for item in items if isinstance(item, Event)])
                last = items[-1]
                if not isinstance(last, Event):
                    raise last
        finally:
            reader.cancel()
            await asyncio.wait([reader])

    async def _read(self, revision: int, inbox: _Inbox) -> None:
        """Move watch events into `inbox`; end with the error that stopped the watch."""
        stream = self._source.watch_from(self.prefix, revision)
        try:
            current = 0
            async for event in stream:
                if event.revision != current:  # a revision boundary: the only place to wait
                    await inbox.room()
                    current = event.revision
                    self._saw(current)
                inbox.put(event)
            inbox.put(StorageUnavailable("the source's watch ended"))
        except Exception as exc:  # raised by the applier once the events before it are applied
            inbox.put(exc)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _apply(self, events: Sequence[Event]) -> None:
        for revision, ops in self._transactions(events):
            if ops:
                checkpoint = Put(self._checkpoint_key, checkpoint_record(revision))
                await self._target.txn([*ops, checkpoint])
            self._applied_through(revision)

    def _transactions(self, events: Sequence[Event]) -> list[tuple[int, list[TxnOp]]]:
        """Target transactions for `events`: each ends on a whole revision, which its checkpoint
        names, and holds at most `batch` operations unless one revision alone needs more."""
        planned: list[tuple[int, list[TxnOp]]] = []
        ops: dict[str, TxnOp] = {}
        last: int | None = None
        for revision, group in groupby(events, key=lambda event: event.revision):
            changes = {e.key: _operation(e) for e in group if self.replicated(e.key)}
            if last is not None and ops and len(ops.keys() | changes.keys()) >= self._batch:
                planned.append((last, list(ops.values())))
                ops = {}
            ops.update(changes)  # a later change to a key replaces the earlier one
            last = revision
        if last is not None:
            planned.append((last, list(ops.values())))
        return planned

    def _saw(self, revision: int) -> None:
        if revision > self._seen:
            self._seen = revision
            self._unapplied.append((revision, self._clock()))

    def _applied_through(self, revision: int) -> None:
        self._applied = revision
        self._seen = max(self._seen, revision)
        while self._unapplied and self._unapplied[0][0] <= revision:
            self._unapplied.popleft()


class _Inbox:
    """Watch events between the reader and the applier; the reader's last item is the error
    that ended its watch."""

    def __init__(self, limit: int) -> None:
        self._items: list[Event | Exception] = []
        self._limit = limit
        self._filled = asyncio.Event()
        self._emptied = asyncio.Event()

    def put(self, item: Event | Exception) -> None:
        self._items.append(item)
        self._filled.set()

    async def room(self) -> None:
        """Wait until the inbox holds fewer than its limit."""
        while len(self._items) >= self._limit:
            self._emptied.clear()
            await self._emptied.wait()

    async def take(self) -> list[Event | Exception]:
        """Everything the inbox holds, waiting for at least one item."""
        while not self._items:
            self._filled.clear()
            await self._filled.wait()
        items, self._items = self._items, []
        self._emptied.set()
        return items


def _operation(event: Event) -> TxnOp:
    """The unconditional target write for one source change (the bytes verbatim)."""
    if event.kind == "put":
        return Put(event.key, event.value)
    return Delete(event.key)


def checkpoint_record(revision: int) -> bytes:
    """The stored checkpoint: plaintext, it names a revision and holds no secret."""
    return json.dumps({"format": CHECKPOINT_FORMAT, "revision": revision}).encode()


def parse_checkpoint(value: bytes) -> int:
    """The source revision a stored checkpoint names. Raises ValueError unless it is a
    well-formed checkpoint of a format we know."""
    try:
        record = json.loads(value)
    except ValueError as exc:  # also UnicodeDecodeError
        raise ValueError("the checkpoint is not JSON") from exc
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unknown checkpoint format: {record!r:.80}")
    revision = record.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise ValueError(f"bad checkpoint revision: {revision!r:.40}")
    return revision
