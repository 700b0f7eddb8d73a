"""Single-key backup blobs (`/keys/<name>/backup`, `/keys/restore`).

Format, parsed only here: `[u8 format = 1][16-byte domain id][AES-256-GCM sealed JSON]`, sealed
under the domain's backup key with the 17-byte header as AAD, so a blob restores only into a pool
with the same security domain and cannot be altered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from openmhsm.crypto import aead
from openmhsm.errors import BadParameter, Conflict, CryptoError, StorageConflict
from openmhsm.services import records, validation
from openmhsm.services.key_cache import KeyCache
from openmhsm.services.keys import KeyService
from openmhsm.services.records import CurrentPointer, DeletedKey, KeyVersion
from openmhsm.storage.base import Delete, Put, TxnOp

FORMAT = 1
HEADER_LEN = 17
MAX_BLOB = 4 * 1024 * 1024


class KeyBackups:
    """Makes and restores single-key backup blobs within one security domain."""

    def __init__(
        self, keys: KeyService, cache: KeyCache, domain_id: str, backup_key: bytes
    ) -> None:
        self.keys = keys
        self.cache = cache
        self.use_domain(domain_id, backup_key)

    def use_domain(self, domain_id: str, backup_key: bytes) -> None:
        """Seal and open blobs for this security domain from now on."""
        self._header = bytes([FORMAT]) + uuid.UUID(domain_id).bytes
        self._key = backup_key

    async def backup(self, name: str) -> bytes:
        """Every version of a live key, its current pointer and rotation policy, sealed."""
        current = await self.keys.get(name)
        versions = [hit[0] for p in self.cache.iter_versions(name) if (hit := self.cache.get(p))]
        policy_hit = self.cache.get(records.policy_path(name))
        snapshot = DeletedKey(
            name=current.name,
            current=current.version,
            deleted_date=0,
            scheduled_purge_date=0,
            versions=tuple(versions),
            policy=None if policy_hit is None else policy_hit[0],
        )
        return self._header + aead.seal(self._key, records.dump_deleted(snapshot), self._header)

    def _open(self, blob: bytes) -> DeletedKey:
        if len(blob) > MAX_BLOB or len(blob) <= HEADER_LEN or blob[0] != FORMAT:
            raise BadParameter("The backup blob is not a key backup of this service.")
        if blob[:HEADER_LEN] != self._header:
            raise BadParameter(
                "The backup blob was made in a pool with a different security domain.",
                inner_code="SecurityDomainMismatch",
            )
        try:
            plain = aead.open_sealed(self._key, blob[HEADER_LEN:], blob[:HEADER_LEN])
            return records.load_deleted(plain)
        except (CryptoError, ValueError, KeyError, json.JSONDecodeError):
            raise BadParameter("The backup blob is corrupt or was altered.") from None

    async def restore(self, blob: bytes) -> KeyVersion:
        """Recreate a key with all its versions. Raises BadParameter, Conflict if the name is
        in use (live or deleted)."""
        snapshot = self._open(blob)
        name = validation.check_name(snapshot.name)
        await self.cache.read_through(name)
        if self.cache.paths_of(name) or self.cache.get(records.deleted_path(name)):
            raise Conflict(
                f"Key '{name}' already exists (or is deleted); restore needs an unused name.",
                inner_code="KeyAlreadyExists",
            )
        ptr = CurrentPointer(snapshot.name, snapshot.current)
        changes: list[tuple[TxnOp, Any]] = [
            (Delete(records.deleted_path(name), expected_revision=0), None),
            (Put(records.current_path(name), records.dump_current(ptr), 0), ptr),
        ]
        for kv in snapshot.versions:
            changes.append(
                (Put(records.version_path(name, kv.version), records.dump_version(kv), 0), kv)
            )
        if snapshot.policy is not None:
            changes.append(
                (
                    Put(records.policy_path(name), records.dump_policy(snapshot.policy), 0),
                    snapshot.policy,
                )
            )
        try:
            await self.cache.commit(changes)
        except StorageConflict:
            await self.cache.raise_if_fenced()
            raise Conflict(f"Key '{name}' already exists; restore needs an unused name.") from None
        return snapshot.current_version()
