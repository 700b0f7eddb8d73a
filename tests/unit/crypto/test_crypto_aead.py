"""crypto/aead.py: AES-256-GCM sealing with the nonce prepended."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.crypto.aead import open_sealed, seal
from openmhsm.errors import BadParameter, CryptoError

KEY = bytes(range(32))


@pytest.mark.parametrize("plaintext", [b"", b"x", b"record" * 1000])
def test_seal_round_trip_and_layout(plaintext: bytes) -> None:
    blob = seal(KEY, plaintext, b"/pool/keys/k1/v1")
    assert len(blob) == 12 + len(plaintext) + 16
    assert open_sealed(KEY, blob, b"/pool/keys/k1/v1") == plaintext
    assert AESGCM(KEY).decrypt(blob[:12], blob[12:], b"/pool/keys/k1/v1") == plaintext


def test_seal_uses_a_fresh_nonce() -> None:
    assert seal(KEY, b"same", b"aad")[:12] != seal(KEY, b"same", b"aad")[:12]


def test_open_accepts_independently_sealed_blob() -> None:
    nonce = b"\x01" * 12
    assert open_sealed(KEY, nonce + AESGCM(KEY).encrypt(nonce, b"data", b"a"), b"a") == b"data"


@pytest.mark.parametrize("change", ["aad", "key", "nonce", "ciphertext", "tag"])
def test_open_detects_any_change(change: str) -> None:
    blob = bytearray(seal(KEY, b"payload", b"/path/a"))
    key, aad = KEY, b"/path/a"
    if change == "aad":
        aad = b"/path/b"
    elif change == "key":
        key = bytes(32)
    else:
        blob[{"nonce": 0, "ciphertext": 13, "tag": -1}[change]] ^= 1
    with pytest.raises(CryptoError, match="failed authentication"):
        open_sealed(key, bytes(blob), aad)


@pytest.mark.parametrize("size", [0, 12, 27])
def test_open_rejects_truncated_blob(size: int) -> None:
    with pytest.raises(CryptoError, match="truncated"):
        open_sealed(KEY, b"\x00" * size, b"")


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(BadParameter, match="32 bytes"):
        seal(b"k" * size, b"x", b"")
    with pytest.raises(BadParameter, match="32 bytes"):
        open_sealed(b"k" * size, b"\x00" * 40, b"")
    with pytest.raises(BadParameter) as err:
        seal(b"k" * size, b"x", b"")
    assert not isinstance(err.value, CryptoError)
