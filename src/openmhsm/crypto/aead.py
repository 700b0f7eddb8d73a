"""AES-256-GCM sealing of opaque blobs: the one AEAD recipe the barrier and backups use.

A sealed blob is nonce (12 bytes) | ciphertext | tag (16 bytes). The nonce is random; with
96-bit random nonces a key stays within NIST SP 800-38D's limit up to 2**32 seals.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.errors import BadParameter, CryptoError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate plaintext and aad under a 32-byte key; returns nonce|ct|tag.

    Raises BadParameter if the key is not 32 bytes.
    """
    nonce = os.urandom(NONCE_SIZE)
    return nonce + _cipher(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Check and decrypt a blob made by `seal` with the same key and aad.

    Raises BadParameter if the key is not 32 bytes, CryptoError if the blob is truncated or fails
    authentication (wrong key, wrong aad, or tampered bytes).
    """
    cipher = _cipher(key)
    if len(blob) < OVERHEAD:
        raise CryptoError("Sealed data is truncated")
    try:
        return cipher.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise CryptoError("Sealed data failed authentication") from exc


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise BadParameter(f"Sealing key must be {KEY_SIZE} bytes, got {len(key)}")
    return AESGCM(key)
