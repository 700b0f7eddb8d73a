"""Wrapping key material for export to an RSA public key: PKCS#11's CKM_RSA_AES_KEY_WRAP, as secure
key release uses it (`enc` = CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384).

A fresh AES-256 key is encrypted to the target's RSA key with OAEP (SHA-1, SHA-256 or SHA-384 for
both the OAEP hash and MGF1), then wraps the key material with AES key wrap with padding
(RFC 5649). The blob is `RSA-OAEP(aes key) || AES-KWP(material)`; the first part is as long as the
RSA modulus. The material is PKCS#8 DER for RSA and EC keys and the raw bytes for oct keys.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from openmhsm.crypto.jwk import KeyMaterial
from openmhsm.errors import BadParameter, CryptoError

DEFAULT_ENC = "CKM_RSA_AES_KEY_WRAP"
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "CKM_RSA_AES_KEY_WRAP": hashes.SHA1,
    "RSA_AES_KEY_WRAP_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_384": hashes.SHA384,
}
ALGORITHMS = frozenset(_OAEP_HASHES)
AES_KEY_SIZE = 32
MIN_TARGET_BITS = 2048


def _oaep(enc: str) -> padding.OAEP:
    digest = _OAEP_HASHES.get(enc)
    if digest is None:
        raise BadParameter(
            f"Invalid enc value: expected one of {', '.join(sorted(ALGORITHMS))}.",
            inner_code="InvalidEncryptionAlgorithm",
        )
    return padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)


def exported_material(km: KeyMaterial) -> bytes:
    """The bytes a release wraps: PKCS#8 DER (RSA, EC) or the raw key (oct). Secret."""
    if isinstance(km.private, bytes):
        return km.private
    return km.private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def wrap_for_export(enc: str, target: rsa.RSAPublicKey, material: bytes) -> bytes:
    """`material` wrapped to `target` with `enc`. Raises BadParameter for an unknown `enc`, a
    target under 2048 bits or empty material."""
    oaep = _oaep(enc)
    if target.key_size < MIN_TARGET_BITS:
        raise BadParameter(f"The target's RSA key must have at least {MIN_TARGET_BITS} bits.")
    if not material:
        raise BadParameter("There is no key material to wrap.")
    aes_key = os.urandom(AES_KEY_SIZE)
    return target.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)


def unwrap_export(enc: str, private: rsa.RSAPrivateKey, blob: bytes) -> bytes:
    """The material inside a `wrap_for_export` blob, for the holder of the target's private key.
    Raises BadParameter for an unknown `enc`, CryptoError when the blob does not unwrap."""
    oaep = _oaep(enc)
    size = (private.key_size + 7) // 8
    if len(blob) <= size:
        raise CryptoError("The wrapped key is too short.")
    try:
        aes_key = private.decrypt(blob[:size], oaep)
        return aes_key_unwrap_with_padding(aes_key, blob[size:])
    except (ValueError, InvalidUnwrap):
        raise CryptoError("The wrapped key does not unwrap with this key.") from None
