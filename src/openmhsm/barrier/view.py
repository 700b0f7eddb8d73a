"""A prefix-scoped, plaintext view of storage: how services see it.

Keys are relative to the view's prefix (`/pool1/` + `keys/k1/abc`). Values are sealed by the
barrier on the way in and opened on the way out, with the full storage path as AAD, so storage
only ever holds sealed records. Keys under `meta/` and `region/` are the exception: plaintext
domain metadata (DESIGN §4) that must be readable before the domain keys are known, and the
region link and replication checkpoint (DESIGN §8), which name URLs and revisions, no secret, and
are written by the supervisor and the replicator without the barrier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from openmhsm.barrier.barrier import Barrier
from openmhsm.storage.base import Delete, Entry, Event, Put, Storage, TxnOp

PLAINTEXT_PREFIXES = ("meta/", "region/")


class BarrierView:
    """The `Storage` Protocol over plaintext values, relative keys and one prefix.

    Reads raise `SealError` for a record that fails to open (tampered, moved, unknown term).
    """

    def __init__(self, storage: Storage, barrier: Barrier, prefix: str) -> None:
        """Raises ValueError unless `prefix` is empty or ends with "/" (so `/pool1/` never
        overlaps `/pool10/`)."""
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"view prefix must end with '/': {prefix!r}")
        self._storage = storage
        self._barrier = barrier
        self.prefix = prefix
        # The revision of the newest write through this view that touched a key outside
        # `local_prefixes`: what an extended region must have replicated to show that write.
        self.last_write = 0
        self.local_prefixes: tuple[str, ...] = ()

    @property
    def storage(self) -> Storage:
        """The storage under the view (raw, sealed records)."""
        return self._storage

    def use_barrier(self, barrier: Barrier) -> None:
        """Seal and open with `barrier` from now on (the pool took on another security domain;
        its records were re-sealed under the new keys in one transaction)."""
        self._barrier = barrier

    async def get(self, key: str) -> Entry | None:
        """The opened entry at `key`, or None. Raises SealError."""
        entry = await self._storage.get(self.prefix + key)
        return self._opened(entry) if entry is not None else None

    async def put_if(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        """Seal and write `value` at `key`; return the new revision. Raises StorageConflict."""
        revision = await self._storage.put_if(
            self.prefix + key, self._seal(key, value), expected_revision
        )
        return self._wrote((key,), revision)

    async def delete_if(self, key: str, expected_revision: int | None = None) -> int:
        """Remove `key`; return the store revision. Raises StorageConflict."""
        revision = await self._storage.delete_if(self.prefix + key, expected_revision)
        return self._wrote((key,), revision)

    async def list_page(
        self, prefix: str, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Opened entries under `prefix` in key order, with relative keys. Raises SealError."""
        after = self.prefix + start_after if start_after is not None else None
        page = await self._storage.list_page(self.prefix + prefix, after, limit)
        return [self._opened(entry) for entry in page]

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Opened entries under `prefix` as they were at store revision `revision`, with
        relative keys. Raises SealError, StorageCompacted."""
        after = self.prefix + start_after if start_after is not None else None
        page = await self._storage.snapshot_page(self.prefix + prefix, revision, after, limit)
        return [self._opened(entry) for entry in page]

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Seal every put and apply the transaction atomically. Raises StorageConflict."""
        revision = await self._storage.txn([self._scoped(op) for op in ops])
        return self._wrote((op.key for op in ops), revision)

    def _wrote(self, keys: Iterable[str], revision: int) -> int:
        if any(not key.startswith(self.local_prefixes) for key in keys):
            self.last_write = max(self.last_write, revision)
        return revision

    async def revision(self) -> int:
        """The underlying store's current revision."""
        return await self._storage.revision()

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        """Opened changes under `prefix` from `revision` on, with relative keys. Raises
        SealError and StorageCompacted (on iteration)."""
        return self._watch(prefix, revision)

    async def close(self) -> None:
        """Nothing to release: the underlying storage belongs to whoever opened it."""

    async def _watch(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        stream = self._storage.watch_from(self.prefix + prefix, revision)
        try:
            async for event in stream:
                key = self._relative(event.key)
                value = self._open(key, event.value) if event.kind == "put" else b""
                yield Event(event.kind, key, value, event.revision)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _scoped(self, op: TxnOp) -> TxnOp:
        if isinstance(op, Put):
            return Put(self.prefix + op.key, self._seal(op.key, op.value), op.expected_revision)
        return Delete(self.prefix + op.key, op.expected_revision)

    def _opened(self, entry: Entry) -> Entry:
        key = self._relative(entry.key)
        return Entry(key, self._open(key, entry.value), entry.mod_revision)

    def _seal(self, key: str, value: bytes) -> bytes:
        if key.startswith(PLAINTEXT_PREFIXES):
            return value
        return self._barrier.seal(self.prefix + key, value)

    def _open(self, key: str, value: bytes) -> bytes:
        if key.startswith(PLAINTEXT_PREFIXES):
            return value
        return self._barrier.open(self.prefix + key, value)

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]
