"""The full-restore fence: a record that exists while a full restore replaces the pool's contents
(`backup/full_restore.py`). Every write of the pool's services carries the check that it is
absent, so a write commits before the restore takes over or not at all."""

from __future__ import annotations

from collections.abc import Sequence

from openmhsm.errors import ServiceUnavailable, StorageConflict
from openmhsm.storage.base import Delete, Storage, TxnOp

FENCE = "jobs/fence"
GUARD = Delete(FENCE, 0)


async def raise_if_fenced(storage: Storage) -> None:
    """Raise ServiceUnavailable while a full restore holds the fence."""
    if await storage.get(FENCE) is not None:
        raise ServiceUnavailable(
            "The pool is being restored from a full backup; try again when it completes.",
            inner_code="RestoreInProgress",
        )


async def guarded_txn(storage: Storage, ops: Sequence[TxnOp]) -> int:
    """Commit `ops` unless the fence is up. Raises ServiceUnavailable (fenced), StorageConflict."""
    try:
        return await storage.txn([*ops, GUARD])
    except StorageConflict:
        await raise_if_fenced(storage)
        raise
