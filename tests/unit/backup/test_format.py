"""The full-backup format (backup/format.py): sealed record files in key order, the MACed manifest,
and everything a damaged, foreign or altered folder must be refused for."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from openmhsm.backup import format as fmt

BACKUP_KEY = bytes(range(32))
DOMAIN = "domain-1"
BACKUP_ID = "b" * 32


def keys(backup_key: bytes = BACKUP_KEY) -> fmt.BackupKeys:
    return fmt.BackupKeys.from_backup_key(backup_key)


def sample_records() -> list[tuple[str, bytes]]:
    """Keys under several prefixes, names that prefix one another, values of varied sizes."""
    out: list[tuple[str, bytes]] = []
    for name in ("a", "k1", "k10", "k2", "zeta"):
        for version in ("0001", "0002", "@current", "@policy"):
            key = f"keys/{name}/{version}"
            out.append((key, (key * 3).encode()))
    out.append(("deleted/gone", b""))  # an empty value is a value
    out.append(("principals/0c1d", b"\x00\xff" * 40))
    out.append(("rbac/assignments/x", b"{}"))
    out.append(("settings/s", "é€".encode()))
    return sorted(out)


def write(
    records: list[tuple[str, bytes]], chunk_bytes: int = 120
) -> tuple[fmt.Manifest, dict[str, bytes]]:
    writer = fmt.ChunkWriter(keys(), BACKUP_ID, chunk_bytes=chunk_bytes)
    blobs: dict[str, bytes] = {}
    for key, value in records:
        full = writer.add(key, value)
        if full is not None:
            blobs[full[0]] = full[1]
    last = writer.finish()
    if last is not None:
        blobs[last[0]] = last[1]
    manifest = fmt.Manifest(
        backup_id=BACKUP_ID,
        pool="p1",
        domain_id=DOMAIN,
        revision=42,
        created=1_700_000_000,
        counts={"keys": len(records)},
        files=tuple(writer.files),
    )
    return manifest, blobs


def read_all(manifest: fmt.Manifest, blobs: dict[str, bytes]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for entry in manifest.files:
        out += list(fmt.open_file(keys(), manifest, entry, blobs[entry.name]))
    return out


def flipped(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


# --- records files ---------------------------------------------------------------------------


def test_round_trip_across_several_files() -> None:
    records = sample_records()
    manifest, blobs = write(records)
    assert len(manifest.files) >= 4
    assert [f.name for f in manifest.files] == [f"records-{i:05d}.bin" for i in range(len(blobs))]
    assert sorted(blobs) == [f.name for f in manifest.files]
    assert manifest.total == len(records)
    assert read_all(manifest, blobs) == records
    for entry in manifest.files:  # each entry's range and count describe its file
        held = list(fmt.open_file(keys(), manifest, entry, blobs[entry.name]))
        assert (entry.records, entry.first, entry.last) == (len(held), held[0][0], held[-1][0])


def test_one_large_chunk_and_an_empty_writer() -> None:
    records = sample_records()
    manifest, blobs = write(records, chunk_bytes=fmt.CHUNK_BYTES)
    assert len(manifest.files) == 1
    assert read_all(manifest, blobs) == records
    writer = fmt.ChunkWriter(keys(), BACKUP_ID)
    assert writer.finish() is None
    assert writer.files == []


def test_a_record_larger_than_a_chunk_gets_a_file_of_its_own() -> None:
    records = [("keys/a/1", b"x" * 10), ("keys/b/1", b"y" * 1000), ("keys/c/1", b"z")]
    manifest, blobs = write(records, chunk_bytes=100)
    assert [f.records for f in manifest.files] == [2, 1]
    assert read_all(manifest, blobs) == records


@pytest.mark.parametrize(
    "second",
    ["keys/a/1", "keys/a/0", "keys/", "", "k" * (fmt.MAX_KEY + 1)],
    ids=["duplicate", "earlier", "shorter-prefix", "empty", "too-long"],
)
def test_records_must_come_in_key_order(second: str) -> None:
    writer = fmt.ChunkWriter(keys(), BACKUP_ID)
    writer.add("keys/a/1", b"v")
    with pytest.raises(ValueError):
        writer.add(second, b"v")


def test_key_order_holds_across_file_boundaries() -> None:
    writer = fmt.ChunkWriter(keys(), BACKUP_ID, chunk_bytes=1)
    assert writer.add("keys/b/1", b"v") is not None  # a file is full after every record
    with pytest.raises(ValueError):
        writer.add("keys/a/1", b"v")


def test_every_flipped_byte_of_a_records_file_is_refused() -> None:
    manifest, blobs = write(sample_records())
    entry = manifest.files[1]
    data = blobs[entry.name]
    for index in range(len(data)):
        with pytest.raises(fmt.BackupInvalid):
            list(fmt.open_file(keys(), manifest, entry, flipped(data, index)))
    with pytest.raises(fmt.BackupInvalid):  # truncated
        list(fmt.open_file(keys(), manifest, entry, data[:-1]))


def test_the_gcm_tag_guards_a_file_whose_hash_was_rewritten_too() -> None:
    """Whoever can rewrite the manifest's hash still cannot forge a file (nor move one)."""
    manifest, blobs = write(sample_records())
    entry = manifest.files[0]
    bad = flipped(blobs[entry.name], 40)
    forged = dataclasses.replace(entry, sha256=hashlib.sha256(bad).hexdigest())
    with pytest.raises(fmt.BackupInvalid, match="authentication"):
        list(fmt.open_file(keys(), manifest, forged, bad))
    # file 1's bytes presented as file 0: sealed with another name as AAD
    other = blobs[manifest.files[1].name]
    moved = dataclasses.replace(entry, sha256=hashlib.sha256(other).hexdigest())
    with pytest.raises(fmt.BackupInvalid, match="authentication"):
        list(fmt.open_file(keys(), manifest, moved, other))
    # the same file under another backup id
    other_backup = dataclasses.replace(manifest, backup_id="c" * 32)
    with pytest.raises(fmt.BackupInvalid, match="authentication"):
        list(fmt.open_file(keys(), other_backup, entry, blobs[entry.name]))
    # another domain's records key
    with pytest.raises(fmt.BackupInvalid, match="authentication"):
        list(fmt.open_file(keys(b"\x01" * 32), manifest, entry, blobs[entry.name]))


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_wrong_record_count_is_refused(delta: int) -> None:
    manifest, blobs = write(sample_records())
    entry = manifest.files[0]
    wrong = dataclasses.replace(entry, records=entry.records + delta)
    with pytest.raises(fmt.BackupInvalid, match="number of records"):
        list(fmt.open_file(keys(), manifest, wrong, blobs[entry.name]))


