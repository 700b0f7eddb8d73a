"""DomainSecrets: generation, derivation, serialization."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from openmhsm.domain.secrets import DomainSecrets

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
FIXED = DomainSecrets("3f2b6c1e-0000-4000-8000-000000000001", bytes(range(32)))


def test_generate_is_random_with_a_uuid4_id() -> None:
    a, b = DomainSecrets.generate(), DomainSecrets.generate()
    assert uuid.UUID(a.domain_id).version == 4
    assert len(a.root) == 32
    assert (a.domain_id, a.root) != (b.domain_id, b.root)


def test_derive_is_hkdf_sha256_with_an_openmhsm_label() -> None:
    expected = HKDF(hashes.SHA256(), 32, None, b"openmhsm/backup").derive(FIXED.root)
    assert FIXED.backup_key() == FIXED.derive("backup") == expected
    assert FIXED.barrier_key(1) == FIXED.derive("barrier/1")


def test_derived_keys_are_distinct_and_stable() -> None:
    keys = {FIXED.barrier_key(1), FIXED.barrier_key(2), FIXED.backup_key(), FIXED.derive("x")}
    assert len(keys) == 4
    assert DomainSecrets(FIXED.domain_id, FIXED.root).barrier_key(1) == FIXED.barrier_key(1)
    with pytest.raises(ValueError):
        FIXED.barrier_key(0)


def test_token_signing_key_is_deterministic_p256() -> None:
    key = FIXED.token_signing_key()
    assert isinstance(key.curve, ec.SECP256R1)
    scalar = int.from_bytes(FIXED.derive("token-signing"), "big") % (P256_ORDER - 1) + 1
    assert key.private_numbers().private_value == scalar
    same = DomainSecrets(FIXED.domain_id, FIXED.root).token_signing_key()
    assert same.private_numbers() == key.private_numbers()
    other = DomainSecrets.generate().token_signing_key()
    assert other.private_numbers() != key.private_numbers()


def test_round_trip_bytes() -> None:
    data = FIXED.to_bytes()
    assert data[0] == 1
    assert DomainSecrets.from_bytes(data) == FIXED


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        b"\x02" + FIXED.to_bytes()[1:],
        FIXED.to_bytes()[:-1],
        FIXED.to_bytes() + b"\x00",
        b"\x01\x00\x02\xff\xfe" + bytes(32),
        b"\x01\x00\x00" + bytes(32),
    ],
)
def test_from_bytes_rejects_bad_input(data: bytes) -> None:
    with pytest.raises(ValueError):
        DomainSecrets.from_bytes(data)


def test_invalid_secrets_and_repr_hides_root() -> None:
    with pytest.raises(ValueError):
        DomainSecrets("id", bytes(31))
    with pytest.raises(ValueError):
        DomainSecrets("", bytes(32))
    assert "root" not in repr(FIXED) and FIXED.root.hex() not in repr(FIXED)
