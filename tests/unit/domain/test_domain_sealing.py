"""Sealing the domain secrets to disk: modes, atomic replacement, tampering, wrong keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openmhsm.domain.sealing import UnsealError, seal_to_file, unseal_from_file
from openmhsm.domain.secrets import DomainSecrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_creates_private_files(tmp_path: Path) -> None:
    secrets = DomainSecrets.generate()
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    seal_to_file(secrets, sealed, key)
    assert unseal_from_file(sealed, key) == secrets
    assert _mode(sealed) == 0o600 and _mode(key) == 0o600
    assert len(key.read_bytes()) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seal.key", "sealed"]


def test_sealed_file_never_contains_the_root(tmp_path: Path) -> None:
    secrets = DomainSecrets.generate()
    seal_to_file(secrets, tmp_path / "sealed", tmp_path / "seal.key")
    data = (tmp_path / "sealed").read_bytes()
    assert secrets.root not in data
    assert secrets.root.hex().encode() not in data
    assert secrets.domain_id.encode() not in data
    assert data[0] == 1


def test_resealing_reuses_the_key_and_replaces_the_file(tmp_path: Path) -> None:
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    seal_to_file(DomainSecrets.generate(), sealed, key)
    first_key = key.read_bytes()
    second = DomainSecrets.generate()
    seal_to_file(second, sealed, key)
    assert key.read_bytes() == first_key
    assert unseal_from_file(sealed, key) == second


@pytest.mark.parametrize("index", [0, 1, 13, -1])
def test_tampered_file_fails(tmp_path: Path, index: int) -> None:
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    seal_to_file(DomainSecrets.generate(), sealed, key)
    data = bytearray(sealed.read_bytes())
    data[index] ^= 0x01
    sealed.write_bytes(bytes(data))
    with pytest.raises(UnsealError):
        unseal_from_file(sealed, key)


def test_wrong_seal_key_fails(tmp_path: Path) -> None:
    seal_to_file(DomainSecrets.generate(), tmp_path / "sealed", tmp_path / "a.key")
    seal_to_file(DomainSecrets.generate(), tmp_path / "other", tmp_path / "b.key")
    with pytest.raises(UnsealError, match="does not open"):
        unseal_from_file(tmp_path / "sealed", tmp_path / "b.key")


def test_missing_or_truncated_files_fail(tmp_path: Path) -> None:
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    with pytest.raises(UnsealError):
        unseal_from_file(sealed, key)
    seal_to_file(DomainSecrets.generate(), sealed, key)
    with pytest.raises(UnsealError):
        unseal_from_file(tmp_path / "nothing", key)
    sealed.write_bytes(sealed.read_bytes()[:20])
    with pytest.raises(UnsealError, match="truncated"):
        unseal_from_file(sealed, key)


def test_unknown_version_fails(tmp_path: Path) -> None:
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    seal_to_file(DomainSecrets.generate(), sealed, key)
    sealed.write_bytes(b"\x02" + sealed.read_bytes()[1:])
    with pytest.raises(UnsealError, match="version 2"):
        unseal_from_file(sealed, key)


def test_seal_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    sealed, key = tmp_path / "sealed", tmp_path / "seal.key"
    seal_to_file(DomainSecrets.generate(), sealed, key)
    os.chmod(key, 0o644)
    with pytest.raises(UnsealError, match="0600"):
        unseal_from_file(sealed, key)
    with pytest.raises(UnsealError, match="0600"):
        seal_to_file(DomainSecrets.generate(), sealed, key)


def test_seal_key_of_wrong_size_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "seal.key"
    key.write_bytes(bytes(16))
    os.chmod(key, 0o600)
    with pytest.raises(UnsealError, match="32 bytes"):
        seal_to_file(DomainSecrets.generate(), tmp_path / "sealed", key)
    assert not (tmp_path / "sealed").exists()