# --- the manifest ----------------------------------------------------------------------------


def test_manifest_round_trip() -> None:
    manifest, _ = write(sample_records())
    data = fmt.dump_manifest(keys(), manifest)
    assert fmt.load_manifest(keys(), data, DOMAIN) == manifest
    peeked = fmt.peek_manifest(data)
    assert (peeked["domainId"], peeked["revision"], peeked["format"]) == (DOMAIN, 42, fmt.FORMAT)


def _value_span(data: bytes, field: str) -> range:
    """The byte positions of a top-level string field's value in the dumped manifest."""
    value = json.loads(data)[field]
    start = data.index(f'"{field}": "{value}"'.encode()) + len(field) + 5
    return range(start, start + len(value))


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_every_flipped_byte_of_the_manifest_is_refused(mask: int) -> None:
    manifest, _ = write(sample_records()[:6], chunk_bytes=fmt.CHUNK_BYTES)
    data = fmt.dump_manifest(keys(), manifest)
    domain_bytes = _value_span(data, "domainId")
    foreign = (fmt.DomainMismatch, fmt.BackupInvalid)
    for index in range(len(data)):
        # an altered domain id makes the manifest another domain's: it may be refused as such;
        # any other byte (the "domainId" field name included) makes it invalid
        expected = foreign if index in domain_bytes else (fmt.BackupInvalid,)
        with pytest.raises(expected):
            fmt.load_manifest(keys(), flipped(data, index, mask), DOMAIN)


def test_a_manifest_under_another_key_is_refused() -> None:
    manifest, _ = write(sample_records())
    data = fmt.dump_manifest(keys(b"\x02" * 32), manifest)
    with pytest.raises(fmt.BackupInvalid, match="authentication"):
        fmt.load_manifest(keys(), data, DOMAIN)


def test_a_manifest_of_another_domain_is_a_domain_mismatch() -> None:
    manifest, _ = write(sample_records())
    data = fmt.dump_manifest(keys(), manifest)
    with pytest.raises(fmt.DomainMismatch) as caught:
        fmt.load_manifest(keys(), data, "domain-2")
    assert caught.value.inner_code == "SecurityDomainMismatch"
    assert caught.value.code == "BadParameter" and caught.value.status == 400
    assert not isinstance(caught.value, fmt.BackupInvalid)


