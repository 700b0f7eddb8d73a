"""Soft-delete, recover and purge of keys (no HTTP here)."""

from __future__ import annotations

from openmhsm.config import DeletionPolicy
from openmhsm.errors import Conflict, Forbidden, KeyNotFound, StorageConflict
from openmhsm.services import records, validation
from openmhsm.services.key_cache import Attempt, Change, KeyCache
from openmhsm.services.keys import KeyService, Page
from openmhsm.services.records import CurrentPointer, DeletedKey
from openmhsm.storage.base import Delete, Put
from openmhsm.types import Clock

PURGE_PROTECTED = (
    'Operation "purge" is not allowed because purge protection is enabled for this vault. '
    "Key Vault service will automatically purge it after the retention period has passed."
)


class DeletedKeyService:
    """Moves keys between `keys/` and `deleted/` in single storage transactions."""

    def __init__(
        self, keys: KeyService, cache: KeyCache, clock: Clock, policy: DeletionPolicy
    ) -> None:
        self.keys = keys
        self.cache = cache
        self.clock = clock
        self.policy = policy

    async def delete(self, name: str) -> DeletedKey:
        """Soft-delete a key with all its versions. Raises KeyNotFound."""

        async def attempt() -> Attempt[DeletedKey]:
            current = await self.keys.get(name)
            paths = sorted(self.cache.paths_of(name))
            versions = []
            policy = None
            for path in paths:
                leaf = path.rsplit("/", 1)[1]
                hit = self.cache.get(path)
                if hit is None:
                    continue
                if leaf == records.POLICY:
                    policy = hit[0]
                elif not leaf.startswith("@"):
                    versions.append(hit[0])
            versions.sort(key=lambda v: (v.attributes.created, v.version))
            now = int(self.clock.now())
            deleted = DeletedKey(
                name=current.name,
                current=current.version,
                deleted_date=now,
                scheduled_purge_date=now + self.policy.retention_days * 86400,
                versions=tuple(versions),
                policy=policy,
            )
            changes: list[Change] = [(Delete(p, self.cache.revision_of(p)), None) for p in paths]
            changes.append(
                (Put(records.deleted_path(name), records.dump_deleted(deleted), 0), deleted)
            )
            return changes, deleted

        return await self.cache.write(name, attempt)

    async def get(self, name: str) -> DeletedKey:
        """A deleted key. Raises KeyNotFound."""
        validation.check_name(name)
        hit = self.cache.get(records.deleted_path(name))
        if hit is None:
            await self.cache.read_through(name)
            hit = self.cache.get(records.deleted_path(name))
        if hit is None:
            raise KeyNotFound(f"Deleted Key not found: {name}")
        return hit[0]  # type: ignore[no-any-return]

    def list(self, after: str | None, limit: int) -> Page:
        items: list[DeletedKey] = []
        for lname in self.cache.deleted_names():
            if after is not None and lname <= after:
                continue
            hit = self.cache.get(records.deleted_path(lname))
            if hit is None:
                continue
            if len(items) == limit:
                return Page(items, items[-1].name.lower())
            items.append(hit[0])
        return Page(items, None)

    async def recover(self, name: str) -> DeletedKey:
        """Bring a deleted key back with all its versions. Raises KeyNotFound, Conflict."""

        async def attempt() -> Attempt[DeletedKey]:
            deleted = await self.get(name)
            path = records.deleted_path(name)
            ptr = CurrentPointer(deleted.name, deleted.current)
            changes: list[Change] = [(Delete(path, self.cache.revision_of(path)), None)]
            changes.append((Put(records.current_path(name), records.dump_current(ptr), 0), ptr))
            for kv in deleted.versions:
                vpath = records.version_path(name, kv.version)
                changes.append((Put(vpath, records.dump_version(kv), 0), kv))
            if deleted.policy is not None:
                policy_put = Put(records.policy_path(name), records.dump_policy(deleted.policy), 0)
                changes.append((policy_put, deleted.policy))
            return changes, deleted

        return await self.cache.write(name, attempt)

    async def purge(self, name: str) -> None:
        """Delete a deleted key for good. Raises KeyNotFound, Forbidden under purge protection."""
        deleted = await self.get(name)
        if self.policy.purge_protection:
            raise Forbidden(PURGE_PROTECTED)
        path = records.deleted_path(deleted.name)
        try:
            await self.cache.commit([(Delete(path, self.cache.revision_of(path)), None)])
        except StorageConflict:
            await self.cache.raise_if_fenced()
            raise Conflict(f"Key '{name}' is being changed concurrently; try again.") from None

    async def purge_expired(self, name: str) -> bool:
        """Purge a deleted key whose retention period has ended (purge protection allows it
        then: it only forbids purging earlier). False if it is not due or is gone already.
        Raises ServiceUnavailable during a full restore."""
        await self.cache.read_through(name)
        hit = self.cache.get(records.deleted_path(name))
        if hit is None or hit[0].scheduled_purge_date > self.clock.now():
            return False
        path = records.deleted_path(name)
        try:
            await self.cache.commit([(Delete(path, hit[1]), None)])
        except StorageConflict:
            await self.cache.raise_if_fenced()
            return False  # recovered or purged meanwhile
        return True
