"""Service principals and managed identities of the pool, with salted scrypt secret hashes.

Records live at `principals/<client_id>` as JSON in the (already sealed, prefix-scoped) storage view
this store receives. A secret is shown once, at creation or reset; only its scrypt hash is kept.
A managed identity's `IDENTITY_HEADER` is `<client_id>.<secret>` (see `identity_header`).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from openmhsm import errors
from openmhsm.services.fence import guarded_txn
from openmhsm.storage.base import Delete, Entry, Put, Storage
from openmhsm.types import Clock, Principal

PREFIX = "principals/"
KINDS = ("service", "managed")
SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_SECRET = 256  # longer inputs are never valid secrets; refuse them before hashing
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CLIENT_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RECORD_VERSION = 1
_WRITE_ATTEMPTS = 5
_PAGE = 1000


def identity_header(client_id: str, secret: str) -> str:
    """The App-Service `IDENTITY_HEADER` value for a principal: `<client_id>.<secret>`."""
    return f"{client_id}.{secret}"


def split_identity_header(header: str) -> tuple[str, str]:
    """The client id and the secret of an `IDENTITY_HEADER` value (either may be empty)."""
    client_id, _, secret = header.partition(".")
    return client_id, secret


def _new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=_HASH_BYTES, n=n, r=r, p=p).derive(secret)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PrincipalStore:
    """Create, authenticate, list and delete the pool's principals.

    `scrypt_n` is the scrypt cost for new hashes (2**14 in production; tests may lower it). Stored
    hashes carry their own parameters, so verification always uses the ones they were made with.
    """

    def __init__(self, storage: Storage, clock: Clock, *, scrypt_n: int = SCRYPT_N) -> None:
        self._storage = storage
        self._clock = clock
        self._scrypt_n = scrypt_n

    async def create(
        self, name: str, kind: str = "service", *, preset: Mapping[str, str] | None = None
    ) -> tuple[Principal, str]:
        """A new principal and its secret (shown only now). `preset` gives its `client_id`,
        `object_id` and `client_secret` instead of fresh ones (a bootstrap administrator made
        ahead of the pool, by `mhsm deploy init`). Raises `errors.BadParameter`, and
        `StorageConflict` if a preset client id exists."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise errors.BadParameter(
                "A principal name must be 1 to 64 characters of letters, digits, '.', '_' or '-'."
            )
        if kind not in KINDS:
            raise errors.BadParameter("A principal kind must be 'service' or 'managed'.")
        given = preset or {}
        secret = given.get("client_secret") or _new_secret()
        record: dict[str, Any] = {
            "version": _RECORD_VERSION,
            "client_id": str(uuid.UUID(given.get("client_id") or str(uuid.uuid4()))),
            "object_id": str(uuid.UUID(given.get("object_id") or str(uuid.uuid4()))),
            "name": name,
            "kind": kind,
            "secret_hash": await self._hash(secret),
            "created": int(self._clock.now()),
        }
        await guarded_txn(self._storage, [Put(PREFIX + record["client_id"], _encode(record), 0)])
        return _principal(record), secret

    async def authenticate(self, client_id: str, secret: str) -> Principal | None:
        """The principal whose id and secret these are, or None.

        Runs one scrypt whether or not the client id exists, so timing does not reveal existence.
        """
        record = await self._record(client_id) if len(secret) <= _MAX_SECRET else None
        if record is None:
            await self._hash(secret[:_MAX_SECRET])  # same cost as a real check
            return None
        if await self._verify(secret, record["secret_hash"]):
            return _principal(record)
        return None

    async def authenticate_identity_header(self, header: str) -> Principal | None:
        """The principal an App-Service `X-IDENTITY-HEADER` value (`<client_id>.<secret>`) names."""
        return await self.authenticate(*split_identity_header(header))

    async def get(self, client_id: str) -> Principal | None:
        """The principal with this client id, or None."""
        record = await self._record(client_id)
        return None if record is None else _principal(record)

    async def list(self) -> builtins.list[Principal]:
        """Every principal, in client-id order."""
        result: builtins.list[Principal] = []
        start_after: str | None = None
        while True:
            page = await self._storage.list_page(PREFIX, start_after=start_after, limit=_PAGE)
            result.extend(_principal(_decode(entry)) for entry in page)
            if len(page) < _PAGE:
                return result
            start_after = page[-1].key

    async def delete(self, client_id: str) -> bool:
        """Remove a principal; False if none. Raises `errors.Conflict` under contention."""
        key = record_path(client_id)
        for _ in range(_WRITE_ATTEMPTS):
            entry = await self._storage.get(key) if key is not None else None
            if key is None or entry is None:
                return False
            try:
                await guarded_txn(self._storage, [Delete(key, entry.mod_revision)])
            except errors.StorageConflict:
                continue  # changed under us (e.g. a secret reset): look again
            return True
        raise errors.Conflict("The principal changed concurrently; try again.")

    async def reset_secret(self, client_id: str) -> str:
        """Replace a principal's secret; return the new one (shown only now).

        Raises `errors.NotFound` if there is no such principal, `errors.Conflict` if the record
        keeps changing under concurrent writes.
        """
        key = record_path(client_id)
        for _ in range(_WRITE_ATTEMPTS):
            entry = await self._storage.get(key) if key is not None else None
            if key is None or entry is None:
                raise errors.NotFound("There is no principal with this client id.")
            record = _decode(entry)
            secret = _new_secret()
            record["secret_hash"] = await self._hash(secret)
            try:
                await guarded_txn(self._storage, [Put(key, _encode(record), entry.mod_revision)])
            except errors.StorageConflict:
                continue
            return secret
        raise errors.Conflict("The principal changed concurrently; try again.")

    async def _record(self, client_id: str) -> dict[str, Any] | None:
        key = record_path(client_id)
        if key is None:
            return None
        entry = await self._storage.get(key)
        return None if entry is None else _decode(entry)

    async def _hash(self, secret: str) -> dict[str, Any]:
        salt = secrets.token_bytes(_SALT_BYTES)
        n = self._scrypt_n
        digest = await asyncio.to_thread(
            _scrypt, secret.encode("utf-8", "surrogatepass"), salt, n, _SCRYPT_R, _SCRYPT_P
        )
        return {
            "alg": "scrypt",
            "n": n,
            "r": _SCRYPT_R,
            "p": _SCRYPT_P,
            "salt": _b64(salt),
            "hash": _b64(digest),
        }

    async def _verify(self, secret: str, stored: dict[str, Any]) -> bool:
        expected = base64.b64decode(stored["hash"])
        digest = await asyncio.to_thread(
            _scrypt,
            secret.encode("utf-8", "surrogatepass"),
            base64.b64decode(stored["salt"]),
            int(stored["n"]),
            int(stored["r"]),
            int(stored["p"]),
        )
        return hmac.compare_digest(digest, expected)


def record_path(client_id: str) -> str | None:
    """The storage key for a client id, or None if it is not a lower-case UUID (case folded)."""
    if not isinstance(client_id, str):
        return None
    folded = client_id.strip().lower()
    return PREFIX + folded if _CLIENT_ID_RE.fullmatch(folded) else None


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _decode(entry: Entry) -> dict[str, Any]:
    record = json.loads(entry.value)
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
        raise ValueError(f"unsupported principal record at {entry.key}")
    return record


def _principal(record: dict[str, Any]) -> Principal:
    return Principal(
        object_id=record["object_id"],
        client_id=record["client_id"],
        name=record["name"],
        kind=record["kind"],
    )
