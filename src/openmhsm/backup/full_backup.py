"""Writing a full backup: every record of the pool as it was at one storage revision, read page by
page while writes go on, packed into sealed files, then the manifest (DESIGN §7)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from openmhsm.backup import format as fmt
from openmhsm.backup.targets import BackupTarget
from openmhsm.storage.base import Storage

# What a backup holds, in key order: keys and their versions, deleted keys, principals, roles
# and assignments, settings. Not `meta/` (the domain's own state) nor jobs.
BACKED_UP = ("deleted/", "keys/", "principals/", "rbac/", "settings/")
PAGE = 500

Progress = Callable[[int], Awaitable[None]]


async def write_backup(
    view: Storage,
    target: BackupTarget,
    folder: str,
    *,
    pool: str,
    domain_id: str,
    keys: fmt.BackupKeys,
    backup_id: str,
    on_progress: Progress,
) -> fmt.Manifest:
    """Write the backup into `folder` of `target`; return its manifest. Raises TargetError,
    StorageCompacted (the snapshot's revision was compacted away mid-backup)."""
    revision = await view.revision()
    writer = fmt.ChunkWriter(keys, backup_id)
    counts: dict[str, int] = {}
    done = 0
    for prefix in BACKED_UP:
        start: str | None = None
        while True:
            page = await view.snapshot_page(prefix, revision, start, PAGE)
            for entry in page:
                full = writer.add(entry.key, entry.value)
                if full is not None:
                    await target.write(folder, *full)
                    await on_progress(done)
                done += 1
            counts[prefix.rstrip("/")] = counts.get(prefix.rstrip("/"), 0) + len(page)
            if len(page) < PAGE:
                break
            start = page[-1].key
    last = writer.finish()
    if last is not None:
        await target.write(folder, *last)
    manifest = fmt.Manifest(
        backup_id=backup_id,
        pool=pool,
        domain_id=domain_id,
        revision=revision,
        created=int(time.time()),
        counts=counts,
        files=tuple(writer.files),
    )
    await target.write(folder, fmt.MANIFEST, fmt.dump_manifest(keys, manifest))
    await on_progress(done)
    return manifest


async def read_manifest(
    target: BackupTarget, folder: str, keys: fmt.BackupKeys, domain_id: str
) -> fmt.Manifest:
    """The verified manifest of a backup folder. Raises TargetError, DomainMismatch,
    BackupInvalid."""
    data = await target.read(folder, fmt.MANIFEST, fmt.MAX_MANIFEST)
    return fmt.load_manifest(keys, data, domain_id)
