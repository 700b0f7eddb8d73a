"""The JWA operation registry and the entry points services call: sign, verify, encrypt, decrypt,
wrap_key, unwrap_key. Each resolves the algorithm name, checks that the key's type and the
operation allow it, and hands over to the per-kty module.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmhsm.crypto import ec as ec_ops
from openmhsm.crypto import oct as oct_ops
from openmhsm.crypto import rsa as rsa_ops
from openmhsm.crypto.jwk import KeyMaterial, KeyType, base_kty
from openmhsm.errors import BadParameter

OPERATIONS = ("sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey")
_SIGN = frozenset({"sign", "verify"})
_CIPHER = frozenset({"encrypt", "decrypt"})
_WRAP = frozenset({"wrapKey", "unwrapKey"})
_CBC_FAMILY = oct_ops.CBC_ALGORITHMS | oct_ops.CBCPAD_ALGORITHMS


@dataclass(frozen=True, slots=True)
class _Entry:
    kty: KeyType
    operations: frozenset[str]


def _entries(kty: KeyType, algs: frozenset[str], ops: frozenset[str]) -> dict[str, _Entry]:
    return {alg: _Entry(kty, ops) for alg in algs}


_REGISTRY = MappingProxyType(
    _entries("RSA", rsa_ops.SIGN_ALGORITHMS, _SIGN)
    | _entries("RSA", rsa_ops.ENCRYPT_ALGORITHMS, _CIPHER | _WRAP)
    | _entries("EC", ec_ops.SIGN_ALGORITHMS, _SIGN)
    | _entries("oct", oct_ops.SIGN_ALGORITHMS, _SIGN)
    | _entries("oct", oct_ops.GCM_ALGORITHMS | _CBC_FAMILY, _CIPHER)
    # Key Vault also accepts the key-wrap names on encrypt/decrypt.
    | _entries("oct", oct_ops.WRAP_ALGORITHMS, _CIPHER | _WRAP)
)


@dataclass(frozen=True, slots=True)
class CipherResult:
    """What encrypt returns: the ciphertext, plus the iv (GCM, CBC) and tag (GCM) if any."""

    ciphertext: bytes
    iv: bytes | None = None
    tag: bytes | None = None


def algorithms_for(kty: str, operation: str) -> frozenset[str]:
    """The algorithm names a key type (with or without "-HSM") allows for an operation.

    Raises BadParameter for an unknown key type or operation.
    """
    base = base_kty(kty)
    if operation not in OPERATIONS:
        raise BadParameter(f"Invalid operation: {str(operation)[:40]}")
    return frozenset(
        alg for alg, e in _REGISTRY.items() if e.kty == base and operation in e.operations
    )


def sign(km: KeyMaterial, alg: str, digest: bytes) -> bytes:
    """Sign a digest (RS*, PS*, RSNULL, ES*) or, for HS*, the value itself.

    Raises BadParameter for an unknown algorithm, one the key type cannot do, or a digest whose
    length does not fit the algorithm.
    """
    _resolve(km, alg, "sign")
    key = km.private
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa_ops.sign(key, alg, digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec_ops.sign(key, _crv(km), alg, digest)
    return oct_ops.sign(key, alg, digest)


def verify(km: KeyMaterial, alg: str, digest: bytes, signature: bytes) -> bool:
    """Check a signature made by `sign`: True if valid, False on any mismatch (wrong length too).

    Raises BadParameter like `sign` does.
    """
    _resolve(km, alg, "verify")
    key = km.private
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa_ops.verify(key, alg, digest, signature)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec_ops.verify(key, _crv(km), alg, digest, signature)
    return oct_ops.verify(key, alg, digest, signature)


def encrypt(
    km: KeyMaterial,
    alg: str,
    plaintext: bytes,
    *,
    iv: bytes | None = None,
    aad: bytes | None = None,
) -> CipherResult:
    """Encrypt with RSA-OAEP(-256)/RSA1_5, A*GCM, A*CBC, A*CBCPAD, or a key-wrap algorithm.

    GCM generates a 12-byte iv when none is given and returns it with the 16-byte tag; CBCPAD
    generates a 16-byte iv when none is given; plain CBC requires one. Raises BadParameter for an
    unknown or unsuitable algorithm, a wrong key/iv size, an iv or aad the algorithm does not
    use, or a plaintext too large (RSA) or unaligned (CBC, key wrap).
    """
    _resolve(km, alg, "encrypt")
    if alg in oct_ops.GCM_ALGORITHMS:
        ciphertext, used_iv, tag = oct_ops.encrypt_gcm(_oct(km), alg, plaintext, iv, aad)
        return CipherResult(ciphertext, used_iv, tag)
    _reject_unused(alg, aad=aad)
    if alg in _CBC_FAMILY:
        ciphertext, used_iv = oct_ops.encrypt_cbc(_oct(km), alg, plaintext, iv)
        return CipherResult(ciphertext, used_iv)
    _reject_unused(alg, iv=iv)
    if alg in oct_ops.WRAP_ALGORITHMS:
        return CipherResult(oct_ops.wrap(_oct(km), alg, plaintext))
    return CipherResult(rsa_ops.encrypt(_rsa(km), alg, plaintext))


def decrypt(
    km: KeyMaterial,
    alg: str,
    ciphertext: bytes,
    *,
    iv: bytes | None = None,
    aad: bytes | None = None,
    tag: bytes | None = None,
) -> bytes:
    """Reverse `encrypt`. GCM requires iv and tag; CBC and CBCPAD require iv.

    Raises BadParameter for malformed input (as `encrypt`, plus a missing iv/tag or a wrong
    ciphertext length) and CryptoError when decryption fails (bad tag, bad padding, bad RSA
    ciphertext, failed unwrap).
    """
    _resolve(km, alg, "decrypt")
    if alg in oct_ops.GCM_ALGORITHMS:
        return oct_ops.decrypt_gcm(_oct(km), alg, ciphertext, iv, aad, tag)
    _reject_unused(alg, aad=aad, tag=tag)
    if alg in _CBC_FAMILY:
        return oct_ops.decrypt_cbc(_oct(km), alg, ciphertext, iv)
    _reject_unused(alg, iv=iv)
    if alg in oct_ops.WRAP_ALGORITHMS:
        return oct_ops.unwrap(_oct(km), alg, ciphertext)
    return rsa_ops.decrypt(_rsa(km), alg, ciphertext)


def wrap_key(km: KeyMaterial, alg: str, key: bytes) -> bytes:
    """Wrap a key: RSA-OAEP(-256)/RSA1_5, A*KW and CKM_AES_KEY_WRAP (RFC 3394), or
    CKM_AES_KEY_WRAP_PAD (RFC 5649).

    Raises BadParameter for an unknown or unsuitable algorithm, a wrapping key of the wrong size,
    or a key to wrap of a length the algorithm cannot take.
    """
    _resolve(km, alg, "wrapKey")
    if alg in oct_ops.WRAP_ALGORITHMS:
        return oct_ops.wrap(_oct(km), alg, key)
    return rsa_ops.encrypt(_rsa(km), alg, key)


def unwrap_key(km: KeyMaterial, alg: str, wrapped: bytes) -> bytes:
    """Reverse `wrap_key`. Raises BadParameter for malformed input and CryptoError when the
    integrity check (AES key wrap) or decryption (RSA) fails.
    """
    _resolve(km, alg, "unwrapKey")
    if alg in oct_ops.WRAP_ALGORITHMS:
        return oct_ops.unwrap(_oct(km), alg, wrapped)
    return rsa_ops.decrypt(_rsa(km), alg, wrapped)


def _resolve(km: KeyMaterial, alg: str, operation: str) -> None:
    entry = _REGISTRY.get(alg) if isinstance(alg, str) else None
    if entry is None:
        raise BadParameter(f"Invalid algorithm: {str(alg)[:40]}")
    if entry.kty != km.kty:
        raise BadParameter(f"Algorithm {alg} is not valid for key type {km.kty}")
    if operation not in entry.operations:
        raise BadParameter(f"Algorithm {alg} is not valid for operation {operation}")


def _reject_unused(alg: str, **params: bytes | None) -> None:
    for name, value in params.items():
        if value is not None:
            raise BadParameter(f"{name} is not used by algorithm {alg}")


def _rsa(km: KeyMaterial) -> rsa.RSAPrivateKey:
    if not isinstance(km.private, rsa.RSAPrivateKey):
        raise BadParameter(f"Key type {km.kty} is not RSA")
    return km.private


def _oct(km: KeyMaterial) -> bytes:
    if not isinstance(km.private, bytes):
        raise BadParameter(f"Key type {km.kty} is not oct")
    return km.private


def _crv(km: KeyMaterial) -> str:
    if km.crv is None:
        raise BadParameter("EC key has no curve")
    return km.crv
