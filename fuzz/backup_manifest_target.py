"""Fuzz target: the full-backup format of backup/format.py: the manifest (`peek_manifest`,
`load_manifest`) and the record-file reader (`open_file`).

Contract: the three raise only BackupInvalid or DomainMismatch; a record file that is valid as
built gives back exactly its records. The harness holds the backup key, so it MACs and seals what
it builds: the fuzzer reaches the checks behind the MAC and the GCM tag, where a backup made by
another version of OpenMHSM (or a damaged one signed before the damage) would take the parser.

    .venv/bin/python fuzz/backup_manifest_target.py -max_total_time=600 /tmp/backup-corpus \
        fuzz/corpus/backup_manifest
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["openmhsm"]):
    from openmhsm.backup import format as fmt
    from openmhsm.crypto import aead

from structured_inputs import choices, loaded, perturbed, perturbed_bytes, to_json

KEYS = fmt.BackupKeys.from_backup_key(bytes(range(32)))
DOMAIN = "domain-1"
BACKUP_ID = "b" * 32
FILE_NAME = fmt.file_name(0)
NAMES = ("format", "backupId", "pool", "domainId", "revision", "created", "counts", "files")
NAMES += ("name", "sha256", "records", "first", "last", "mac", "keys", "rbac")
MANIFEST = fmt.Manifest(BACKUP_ID, "p1", DOMAIN, 1, 0, {}, ())
TEMPLATE: dict[str, Any] = {
    "format": fmt.FORMAT,
    "backupId": BACKUP_ID,
    "pool": "p1",
    "domainId": DOMAIN,
    "revision": 42,
    "created": 1_700_000_000,
    "counts": {"keys": 3, "rbac/assignments": 1},
    "files": [
        {
            "name": FILE_NAME,
            "sha256": "0" * 64,
            "records": 2,
            "first": "keys/a/1",
            "last": "keys/b",
        },
        {
            "name": fmt.file_name(1),
            "sha256": "f" * 64,
            "records": 2,
            "first": "keys/c",
            "last": "r",
        },
    ],
}


def signed_manifest(fdp: atheris.FuzzedDataProvider) -> bytes:
    """The template manifest changed, then (mostly) given the MAC its new body deserves."""
    body = perturbed(TEMPLATE, fdp, NAMES)
    parsed = loaded(to_json(body).encode())
    if isinstance(body, dict) and isinstance(parsed, dict) and fdp.ConsumeIntInRange(0, 7) != 7:
        parsed.pop("mac", None)
        with contextlib.suppress(RecursionError):  # too deep for json.dumps: it goes unsigned
            body = {**body, "mac": fmt._mac(KEYS, parsed)}  # the module's own MAC layout
    return to_json(body).encode()


Records = list[tuple[str, bytes]]


def sealed_records(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, int, Records | None]:
    """(a sealed record file, the record count its entry claims, its records if it is valid)."""
    records = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        key = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24))
        records.append((key, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))))
    if fdp.ConsumeIntInRange(0, 7) != 7:
        records = sorted(dict(records).items())
    parts = []
    for key, value in records:
        encoded = key.encode("utf-8", "surrogatepass")
        parts += [len(encoded).to_bytes(4, "big"), encoded, len(value).to_bytes(4, "big"), value]
    plain = b"".join(parts)
    changed = perturbed_bytes(plain, fdp)
    count = len(records) if fdp.ConsumeIntInRange(0, 7) != 7 else fdp.ConsumeIntInRange(0, 9)
    keys = [key for key, _ in records]
    valid = (
        changed == plain
        and count == len(records)
        and keys == sorted(set(keys))
        and all(keys)
        and all(_is_utf8(key) for key in keys)
    )
    sealed = aead.seal(KEYS.records, changed, fmt._aad(BACKUP_ID, FILE_NAME))
    return sealed, count, records if valid else None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_records(sealed: bytes, count: int) -> Records | None:
    entry = fmt.FileEntry(FILE_NAME, hashlib.sha256(sealed).hexdigest(), count, "", "")
    return expect_backup_error(lambda: list(fmt.open_file(KEYS, MANIFEST, entry, sealed)))


def expect_backup_error(parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except (fmt.BackupInvalid, fmt.DomainMismatch):
        return None


def check_document(data: bytes) -> None:
    """The bytes as a manifest, and as the plaintext of a record file."""
    expect_backup_error(lambda: fmt.peek_manifest(data))
    manifest = expect_backup_error(lambda: fmt.load_manifest(KEYS, data, DOMAIN))
    if manifest is not None:
        manifest.files_for("keys/")
    read_records(aead.seal(KEYS.records, data, fmt._aad(BACKUP_ID, FILE_NAME)), 0)


def check_built(fdp: atheris.FuzzedDataProvider) -> None:
    """A valid record file or signed manifest, changed as the input chooses."""
    if fdp.ConsumeBool():
        sealed, count, records = sealed_records(fdp)
        result = read_records(sealed, count)
        if records is not None:
            assert result == records, "a valid record file did not give back its records"
        return
    data = signed_manifest(fdp)
    expect_backup_error(lambda: fmt.peek_manifest(data))
    manifest = expect_backup_error(lambda: fmt.load_manifest(KEYS, data, DOMAIN))
    if manifest is not None:
        manifest.files_for(fdp.ConsumeUnicode(8))
        assert manifest.total == sum(entry.records for entry in manifest.files)


def TestOneInput(data: bytes) -> None:
    fdp = choices(data)
    if fdp is None:
        check_document(data)
    else:
        check_built(fdp)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