@pytest.mark.parametrize(
    "name",
    ["../records-00000.bin", "records-0.bin", "manifest.json", "records-00000.bin/x", "x"],
)
def test_unknown_file_names_in_a_manifest_are_refused(name: str) -> None:
    """Even under a valid MAC: a name is a path in the container, so only ours are read."""
    manifest, _ = write(sample_records())
    files = (dataclasses.replace(manifest.files[0], name=name), *manifest.files[1:])
    data = fmt.dump_manifest(keys(), dataclasses.replace(manifest, files=files))
    with pytest.raises(fmt.BackupInvalid, match="malformed"):
        fmt.load_manifest(keys(), data, DOMAIN)


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b'{"format": 2}', b"\xff\xfe", b'{"format": "1"}']
)
def test_malformed_manifests_are_refused(data: bytes) -> None:
    with pytest.raises(fmt.BackupInvalid):
        fmt.load_manifest(keys(), data, DOMAIN)


@pytest.mark.parametrize("domain", [None, 7, ["domain-1"]], ids=["missing", "number", "list"])
def test_a_manifest_without_a_domain_id_string_is_invalid_not_foreign(domain: Any) -> None:
    """No claim of another domain: reporting SecurityDomainMismatch would send the operator
    looking for a security domain that does not exist."""
    manifest, _ = write(sample_records())
    body = json.loads(fmt.dump_manifest(keys(), manifest))
    body.pop("domainId")
    if domain is not None:
        body["domainId"] = domain
    with pytest.raises(fmt.BackupInvalid):
        fmt.load_manifest(keys(), json.dumps(body).encode(), DOMAIN)


def test_an_oversized_manifest_is_refused_before_parsing() -> None:
    with pytest.raises(fmt.BackupInvalid, match="too large"):
        fmt.load_manifest(keys(), b" " * (fmt.MAX_MANIFEST + 1), DOMAIN)


# --- finding one key's files -----------------------------------------------------------------


def _holding(manifest: fmt.Manifest, blobs: dict[str, bytes], prefix: str) -> list[str]:
    return [
        entry.name
        for entry in manifest.files
        if any(
            k.startswith(prefix)
            for k, _ in fmt.open_file(keys(), manifest, entry, blobs[entry.name])
        )
    ]


def test_files_for_picks_exactly_the_files_holding_a_key() -> None:
    records = sample_records()
    manifest, blobs = write(records, chunk_bytes=150)
    straddling = 0
    for name in ("a", "k1", "k10", "k2", "zeta"):
        prefix = f"keys/{name}/"
        wanted = _holding(manifest, blobs, prefix)
        assert [f.name for f in manifest.files_for(prefix)] == wanted, prefix
        straddling += len(wanted) > 1
    assert straddling, "no key straddles two files: the test lost its edge case"


def test_files_for_a_key_straddling_two_files() -> None:
    records = [(f"keys/a/{i}", b"v" * 20) for i in range(3)]
    records += [(f"keys/b/{i}", b"v" * 20) for i in range(4)]
    records += [(f"keys/c/{i}", b"v" * 20) for i in range(3)]
    manifest, blobs = write(sorted(records), chunk_bytes=100)
    by_prefix = {
        p: [f.name for f in manifest.files_for(p)] for p in ("keys/a/", "keys/b/", "keys/c/")
    }
    assert by_prefix["keys/b/"] == _holding(manifest, blobs, "keys/b/")
    assert len(by_prefix["keys/b/"]) == 2
    assert by_prefix["keys/a/"] == _holding(manifest, blobs, "keys/a/")
    assert by_prefix["keys/c/"] == _holding(manifest, blobs, "keys/c/")


def test_files_for_a_missing_key_is_at_most_the_file_spanning_it() -> None:
    manifest, _ = write(sample_records(), chunk_bytes=150)
    for prefix in ("keys/0/", "keys/k0/", "keys/k3/", "keys/zz/", "zzz/"):
        picked = manifest.files_for(prefix)
        assert len(picked) <= 1
        assert all(f.first < prefix < f.last for f in picked)
    assert manifest.files_for("aaa/") == []
    assert manifest.files_for("zzz/") == []


# --- folder names ----------------------------------------------------------------------------


def test_folder_name_is_utc_to_the_second() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)
    assert fmt.folder_name("p1", when) == "mhsm-p1-20240102030405"
    east = when.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert fmt.folder_name("p1", east) == "mhsm-p1-20240102030405"
    assert fmt.folder_name("p1", when + timedelta(seconds=1)) == "mhsm-p1-20240102030406"
