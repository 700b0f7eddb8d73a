"""Full restore: the pool's contents replaced by a backup's, all or nothing (DESIGN §7).

Two phases, so that a partition dying at any moment leaves the old state or the new one, never a
mix. The fence is up for both (the pool refuses data-plane calls and every write):
1. Staging: each file of the backup is checked and its records written under `staging/<job>/`.
   A failure, or the partition dying here, rolls back: the staging is dropped, the pool unchanged.
2. Applying: one transaction moves the lock to `applying`; from then on the restore only rolls
   forward. Live records the backup lacks are deleted and the staged ones put in place, batch by
   batch, each batch renewing the lock; should the partition die, another takes the job over and
   applies again (applying is idempotent). The transaction that ends the job lowers the fence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from openmhsm.backup import format as fmt
from openmhsm.backup.full_backup import BACKED_UP, Progress
from openmhsm.backup.jobs import APPLYING, LockHolder
from openmhsm.backup.targets import BackupTarget
from openmhsm.storage.base import Delete, Entry, Put, Storage, TxnOp

STAGING = "staging/"
BATCH = 100  # operations per transaction, with the lock's two: under etcd's default of 128
PAGE = 500


def staging_prefix(job_id: str) -> str:
    return f"{STAGING}{job_id}/"


async def pages(view: Storage, prefix: str) -> AsyncIterator[list[Entry]]:
    start: str | None = None
    while True:
        page = await view.list_page(prefix, start_after=start, limit=PAGE)
        if page:
            yield page
        if len(page) < PAGE:
            return
        start = page[-1].key


async def stage(
    holder: LockHolder,
    target: BackupTarget,
    folder: str,
    manifest: fmt.Manifest,
    keys: fmt.BackupKeys,
    extra: Sequence[tuple[str, bytes]],
    on_progress: Progress,
) -> None:
    """Check every file of the backup and stage its records, then `extra` (kept over the
    backup's). Raises TargetError, BackupInvalid, LockLost."""
    prefix = staging_prefix(holder.held.job)
    ops: list[TxnOp] = []
    done = 0
    for entry in manifest.files:
        data = await target.read(folder, entry.name, fmt.MAX_FILE)
        for key, value in fmt.open_file(keys, manifest, entry, data):
            if not key.startswith(BACKED_UP):
                raise fmt.BackupInvalid(f"Backup file {entry.name} holds an unknown record.")
            ops.append(Put(prefix + key, value))
            if len(ops) >= BATCH:
                await holder.beat(extra=ops)
                ops = []
        done += entry.records
        await on_progress(done)
    if ops:
        await holder.beat(extra=ops)
    if extra:  # a transaction of its own: the same key may be staged from the backup already
        await holder.beat(extra=[Put(prefix + key, value) for key, value in extra])


async def apply(view: Storage, holder: LockHolder, on_progress: Progress) -> None:
    """Make the live records exactly the staged ones: put every staged record, then delete the
    live ones the backup lacks (so the pool is never without the restorer's role assignment,
    which is staged). Idempotent. Raises LockLost."""
    prefix = staging_prefix(holder.held.job)
    await holder.beat(phase=APPLYING)
    staged: set[str] = set()
    ops: list[TxnOp] = []
    async for page in pages(view, prefix):
        keys = [entry.key[len(prefix) :] for entry in page]
        staged.update(keys)
        ops += [Put(key, entry.value) for key, entry in zip(keys, page, strict=True)]
        ops = await _flush_full(holder, ops)
        await on_progress(len(staged))
    for live in BACKED_UP:
        async for page in pages(view, live):
            ops += [Delete(entry.key) for entry in page if entry.key not in staged]
            ops = await _flush_full(holder, ops)
    if ops:
        await holder.beat(extra=ops)


async def _flush_full(holder: LockHolder, ops: list[TxnOp]) -> list[TxnOp]:
    while len(ops) >= BATCH:
        await holder.beat(extra=ops[:BATCH])
        ops = ops[BATCH:]
    return ops


async def drop_staging(view: Storage, job_id: str, holder: LockHolder | None = None) -> None:
    """Remove a job's staged records; with `holder`, every other job's too (what a crashed
    rollback left), each batch under the lock, so a job that lost its lock deletes nothing."""
    prefix = STAGING if holder is not None else staging_prefix(job_id)
    start: str | None = None
    while True:
        page = await view.list_page(prefix, start_after=start, limit=BATCH)
        if not page:
            return
        deletes: list[TxnOp] = [Delete(entry.key) for entry in page]
        if holder is not None:
            await holder.beat(extra=deletes)
        else:
            await view.txn(deletes)
        start = page[-1].key
