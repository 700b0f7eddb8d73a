"""The full-backup format, version 1: written and parsed only here.

A backup is one folder, `mhsm-<pool>-<YYYYMMDDHHmmSS>`, of:
- `records-NNNNN.bin`: records in key order, each `[u32 key length][key, UTF-8][u32 value
  length][value]` (big-endian), the whole file sealed with AES-256-GCM under a key derived from
  the domain's backup key, with `openmhsm-backup/1/<backup id>/<file name>` as AAD. Values are the
  plaintext records as the pool's barrier view reads them, so they never leave the pool in clear
  and are re-sealed under the target pool's barrier (whose AAD names the target pool) on restore.
- `manifest.json`: the format version, backup id, pool, domain id, storage revision, counts per
  prefix, and each file's name, SHA-256, record count and first/last key (so one key is found
  without reading every file); HMAC-SHA256 under another domain-derived key over the canonical
  JSON of everything else. Written last: a folder without a manifest is an incomplete backup.
Any flipped byte fails either the manifest MAC, a file's hash, or its GCM tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from openmhsm.crypto import aead
from openmhsm.crypto.kdf import derive_key
from openmhsm.errors import BadParameter, CryptoError

FORMAT = 1
MANIFEST = "manifest.json"
MAX_MANIFEST = 8 * 1024 * 1024
MAX_FILE = 64 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
MAX_KEY = 1024
_LENGTH = struct.Struct(">I")
_FILE_NAME = re.compile(r"records-\d{5}\.bin")
_FOLDER_STAMP = "%Y%m%d%H%M%S"
_T = TypeVar("_T")


class BackupInvalid(BadParameter):
    """The folder is not an intact backup of this format (tampered, truncated, incomplete)."""


class DomainMismatch(BadParameter):
    """The backup was made in a pool with another security domain."""


def folder_name(pool: str, when: datetime) -> str:
    """`mhsm-<pool>-<YYYYMMDDHHmmSS>` in UTC."""
    return f"mhsm-{pool}-{when.astimezone(UTC).strftime(_FOLDER_STAMP)}"


@dataclass(frozen=True)
class BackupKeys:
    """The two keys a backup uses, derived from the domain's backup key."""

    records: bytes = field(repr=False)
    mac: bytes = field(repr=False)

    @classmethod
    def from_backup_key(cls, backup_key: bytes) -> BackupKeys:
        return cls(
            records=derive_key(backup_key, "full-backup/records"),
            mac=derive_key(backup_key, "full-backup/manifest"),
        )


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    records: int
    first: str
    last: str


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    pool: str
    domain_id: str
    revision: int
    created: int
    counts: dict[str, int]
    files: tuple[FileEntry, ...]

    @property
    def total(self) -> int:
        return sum(entry.records for entry in self.files)

    def files_for(self, prefix: str) -> list[FileEntry]:
        """The files that may hold keys starting with `prefix` (files are in key order)."""
        return [f for f in self.files if f.last >= prefix and f.first[: len(prefix)] <= prefix]


def file_name(index: int) -> str:
    return f"records-{index:05d}.bin"


def _aad(backup_id: str, name: str) -> bytes:
    return f"openmhsm-backup/{FORMAT}/{backup_id}/{name}".encode()


class ChunkWriter:
    """Packs records, given in key order, into sealed files of about CHUNK_BYTES."""

    def __init__(self, keys: BackupKeys, backup_id: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._keys = keys
        self._backup_id = backup_id
        self._chunk_bytes = chunk_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._first = ""
        self._last = ""
        self._count = 0
        self.files: list[FileEntry] = []

    def add(self, key: str, value: bytes) -> tuple[str, bytes] | None:
        """Add one record; return (file name, sealed bytes) when a file is full."""
        encoded = key.encode()
        if not encoded or len(encoded) > MAX_KEY or key <= self._last:
            raise ValueError(f"backup records must come in key order: {key!r}")
        if self._count == 0:
            self._first = key
        self._parts += [_LENGTH.pack(len(encoded)), encoded, _LENGTH.pack(len(value)), value]
        self._size += 8 + len(encoded) + len(value)
        self._last = key
        self._count += 1
        return self._flush() if self._size >= self._chunk_bytes else None

    def finish(self) -> tuple[str, bytes] | None:
        """The last, partly filled file, if any."""
        return self._flush() if self._count else None

    def _flush(self) -> tuple[str, bytes]:
        name = file_name(len(self.files))
        data = aead.seal(self._keys.records, b"".join(self._parts), _aad(self._backup_id, name))
        self.files.append(
            FileEntry(name, hashlib.sha256(data).hexdigest(), self._count, self._first, self._last)
        )
        self._parts, self._size, self._count = [], 0, 0
        return name, data


def open_file(
    keys: BackupKeys, manifest: Manifest, entry: FileEntry, data: bytes
) -> Iterator[tuple[str, bytes]]:
    """The records of one file, checked against the manifest. Raises BackupInvalid."""
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), entry.sha256):
        raise BackupInvalid(f"Backup file {entry.name} does not match the manifest.")
    try:
        plain = aead.open_sealed(keys.records, data, _aad(manifest.backup_id, entry.name))
    except CryptoError:
        raise BackupInvalid(f"Backup file {entry.name} failed authentication.") from None
    records = list(_unpack(plain, entry.name))
    if len(records) != entry.records:
        raise BackupInvalid(f"Backup file {entry.name} holds an unexpected number of records.")
    return iter(records)


