"""Service objects to Key Vault JSON (KeyBundle, KeyItem, DeletedKeyBundle, policies)."""

from __future__ import annotations

from openmhsm.config import DeletionPolicy
from openmhsm.crypto.jwk import public_jwk
from openmhsm.services.records import DeletedKey, KeyVersion
from openmhsm.types import JSON


def key_id(base: str, name: str, version: str | None = None) -> str:
    return f"{base}/keys/{name}" if version is None else f"{base}/keys/{name}/{version}"


def attributes(kv: KeyVersion, deletion: DeletionPolicy) -> JSON:
    a = kv.attributes
    out: JSON = {
        "enabled": a.enabled,
        "created": a.created,
        "updated": a.updated,
        "recoverableDays": deletion.retention_days,
        "recoveryLevel": deletion.recovery_level,
        "exportable": a.exportable,
    }
    if a.nbf is not None:
        out["nbf"] = a.nbf
    if a.exp is not None:
        out["exp"] = a.exp
    return out


def key_bundle(base: str, kv: KeyVersion, deletion: DeletionPolicy) -> JSON:
    jwk: JSON = {
        "kid": key_id(base, kv.name, kv.version),
        "kty": kv.kty,
        "key_ops": list(kv.key_ops),
    }
    jwk.update(public_jwk(kv.material))
    jwk["kty"] = kv.kty
    bundle: JSON = {"key": jwk, "attributes": attributes(kv, deletion)}
    if kv.tags:
        bundle["tags"] = dict(kv.tags)
    if kv.release_policy is not None:  # a policy given without data keeps none: omit nulls
        bundle["release_policy"] = {k: v for k, v in kv.release_policy.items() if v is not None}
    return bundle


def key_item(base: str, kv: KeyVersion, deletion: DeletionPolicy, *, with_version: bool) -> JSON:
    item: JSON = {
        "kid": key_id(base, kv.name, kv.version if with_version else None),
        "attributes": attributes(kv, deletion),
    }
    if kv.tags:
        item["tags"] = dict(kv.tags)
    return item


def _deletion_fields(base: str, d: DeletedKey) -> JSON:
    return {
        "recoveryId": f"{base}/deletedkeys/{d.name}",
        "deletedDate": d.deleted_date,
        "scheduledPurgeDate": d.scheduled_purge_date,
    }


def deleted_key_bundle(base: str, d: DeletedKey, deletion: DeletionPolicy) -> JSON:
    bundle = key_bundle(base, d.current_version(), deletion)
    bundle.update(_deletion_fields(base, d))
    return bundle


def deleted_key_item(base: str, d: DeletedKey, deletion: DeletionPolicy) -> JSON:
    item = key_item(base, d.current_version(), deletion, with_version=False)
    item.update(_deletion_fields(base, d))
    return item


def rotation_policy(base: str, name: str, policy: JSON) -> JSON:
    return {
        "id": f"{base}/keys/{name}/rotationpolicy",
        "lifetimeActions": policy.get("lifetimeActions", []),
        "attributes": policy.get("attributes", {}),
    }
