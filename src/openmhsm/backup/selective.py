"""Selective key restore: one key, with all its versions and its rotation policy, from a full
backup. The key's records become the backup's in one transaction that compares on every record's
revision; a key soft-deleted under that name must be recovered or purged first."""

from __future__ import annotations

from typing import Any

from openmhsm.backup import format as fmt
from openmhsm.backup.targets import BackupTarget
from openmhsm.errors import Conflict, KeyNotFound
from openmhsm.services import records, validation
from openmhsm.services.key_cache import Attempt, KeyCache
from openmhsm.storage.base import Delete, Put, TxnOp

MAX_OPS = 1000  # under etcd's --max-txn-ops as the pool runs it (cluster/etcd_cluster.py)


async def restore_key(
    cache: KeyCache,
    target: BackupTarget,
    folder: str,
    manifest: fmt.Manifest,
    keys: fmt.BackupKeys,
    name: str,
) -> int:
    """Bring key `name` back as the backup holds it; return how many versions it has.
    Raises KeyNotFound (not in the backup), Conflict, TargetError, BackupInvalid."""
    name = validation.check_name(name)
    prefix = records.key_prefix(name)
    found: list[tuple[str, bytes]] = []
    for entry in manifest.files_for(prefix):
        data = await target.read(folder, entry.name, fmt.MAX_FILE)
        found += [
            (k, v) for k, v in fmt.open_file(keys, manifest, entry, data) if k.startswith(prefix)
        ]
    if not any(path == records.current_path(name) for path, _ in found):
        raise KeyNotFound(f"The backup holds no key named '{name}'.")
    wanted = {path for path, _ in found}
    versions = sum(1 for path in wanted if not path.rsplit("/", 1)[1].startswith("@"))

    async def attempt() -> Attempt[int]:
        """Against the key as the cache holds it: every write compares on its revision, so a
        version made meanwhile is seen (the write is built again), never left beside these."""
        if cache.get(records.deleted_path(name)) is not None:
            raise Conflict(
                f"Key '{name}' is deleted; recover or purge it before restoring it from a backup.",
                inner_code="KeyDeleted",
            )
        changes: list[tuple[TxnOp, Any]] = [
            (Delete(path, cache.revision_of(path)), None)
            for path in sorted(cache.paths_of(name))
            if path not in wanted
        ]
        changes += [(Put(path, value, cache.revision_of(path)), None) for path, value in found]
        changes.append((Delete(records.deleted_path(name), 0), None))
        if len(changes) > MAX_OPS:
            raise Conflict(f"Key '{name}' has too many versions to restore in one transaction.")
        return changes, versions

    await cache.read_through(name)
    return await cache.write(name, attempt)
