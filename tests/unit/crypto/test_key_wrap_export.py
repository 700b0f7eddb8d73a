"""key_wrap_export: CKM_RSA_AES_KEY_WRAP and RSA_AES_KEY_WRAP_256/384 for secure key release."""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from openmhsm.crypto.jwk import KeyMaterial
from openmhsm.crypto.key_wrap_export import (
    ALGORITHMS,
    DEFAULT_ENC,
    exported_material,
    unwrap_export,
    wrap_for_export,
)
from openmhsm.errors import BadParameter, CryptoError

OAEP_HASH = {
    "CKM_RSA_AES_KEY_WRAP": hashes.SHA1,
    "RSA_AES_KEY_WRAP_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_384": hashes.SHA384,
}
# RFC 5649 §6: AES key wrap with padding, 192-bit KEK.
KWP_KEK = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
KWP_VECTORS = [
    (
        bytes.fromhex("c37b7e6492584340bed12207808941155068f738"),
        bytes.fromhex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"),
    ),
    (bytes.fromhex("466f7250617369"), bytes.fromhex("afbeb0f07dfbf5419200f2ccb50bb24f")),
]


@functools.cache
def target(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def oaep(enc: str) -> padding.OAEP:
    digest = OAEP_HASH[enc]
    return padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)


def test_the_algorithms_are_azures() -> None:
    assert set(ALGORITHMS) == set(OAEP_HASH)
    assert DEFAULT_ENC == "CKM_RSA_AES_KEY_WRAP"


@pytest.mark.parametrize("enc", sorted(OAEP_HASH))
@pytest.mark.parametrize("size", [1, 16, 32, 1217])
def test_round_trip(enc: str, size: int) -> None:
    material = bytes(range(256)) * 5
    blob = wrap_for_export(enc, target().public_key(), material[:size])
    assert unwrap_export(enc, target(), blob) == material[:size]


@pytest.mark.parametrize("enc", sorted(OAEP_HASH))
def test_layout_is_oaep_aes_key_then_rfc5649(enc: str) -> None:
    """Unwrapped by hand, as a release target's own code does: RSA-OAEP with the named hash for
    both OAEP and MGF1 over the first modulus-length bytes, then AES-KWP."""
    material = b"key material to release"
    blob = wrap_for_export(enc, target().public_key(), material)
    aes_key = target().decrypt(blob[:256], oaep(enc))
    assert len(aes_key) == 32
    assert aes_key_unwrap_with_padding(aes_key, blob[256:]) == material


def test_each_wrap_uses_a_fresh_aes_key() -> None:
    a = wrap_for_export(DEFAULT_ENC, target().public_key(), b"same")
    b = wrap_for_export(DEFAULT_ENC, target().public_key(), b"same")
    assert a[256:] != b[256:]


@pytest.mark.parametrize(("plaintext", "wrapped"), KWP_VECTORS)
def test_rfc5649_vectors_unwrap(plaintext: bytes, wrapped: bytes) -> None:
    blob = target().public_key().encrypt(KWP_KEK, oaep(DEFAULT_ENC)) + wrapped
    assert unwrap_export(DEFAULT_ENC, target(), blob) == plaintext


def test_the_oaep_hash_must_match() -> None:
    blob = wrap_for_export("RSA_AES_KEY_WRAP_256", target().public_key(), b"x" * 32)
    with pytest.raises(CryptoError):
        unwrap_export("RSA_AES_KEY_WRAP_384", target(), blob)
    with pytest.raises(CryptoError):
        unwrap_export(DEFAULT_ENC, target(), blob)


@pytest.mark.parametrize("enc", ["RSA-OAEP", "ckm_rsa_aes_key_wrap", "", "A256KW"])
def test_unknown_algorithms(enc: str) -> None:
    with pytest.raises(BadParameter):
        wrap_for_export(enc, target().public_key(), b"x")
    with pytest.raises(BadParameter):
        unwrap_export(enc, target(), b"x" * 300)


def test_small_targets_and_empty_material_are_refused() -> None:
    with pytest.raises(BadParameter):
        wrap_for_export(DEFAULT_ENC, target(1024).public_key(), b"x")
    with pytest.raises(BadParameter):
        wrap_for_export(DEFAULT_ENC, target().public_key(), b"")


def test_bad_blobs_do_not_unwrap() -> None:
    blob = wrap_for_export(DEFAULT_ENC, target().public_key(), b"y" * 40)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    flipped_first = bytes([blob[0] ^ 1]) + blob[1:]
    flipped_tail = blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:])
    for bad in (blob[:256], blob[:-1], flipped_tail, flipped_first):
        with pytest.raises(CryptoError):
            unwrap_export(DEFAULT_ENC, target(), bad)
    with pytest.raises(CryptoError):
        unwrap_export(DEFAULT_ENC, other, blob)


def test_exported_material_formats() -> None:
    rsa_key = target()
    der = exported_material(KeyMaterial("RSA", rsa_key))
    loaded = serialization.load_der_private_key(der, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == rsa_key.private_numbers()
    assert der.startswith(b"\x30\x82") and b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01" in der[:30]

    ec_key = ec.generate_private_key(ec.SECP256K1())
    loaded_ec = serialization.load_der_private_key(
        exported_material(KeyMaterial("EC", ec_key)), password=None
    )
    assert isinstance(loaded_ec, ec.EllipticCurvePrivateKey)
    assert loaded_ec.private_numbers() == ec_key.private_numbers()

    assert exported_material(KeyMaterial("oct", bytes(range(32)))) == bytes(range(32))
