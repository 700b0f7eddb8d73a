"""crypto/algorithms.py: AES key wrap (A*KW, CKM_AES_KEY_WRAP = RFC 3394, CKM_AES_KEY_WRAP_PAD =
RFC 5649) through wrap_key/unwrap_key and encrypt/decrypt: round trips, independent checks against
`cryptography`, and the negative tests (lengths, integrity failures, parameters it does not use).
Wrong key type/size and unknown names are covered for every algorithm in test_crypto_ciphers.py.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import keywrap

from openmhsm.crypto import algorithms as jwa
from openmhsm.crypto.jwk import KeyMaterial
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter, CryptoError

SIZES = {"A128": 128, "A192": 192, "A256": 256}
KW = ["A128KW", "A192KW", "A256KW"]
CKM = ["CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"]


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyMaterial]:
    return {f"oct{bits}": generate_key("oct", size=bits) for bits in (128, 192, 256)}


def oct_key(keys: dict[str, KeyMaterial], alg: str) -> KeyMaterial:
    return keys[f"oct{SIZES.get(alg[:4], 256)}"]


def aes(km: KeyMaterial) -> bytes:
    assert isinstance(km.private, bytes)
    return km.private


WRAP_CASES = [(alg, f"oct{SIZES[alg[:4]]}") for alg in KW] + [
    (alg, f"oct{bits}") for alg in CKM for bits in (128, 192, 256)
]


@pytest.mark.parametrize(("alg", "key_name"), WRAP_CASES)
@pytest.mark.parametrize("length", [16, 24, 32, 64])
def test_key_wrap_round_trip_and_independent_checks(
    keys: dict[str, KeyMaterial], alg: str, key_name: str, length: int
) -> None:
    km, secret = keys[key_name], os.urandom(length)
    wrapped = jwa.wrap_key(km, alg, secret)
    assert jwa.unwrap_key(km, alg, wrapped) == secret
    via_encrypt = jwa.encrypt(km, alg, secret)
    assert via_encrypt.ciphertext == wrapped and via_encrypt.iv is None
    assert jwa.decrypt(km, alg, wrapped) == secret
    if alg == "CKM_AES_KEY_WRAP_PAD":
        assert keywrap.aes_key_unwrap_with_padding(aes(km), wrapped) == secret
        theirs = keywrap.aes_key_wrap_with_padding(aes(km), secret)
    else:
        assert keywrap.aes_key_unwrap(aes(km), wrapped) == secret
        theirs = keywrap.aes_key_wrap(aes(km), secret)
    assert jwa.unwrap_key(km, alg, theirs) == secret


@pytest.mark.parametrize("length", [1, 7, 9, 20, 33])
def test_key_wrap_pad_takes_any_length(keys: dict[str, KeyMaterial], length: int) -> None:
    km, secret = keys["oct192"], os.urandom(length)
    assert (
        jwa.unwrap_key(km, "CKM_AES_KEY_WRAP_PAD", jwa.wrap_key(km, "CKM_AES_KEY_WRAP_PAD", secret))
        == secret
    )


@pytest.mark.parametrize(
    ("alg", "length"), [*((a, n) for a in [*KW, CKM[0]] for n in (0, 8, 15, 20)), (CKM[1], 0)]
)
def test_key_wrap_refuses_lengths_it_cannot_wrap(
    keys: dict[str, KeyMaterial], alg: str, length: int
) -> None:
    with pytest.raises(BadParameter, match="Key to wrap"):
        jwa.wrap_key(oct_key(keys, alg), alg, b"\x01" * length)


@pytest.mark.parametrize(("alg", "key_name"), WRAP_CASES)
def test_unwrap_integrity_failures(keys: dict[str, KeyMaterial], alg: str, key_name: str) -> None:
    km = keys[key_name]
    wrapped = jwa.wrap_key(km, alg, b"\x02" * 32)
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    other = generate_key("oct", size=km.size)
    for key, blob in ((km, tampered), (other, wrapped)):
        with pytest.raises(CryptoError, match="integrity check failed"):
            jwa.unwrap_key(key, alg, blob)
    with pytest.raises(CryptoError):
        jwa.decrypt(km, alg, tampered)


@pytest.mark.parametrize(("alg", "key_name"), WRAP_CASES)
@pytest.mark.parametrize("size", [0, 8, 15, 17, 25])
def test_unwrap_of_impossible_length(
    keys: dict[str, KeyMaterial], alg: str, key_name: str, size: int
) -> None:
    with pytest.raises(BadParameter, match="Wrapped key"):
        jwa.unwrap_key(keys[key_name], alg, b"\x00" * size)


@pytest.mark.parametrize("alg", [*KW, "CKM_AES_KEY_WRAP"])
def test_rfc3394_unwrap_needs_at_least_24_bytes(keys: dict[str, KeyMaterial], alg: str) -> None:
    with pytest.raises(BadParameter, match="at least 24 bytes"):
        jwa.unwrap_key(oct_key(keys, alg), alg, b"\x00" * 16)


@pytest.mark.parametrize("alg", KW + CKM)
def test_key_wrap_refuses_iv_and_aad(keys: dict[str, KeyMaterial], alg: str) -> None:
    with pytest.raises(BadParameter, match="not used by algorithm"):
        jwa.encrypt(oct_key(keys, alg), alg, b"\x00" * 16, iv=b"\x00" * 16)
    with pytest.raises(BadParameter, match="not used by algorithm"):
        jwa.decrypt(oct_key(keys, alg), alg, b"\x00" * 24, aad=b"x")
