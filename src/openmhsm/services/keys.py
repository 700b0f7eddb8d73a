"""Keys: versions, attributes, tags, import, rotation, rotation policy (no HTTP here)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from openmhsm.crypto.jwk import KeyMaterial, from_jwk
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter, Conflict, KeyNotFound
from openmhsm.services import records, rotation, validation
from openmhsm.services.key_cache import Attempt, Change, KeyCache
from openmhsm.services.records import CurrentPointer, KeyAttributes, KeyVersion
from openmhsm.storage.base import Delete, Put
from openmhsm.types import JSON, Clock


@dataclass(frozen=True, slots=True)
class Page:
    """A page of results and the name or version to continue after, if there is more."""

    items: list[Any]
    continue_after: str | None


class KeyService:
    """The logical key store of one partition: reads from the cache, writes through storage."""

    def __init__(self, cache: KeyCache, clock: Clock) -> None:
        self.cache = cache
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock.now())

    # --- reads -----------------------------------------------------------------------------

    async def get(self, name: str, version: str | None = None) -> KeyVersion:
        """The key's current version, or the named version. Raises KeyNotFound."""
        validation.check_name(name)
        found = self._lookup(name, version)
        if found is None:
            await self.cache.read_through(name)
            found = self._lookup(name, version)
        if found is None:
            where = f"'{name}'" if not version else f"'{name}' with version '{version[:32]}'"
            raise KeyNotFound(f"A key with (name/id) {where} was not found in this key vault.")
        return found

    def _lookup(self, name: str, version: str | None) -> KeyVersion | None:
        if not version:
            ptr = self.cache.get(records.current_path(name))
            if ptr is None:
                return None
            version = ptr[0].version
        elif not validation.VERSION_RE.fullmatch(version):
            return None
        hit = self.cache.get(records.version_path(name, version))
        return None if hit is None else hit[0]

    def list_keys(self, after: str | None, limit: int) -> Page:
        """Current versions of live keys in name order, after the name `after`."""
        items: list[KeyVersion] = []
        names = self.cache.names()
        for lname in names:
            if after is not None and lname <= after:
                continue
            kv = self._lookup(lname, None)
            if kv is None:
                continue
            if len(items) == limit:
                return Page(items, items[-1].name.lower())
            items.append(kv)
        return Page(items, None)

    async def list_versions(self, name: str, after: str | None, limit: int) -> Page:
        validation.check_name(name)
        await self.get(name)
        items: list[KeyVersion] = []
        for path in self.cache.iter_versions(name):
            version = path.rsplit("/", 1)[1]
            if after is not None and version <= after:
                continue
            hit = self.cache.get(path)
            if hit is None:
                continue
            if len(items) == limit:
                return Page(items, items[-1].version)
            items.append(hit[0])
        return Page(items, None)

    # --- writes ----------------------------------------------------------------------------

    async def create(
        self, name: str, params: Mapping[str, Any], request_id: str | None = None
    ) -> KeyVersion:
        """Create a key, or a new version of it. Raises BadParameter, Conflict."""
        validation.check_name(name)
        kty = params.get("kty")
        base = validation.base_kty(kty)
        size = params.get("key_size")
        crv = params.get("crv")
        exponent = params.get("public_exponent")
        for field, value in (("key_size", size), ("public_exponent", exponent)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BadParameter(f"{field} must be an integer.")
        if crv is not None and not isinstance(crv, str):
            raise BadParameter("crv must be a string.")
        if base != "EC" and crv is not None:
            raise BadParameter(f"crv is not valid for kty {kty}.")
        if base == "EC" and size is not None:
            raise BadParameter("key_size is not valid for EC keys; use crv.")
        if base != "RSA" and exponent is not None:
            raise BadParameter("public_exponent is only valid for RSA keys.")
        key_ops = validation.check_key_ops(params.get("key_ops"), base)
        attributes, tags, release_policy = self._common_fields(params)
        material = await _generated(base, size=size, crv=crv, public_exponent=exponent)
        return await self._add_version(
            name, str(kty), material, key_ops, attributes, tags, release_policy, request_id
        )

    async def import_key(
        self, name: str, params: Mapping[str, Any], request_id: str | None = None
    ) -> KeyVersion:
        """Import a JWK with its private parts as a new version. Raises BadParameter, Conflict."""
        validation.check_name(name)
        jwk = validation.check_object(params.get("key"), "key")
        if not jwk:
            raise BadParameter("The key to import is required.")
        base = validation.base_kty(jwk.get("kty"))
        hsm = validation.optional_bool(params.get("Hsm"), "Hsm")
        kty = str(jwk["kty"])
        if hsm and not kty.endswith("-HSM"):
            kty = f"{base}-HSM"
        # An RSA import checks the key (and may recover p and q from n, e, d): a second or more
        # for RSA-4096, which must not stall every other request of the partition.
        material = await asyncio.to_thread(from_jwk, jwk) if base == "RSA" else from_jwk(jwk)
        key_ops = validation.check_key_ops(jwk.get("key_ops"), base)
        attributes, tags, release_policy = self._common_fields(params)
        return await self._add_version(
            name, kty, material, key_ops, attributes, tags, release_policy, request_id
        )

    def _common_fields(
        self, params: Mapping[str, Any]
    ) -> tuple[KeyAttributes, dict[str, str], JSON | None]:
        attrs = validation.check_object(params.get("attributes"), "attributes")
        now = self._now()
        enabled = validation.optional_bool(attrs.get("enabled"), "attributes.enabled")
        exportable = validation.optional_bool(attrs.get("exportable"), "attributes.exportable")
        attributes = KeyAttributes(
            enabled=True if enabled is None else enabled,
            nbf=validation.optional_int(attrs.get("nbf"), "nbf"),
            exp=validation.optional_int(attrs.get("exp"), "exp"),
            created=now,
            updated=now,
            exportable=bool(exportable),
        )
        release_policy = validation.check_release_policy(params.get("release_policy"))
        if attributes.exportable and release_policy is None:
            raise BadParameter("An exportable key must have a release policy.")
        return attributes, validation.check_tags(params.get("tags")), release_policy

    async def _add_version(
        self,
        name: str,
        kty: str,
        material: KeyMaterial,
        key_ops: tuple[str, ...],
        attributes: KeyAttributes,
        tags: dict[str, str],
        release_policy: JSON | None,
        request_id: str | None = None,
        replacing: str | None = None,
    ) -> KeyVersion:
        kv = KeyVersion(
            name=name,
            version=uuid.uuid4().hex,
            kty=kty,
            material=material,
            key_ops=key_ops,
            attributes=attributes,
            tags=tags,
            release_policy=release_policy,
        )
        if request_id:
            kv = kv.with_changes(request_id=request_id)

        async def attempt() -> Attempt[KeyVersion]:
            self._refuse_if_deleted(name)
            retried = self._made_by(name, request_id)
            if retried is not None:
                return [], retried  # a retry of a create that committed: answer it again
            cur_path = records.current_path(name)
            current = self.cache.get(cur_path)
            if replacing is not None and (current is None or current[0].version != replacing):
                return [], await self.get(name)  # another version came first: nothing to replace
            display = name if current is None else current[0].name
            made = kv.with_changes(name=display)
            ptr = CurrentPointer(display, made.version)
            changes: list[Change] = [
                (Delete(records.deleted_path(name), expected_revision=0), None),
                (
                    Put(records.version_path(name, made.version), records.dump_version(made), 0),
                    made,
                ),
                (Put(cur_path, records.dump_current(ptr), self.cache.revision_of(cur_path)), ptr),
            ]
            return changes, made

        return await self.cache.write(name, attempt)

    def _made_by(self, name: str, request_id: str | None) -> KeyVersion | None:
        """The version a request with this client request id already created, if any: azure-core
        sends the same `x-ms-client-request-id` on every retry of one call."""
        if not request_id:
            return None
        for path in self.cache.iter_versions(name):
            hit = self.cache.get(path)
            if hit is not None and hit[0].request_id == request_id:
                return hit[0]  # type: ignore[no-any-return]
        return None

    def _refuse_if_deleted(self, name: str) -> None:
        if self.cache.get(records.deleted_path(name)) is not None:
            raise Conflict(
                f"Key '{name}' is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the key can only be recovered or purged.",
                inner_code="ObjectIsDeletedButRecoverable",
            )

    async def update(self, name: str, version: str | None, params: Mapping[str, Any]) -> KeyVersion:
        """Change key_ops, attributes (enabled, nbf, exp), tags or release policy of a version."""

        async def attempt() -> Attempt[KeyVersion]:
            kv = await self.get(name, version)
            changes: dict[str, Any] = {}
            base = validation.base_kty(kv.kty)
            if "key_ops" in params and params["key_ops"] is not None:
                changes["key_ops"] = validation.check_key_ops(params["key_ops"], base)
            if params.get("tags") is not None:
                changes["tags"] = validation.check_tags(params["tags"])
            attrs = validation.check_object(params.get("attributes"), "attributes")
            a = kv.attributes
            enabled = validation.optional_bool(attrs.get("enabled"), "attributes.enabled")
            if attrs.get("exportable") is not None and attrs["exportable"] != a.exportable:
                raise BadParameter("exportable cannot be changed after creation.")
            new_attrs = KeyAttributes(
                enabled=a.enabled if enabled is None else enabled,
                nbf=validation.optional_int(attrs["nbf"], "nbf") if "nbf" in attrs else a.nbf,
                exp=validation.optional_int(attrs["exp"], "exp") if "exp" in attrs else a.exp,
                created=a.created,
                updated=self._now(),
                exportable=a.exportable,
            )
            changes["attributes"] = new_attrs
            if params.get("release_policy") is not None:
                if kv.release_policy and kv.release_policy.get("immutable"):
                    raise BadParameter(  # Azure: 400, AKV.SKR.1020
                        "Immutable Key Release Policy cannot be modified.",
                        inner_code="ImmutablePolicy",
                    )
                changes["release_policy"] = validation.check_release_policy(
                    params["release_policy"]
                )
            updated = kv.with_changes(**changes)
            path = records.version_path(name, kv.version)
            put = Put(path, records.dump_version(updated), self.cache.revision_of(path))
            return [(put, updated)], updated

        return await self.cache.write(name, attempt)

    async def rotate(
        self, name: str, request_id: str | None = None, *, replacing: str | None = None
    ) -> KeyVersion:
        """A new version with the current version's type, size, operations, tags and policy.
        With `replacing`, only if that version is still the current one (else the current
        version is returned unchanged: the scheduler's rotation must not follow another)."""
        cur = await self.get(name)
        base = validation.base_kty(cur.kty)
        m = cur.material
        exponent = (
            m.private.public_key().public_numbers().e
            if isinstance(m.private, rsa.RSAPrivateKey)
            else None
        )
        material = await _generated(
            base, size=None if base == "EC" else m.size, crv=m.crv, public_exponent=exponent
        )
        now = self._now()
        policy = await self.get_rotation_policy(name)
        expiry = rotation.expiry_seconds(policy)
        attributes = KeyAttributes(
            enabled=True,
            created=now,
            updated=now,
            exp=now + expiry if expiry else None,
            exportable=cur.attributes.exportable,
        )
        return await self._add_version(
            name,
            cur.kty,
            material,
            cur.key_ops,
            attributes,
            dict(cur.tags),
            cur.release_policy,
            request_id,
            replacing,
        )

    # --- rotation policy -------------------------------------------------------------------

    async def get_rotation_policy(self, name: str) -> JSON:
        """The stored policy, or Key Vault's default (notify 30 days before expiry)."""
        await self.get(name)
        hit = self.cache.get(records.policy_path(name))
        return rotation.DEFAULT_POLICY if hit is None else hit[0]

    async def set_rotation_policy(self, name: str, body: Mapping[str, Any]) -> JSON:
        await self.get(name)
        path = records.policy_path(name)
        previous = self.cache.get(path)
        policy = rotation.check_policy(body, self._now(), None if previous is None else previous[0])

        async def attempt() -> Attempt[JSON]:
            put = Put(path, records.dump_policy(policy), self.cache.revision_of(path))
            return [(put, policy)], policy

        return await self.cache.write(name, attempt)


async def _generated(
    base: str, *, size: int | None, crv: str | None, public_exponent: int | None
) -> KeyMaterial:
    """A new key. RSA generation takes tens to hundreds of milliseconds: it runs on a thread
    (the GIL is released), not on the event loop where every other request would wait."""
    if base == "RSA":
        return await asyncio.to_thread(
            generate_key, base, size=size, crv=crv, public_exponent=public_exponent
        )
    return generate_key(base, size=size, crv=crv, public_exponent=public_exponent)
