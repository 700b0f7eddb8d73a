"""Symmetric (oct) operations: HMAC (HS*), AES-GCM, AES-CBC, AES-CBC-PKCS7 and AES key wrap.

Callers (`algorithms.py`) have already checked that the algorithm belongs to oct keys.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.errors import BadParameter, CryptoError

_HMAC_HASHES = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
SIGN_ALGORITHMS = frozenset(_HMAC_HASHES)
GCM_ALGORITHMS = frozenset({"A128GCM", "A192GCM", "A256GCM"})
CBC_ALGORITHMS = frozenset({"A128CBC", "A192CBC", "A256CBC"})
CBCPAD_ALGORITHMS = frozenset({"A128CBCPAD", "A192CBCPAD", "A256CBCPAD"})
WRAP_ALGORITHMS = frozenset(
    {"A128KW", "A192KW", "A256KW", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"}
)
GCM_IV_SIZE = 12
GCM_TAG_SIZE = 16
BLOCK_SIZE = 16
_AES_KEY_SIZES = (16, 24, 32)


def sign(key: bytes, alg: str, value: bytes) -> bytes:
    """HMAC (HS256/HS384/HS512) of the value itself. Raises BadParameter for an empty value."""
    if not value:
        raise BadParameter(f"Value for {alg} must not be empty")
    return hmac.digest(key, value, _HMAC_HASHES[alg])


def verify(key: bytes, alg: str, value: bytes, signature: bytes) -> bool:
    """Compare an HMAC in constant time. False on mismatch; BadParameter for an empty value."""
    return hmac.compare_digest(sign(key, alg, value), signature)


def encrypt_gcm(
    key: bytes, alg: str, plaintext: bytes, iv: bytes | None, aad: bytes | None
) -> tuple[bytes, bytes, bytes]:
    """AES-GCM encrypt; returns (ciphertext, iv, 16-byte tag). A missing iv is generated.

    Raises BadParameter if the key size does not match the algorithm or a given iv is not
    12 bytes.
    """
    _check_key(key, alg)
    iv = os.urandom(GCM_IV_SIZE) if iv is None else iv
    _check_length("iv", iv, GCM_IV_SIZE, alg)
    sealed = AESGCM(key).encrypt(iv, plaintext, aad)
    return sealed[:-GCM_TAG_SIZE], iv, sealed[-GCM_TAG_SIZE:]


def decrypt_gcm(
    key: bytes, alg: str, ciphertext: bytes, iv: bytes | None, aad: bytes | None, tag: bytes | None
) -> bytes:
    """AES-GCM decrypt. Raises BadParameter for a wrong key size or a missing/wrong-length iv or
    tag, CryptoError if the tag does not authenticate the ciphertext, iv and aad.
    """
    _check_key(key, alg)
    _check_length("iv", iv, GCM_IV_SIZE, alg)
    _check_length("tag", tag, GCM_TAG_SIZE, alg)
    assert iv is not None and tag is not None
    try:
        return AESGCM(key).decrypt(iv, ciphertext + tag, aad)
    except InvalidTag as exc:
        raise CryptoError(f"{alg} decryption failed: authentication tag mismatch") from exc


def encrypt_cbc(key: bytes, alg: str, plaintext: bytes, iv: bytes | None) -> tuple[bytes, bytes]:
    """AES-CBC encrypt; returns (ciphertext, iv). A*CBCPAD pads with PKCS#7 and generates a
    missing iv; plain A*CBC requires an iv and a plaintext that is a multiple of 16 bytes.

    Raises BadParameter for a wrong key size, a missing or wrong-length iv, or an unaligned
    plaintext.
    """
    _check_key(key, alg)
    padded = alg in CBCPAD_ALGORITHMS
    if iv is None and padded:
        iv = os.urandom(BLOCK_SIZE)
    _check_length("iv", iv, BLOCK_SIZE, alg)
    assert iv is not None
    if padded:
        padder = symmetric_padding.PKCS7(BLOCK_SIZE * 8).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    elif len(plaintext) % BLOCK_SIZE:
        raise BadParameter(f"Plaintext for {alg} must be a multiple of {BLOCK_SIZE} bytes")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize(), iv


def decrypt_cbc(key: bytes, alg: str, ciphertext: bytes, iv: bytes | None) -> bytes:
    """AES-CBC decrypt, removing PKCS#7 padding for A*CBCPAD.

    Raises BadParameter for a wrong key size, a missing or wrong-length iv, or a ciphertext that
    is not a (non-zero, for CBCPAD) multiple of 16 bytes; CryptoError for bad padding.
    """
    _check_key(key, alg)
    _check_length("iv", iv, BLOCK_SIZE, alg)
    assert iv is not None
    padded = alg in CBCPAD_ALGORITHMS
    if len(ciphertext) % BLOCK_SIZE or (padded and not ciphertext):
        raise BadParameter(f"Ciphertext for {alg} must be a multiple of {BLOCK_SIZE} bytes")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    if not padded:
        return plaintext
    unpadder = symmetric_padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(plaintext) + unpadder.finalize()
    except ValueError as exc:
        raise CryptoError(f"{alg} decryption failed: invalid padding") from exc


def wrap(key: bytes, alg: str, plaintext_key: bytes) -> bytes:
    """AES key wrap: A*KW and CKM_AES_KEY_WRAP are RFC 3394, CKM_AES_KEY_WRAP_PAD is RFC 5649.

    Raises BadParameter for a key size that does not match A*KW, or a key to wrap that RFC 3394
    cannot take (shorter than 16 bytes or not a multiple of 8) or that is empty (RFC 5649).
    """
    _check_key(key, alg)
    if alg == "CKM_AES_KEY_WRAP_PAD":
        if not plaintext_key:
            raise BadParameter(f"Key to wrap with {alg} must not be empty")
        return keywrap.aes_key_wrap_with_padding(key, plaintext_key)
    if len(plaintext_key) < 16 or len(plaintext_key) % 8:
        raise BadParameter(f"Key to wrap with {alg} must be at least 16 bytes, a multiple of 8")
    return keywrap.aes_key_wrap(key, plaintext_key)


def unwrap(key: bytes, alg: str, wrapped: bytes) -> bytes:
    """Reverse `wrap`. Raises BadParameter for a wrong key size or a wrapped length that cannot
    be valid, CryptoError when the integrity check fails.
    """
    _check_key(key, alg)
    minimum = 16 if alg == "CKM_AES_KEY_WRAP_PAD" else 24
    if len(wrapped) < minimum or len(wrapped) % 8:
        raise BadParameter(
            f"Wrapped key for {alg} must be at least {minimum} bytes, a multiple of 8"
        )
    try:
        if alg == "CKM_AES_KEY_WRAP_PAD":
            return keywrap.aes_key_unwrap_with_padding(key, wrapped)
        return keywrap.aes_key_unwrap(key, wrapped)
    except keywrap.InvalidUnwrap as exc:
        raise CryptoError(f"{alg} unwrap failed: integrity check failed") from exc


def required_key_size(alg: str) -> int | None:
    """Key size in bytes an AES algorithm name demands (A128*=16 ...), None if any AES size."""
    for prefix, size in (("A128", 16), ("A192", 24), ("A256", 32)):
        if alg.startswith(prefix):
            return size
    return None


def _check_key(key: bytes, alg: str) -> None:
    required = required_key_size(alg)
    if required is None:
        if len(key) not in _AES_KEY_SIZES:
            raise BadParameter(f"Algorithm {alg} requires an AES key of 128, 192 or 256 bits")
    elif len(key) != required:
        raise BadParameter(
            f"Algorithm {alg} requires a {required * 8}-bit key; this key is {len(key) * 8} bits"
        )


def _check_length(name: str, value: bytes | None, size: int, alg: str) -> None:
    if value is None:
        raise BadParameter(f"{name} is required for {alg}")
    if len(value) != size:
        raise BadParameter(f"{name} for {alg} must be {size} bytes, got {len(value)}")