def _unpack(plain: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    offset, end, last = 0, len(plain), ""
    try:
        while offset < end:
            (key_len,) = _LENGTH.unpack_from(plain, offset)
            key = plain[offset + 4 : offset + 4 + key_len].decode()
            offset += 4 + key_len
            (value_len,) = _LENGTH.unpack_from(plain, offset)
            value = plain[offset + 4 : offset + 4 + value_len]
            offset += 4 + value_len
            if offset > end or not key or key <= last:
                raise ValueError
            last = key
            yield key, value
    except (struct.error, ValueError, UnicodeDecodeError):
        raise BackupInvalid(f"Backup file {name} is malformed.") from None


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(keys: BackupKeys, body: dict[str, Any]) -> str:
    digest = hmac.new(keys.mac, _canonical(body), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dump_manifest(keys: BackupKeys, manifest: Manifest) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "backupId": manifest.backup_id,
        "pool": manifest.pool,
        "domainId": manifest.domain_id,
        "revision": manifest.revision,
        "created": manifest.created,
        "counts": manifest.counts,
        "files": [
            {"name": f.name, "sha256": f.sha256, "records": f.records, "first": f.first,
             "last": f.last}
            for f in manifest.files
        ],
    }  # fmt: skip
    return json.dumps({**body, "mac": _mac(keys, body)}, indent=1, sort_keys=True).encode()


def peek_manifest(data: bytes) -> dict[str, Any]:
    """The manifest's fields, unverified (for listing backups without the domain keys).
    Raises BackupInvalid."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BackupInvalid("The backup manifest is not JSON.") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BackupInvalid("The folder holds no backup of a format this pool reads.")
    return body


def load_manifest(keys: BackupKeys, data: bytes, domain_id: str) -> Manifest:
    """Parse and verify a manifest of this pool's domain. Raises DomainMismatch, BackupInvalid."""
    if len(data) > MAX_MANIFEST:
        raise BackupInvalid("The backup manifest is too large.")
    body = peek_manifest(data)
    if not isinstance(body.get("domainId"), str):
        raise BackupInvalid("The backup manifest names no security domain.")
    if body["domainId"] != domain_id:
        raise DomainMismatch(
            "The backup was made in a pool with a different security domain; it can only be "
            "restored into a pool holding that domain.",
            inner_code="SecurityDomainMismatch",
        )
    mac = body.pop("mac", None)
    try:
        expected = _mac(keys, body)
    except RecursionError:  # nested deeper than json.dumps goes: not a manifest we wrote
        raise BackupInvalid("The backup manifest is malformed.") from None
    if not isinstance(mac, str) or not mac.isascii() or not hmac.compare_digest(mac, expected):
        raise BackupInvalid("The backup manifest failed authentication (altered or corrupt).")
    try:
        return _parse_manifest(body)
    except ValueError:
        raise BackupInvalid("The backup manifest is malformed.") from None


def _parse_manifest(body: dict[str, Any]) -> Manifest:
    """The manifest in a body that passed its MAC; every field of its own JSON type, as
    dump_manifest writes it (no coercion: `int()` of a JSON Infinity raises OverflowError)."""
    files = tuple(
        FileEntry(_typed(f, "name", str), _typed(f, "sha256", str), _typed(f, "records", int),
                  _typed(f, "first", str), _typed(f, "last", str))
        for f in _typed(body, "files", list)
    )  # fmt: skip
    if any(not _FILE_NAME.fullmatch(f.name) for f in files):
        raise ValueError("bad file name")
    counts = _typed(body, "counts", dict)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise ValueError("bad counts")
    return Manifest(
        backup_id=_typed(body, "backupId", str),
        pool=_typed(body, "pool", str),
        domain_id=_typed(body, "domainId", str),
        revision=_typed(body, "revision", int),
        created=_typed(body, "created", int),
        counts=counts,
        files=files,
    )


def _typed(parent: object, name: str, kind: type[_T]) -> _T:
    """`parent[name]`, which must be a JSON object's field of type `kind` (a bool is no int)."""
    value = parent.get(name) if isinstance(parent, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"bad manifest field {name}")
    return value
