"""RSA operations: RS*/PS*/RSNULL signatures over a digest, and RSA-OAEP(-256)/RSA1_5 encryption.

Callers (`algorithms.py`) have already checked that the algorithm belongs to RSA.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from openmhsm.errors import BadParameter, CryptoError

_SIGN_HASHES: dict[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
    "PS256": hashes.SHA256(),
    "PS384": hashes.SHA384(),
    "PS512": hashes.SHA512(),
}
SIGN_ALGORITHMS = frozenset([*_SIGN_HASHES, "RSNULL"])
_OAEP_HASHES: dict[str, hashes.HashAlgorithm] = {
    # RSA-OAEP is defined with SHA-1 (RFC 7518 §4.3).
    "RSA-OAEP": hashes.SHA1(),  # noqa: S303  # nosec B303
    "RSA-OAEP-256": hashes.SHA256(),
}
ENCRYPT_ALGORITHMS = frozenset([*_OAEP_HASHES, "RSA1_5"])
_PKCS1_OVERHEAD = 11


def sign(key: rsa.RSAPrivateKey, alg: str, digest: bytes) -> bytes:
    """Sign a digest: RS* = PKCS#1 v1.5, PS* = PSS (MGF1 same hash, salt = digest length),
    RSNULL = PKCS#1 v1.5 over the raw value (no DigestInfo).

    Raises BadParameter when the digest length does not fit the algorithm or key.
    """
    pad, algorithm = _signature_scheme(key, alg, digest)
    return key.sign(digest, pad, algorithm)


def verify(key: rsa.RSAPrivateKey, alg: str, digest: bytes, signature: bytes) -> bool:
    """Verify a signature made by `sign`. False on any mismatch, including a wrong length.

    Raises BadParameter when the digest length does not fit the algorithm or key.
    """
    pad, algorithm = _signature_scheme(key, alg, digest)
    if len(signature) != _modulus_bytes(key):
        return False
    public = key.public_key()
    try:
        if isinstance(algorithm, utils.Prehashed):
            public.verify(signature, digest, pad, algorithm)
            return True
        # RSNULL: no DigestInfo to check, so compare the recovered value itself.
        recovered = public.recover_data_from_signature(signature, pad, None)
    except InvalidSignature:
        return False
    return hmac.compare_digest(recovered, digest)


def encrypt(key: rsa.RSAPrivateKey, alg: str, plaintext: bytes) -> bytes:
    """Encrypt with RSA-OAEP (SHA-1), RSA-OAEP-256 (SHA-256, MGF1 SHA-256) or RSA1_5.

    Raises BadParameter when the plaintext exceeds what the key and padding can hold.
    """
    pad = _encryption_padding(alg)
    limit = max_plaintext_size(key, alg)
    if len(plaintext) > limit:
        raise BadParameter(
            f"Plaintext of {len(plaintext)} bytes is too large for {alg} with a "
            f"{key.key_size}-bit key: at most {limit} bytes"
        )
    return key.public_key().encrypt(plaintext, pad)


def decrypt(key: rsa.RSAPrivateKey, alg: str, ciphertext: bytes) -> bytes:
    """Decrypt a ciphertext made by `encrypt`.

    Raises BadParameter if the ciphertext is not exactly the modulus length, CryptoError if it
    does not decrypt. RSA1_5 uses OpenSSL's implicit rejection (Marvin attack defence): a
    malformed padding returns pseudo-random bytes instead of an error.
    """
    pad = _encryption_padding(alg)
    if len(ciphertext) != _modulus_bytes(key):
        raise BadParameter(
            f"Ciphertext must be {_modulus_bytes(key)} bytes for a {key.key_size}-bit key"
        )
    try:
        return key.decrypt(ciphertext, pad)
    except ValueError as exc:
        raise CryptoError(f"{alg} decryption failed") from exc


def max_plaintext_size(key: rsa.RSAPrivateKey, alg: str) -> int:
    """The largest plaintext `encrypt` accepts for this key and algorithm."""
    size = _modulus_bytes(key)
    if alg == "RSA1_5":
        return size - _PKCS1_OVERHEAD
    return size - 2 * _OAEP_HASHES[alg].digest_size - 2


def _signature_scheme(
    key: rsa.RSAPrivateKey, alg: str, digest: bytes
) -> tuple[padding.AsymmetricPadding, utils.Prehashed | utils.NoDigestInfo]:
    if alg == "RSNULL":
        limit = _modulus_bytes(key) - _PKCS1_OVERHEAD
        if not 1 <= len(digest) <= limit:
            raise BadParameter(f"Value for RSNULL must be 1 to {limit} bytes for this key")
        return padding.PKCS1v15(), utils.NoDigestInfo()
    hash_alg = _SIGN_HASHES.get(alg)
    if hash_alg is None:
        raise BadParameter(f"Algorithm {alg} is not an RSA signature algorithm")
    _check_digest(alg, digest, hash_alg.digest_size)
    if alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        return pss, utils.Prehashed(hash_alg)
    return padding.PKCS1v15(), utils.Prehashed(hash_alg)


def _encryption_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    hash_alg = _OAEP_HASHES.get(alg)
    if hash_alg is None:
        raise BadParameter(f"Algorithm {alg} is not an RSA encryption algorithm")
    return padding.OAEP(mgf=padding.MGF1(hash_alg), algorithm=hash_alg, label=None)


def _check_digest(alg: str, digest: bytes, size: int) -> None:
    if len(digest) != size:
        raise BadParameter(f"Digest for {alg} must be {size} bytes, got {len(digest)}")


def _modulus_bytes(key: rsa.RSAPrivateKey) -> int:
    return (key.key_size + 7) // 8
