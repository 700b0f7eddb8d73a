"""The logical key records and their one persisted format (JSON with a version field `v`).

Layout under the pool prefix (DESIGN §4): `keys/<name>/<version>` (one key version),
`keys/<name>/@current` (the name's display form and current version), `keys/<name>/@policy`
(rotation policy), `deleted/<name>` (a soft-deleted key with all its versions). `<name>` is stored
lower-cased; the display form lives in the records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from openmhsm.crypto.jwk import KeyMaterial, from_jwk, private_jwk
from openmhsm.types import JSON

RECORD_VERSION = 1
CURRENT = "@current"
POLICY = "@policy"


def version_path(name: str, version: str) -> str:
    return f"keys/{name.lower()}/{version}"


def current_path(name: str) -> str:
    return f"keys/{name.lower()}/{CURRENT}"


def policy_path(name: str) -> str:
    return f"keys/{name.lower()}/{POLICY}"


def key_prefix(name: str) -> str:
    return f"keys/{name.lower()}/"


def deleted_path(name: str) -> str:
    return f"deleted/{name.lower()}"


@dataclass(frozen=True, slots=True)
class KeyAttributes:
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    created: int = 0
    updated: int = 0
    exportable: bool = False


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a key, private material included. Never leaves the partition in clear."""

    name: str
    version: str
    kty: str
    material: KeyMaterial
    key_ops: tuple[str, ...]
    attributes: KeyAttributes
    tags: Mapping[str, str] = field(default_factory=dict)
    release_policy: JSON | None = None
    request_id: str | None = None  # the client request that created it (retries find it)

    def with_changes(self, **changes: Any) -> KeyVersion:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class CurrentPointer:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class DeletedKey:
    """A soft-deleted key: every version, its rotation policy and the deletion dates."""

    name: str
    current: str
    deleted_date: int
    scheduled_purge_date: int
    versions: tuple[KeyVersion, ...]
    policy: JSON | None = None

    def current_version(self) -> KeyVersion:
        for v in self.versions:
            if v.version == self.current:
                return v
        return self.versions[-1]


def _dump(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _load(data: bytes) -> JSON:
    obj = json.loads(data)
    if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
        raise ValueError("unsupported record format")
    return obj


def _version_to_json(kv: KeyVersion) -> JSON:
    a = kv.attributes
    return {
        "v": RECORD_VERSION,
        "name": kv.name,
        "version": kv.version,
        "kty": kv.kty,
        "jwk": private_jwk(kv.material),
        "crv": kv.material.crv,
        "key_ops": list(kv.key_ops),
        "attributes": {
            "enabled": a.enabled,
            "nbf": a.nbf,
            "exp": a.exp,
            "created": a.created,
            "updated": a.updated,
            "exportable": a.exportable,
        },
        "tags": dict(kv.tags),
        "release_policy": kv.release_policy,
        "request_id": kv.request_id,
    }


def _version_from_json(obj: JSON) -> KeyVersion:
    a = obj["attributes"]
    return KeyVersion(
        name=obj["name"],
        version=obj["version"],
        kty=obj["kty"],
        material=from_jwk(obj["jwk"], trusted=True),  # sealed by us: skip re-validation
        key_ops=tuple(obj["key_ops"]),
        attributes=KeyAttributes(
            enabled=a["enabled"],
            nbf=a["nbf"],
            exp=a["exp"],
            created=a["created"],
            updated=a["updated"],
            exportable=a["exportable"],
        ),
        tags=dict(obj["tags"]),
        release_policy=obj["release_policy"],
        request_id=obj.get("request_id"),
    )


def dump_version(kv: KeyVersion) -> bytes:
    return _dump(_version_to_json(kv))


def load_version(data: bytes) -> KeyVersion:
    return _version_from_json(_load(data))


def dump_current(ptr: CurrentPointer) -> bytes:
    return _dump({"v": RECORD_VERSION, "name": ptr.name, "version": ptr.version})


def load_current(data: bytes) -> CurrentPointer:
    obj = _load(data)
    return CurrentPointer(name=obj["name"], version=obj["version"])


def dump_policy(policy: JSON) -> bytes:
    return _dump({"v": RECORD_VERSION, "policy": policy})


def load_policy(data: bytes) -> JSON:
    policy: JSON = _load(data)["policy"]
    return policy


def dump_deleted(d: DeletedKey) -> bytes:
    return _dump(
        {
            "v": RECORD_VERSION,
            "name": d.name,
            "current": d.current,
            "deleted_date": d.deleted_date,
            "scheduled_purge_date": d.scheduled_purge_date,
            "versions": [_version_to_json(v) for v in d.versions],
            "policy": d.policy,
        }
    )


def load_deleted(data: bytes) -> DeletedKey:
    obj = _load(data)
    return DeletedKey(
        name=obj["name"],
        current=obj["current"],
        deleted_date=obj["deleted_date"],
        scheduled_purge_date=obj["scheduled_purge_date"],
        versions=tuple(_version_from_json(v) for v in obj["versions"]),
        policy=obj["policy"],
    )
