"""ECDSA over a digest (ES256, ES256K, ES384, ES512) with JWS-style raw r||s signatures."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from openmhsm.crypto.jwk import coordinate_size
from openmhsm.errors import BadParameter

# alg -> (curve, hash); each algorithm works on exactly one curve.
_SCHEMES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "ES256": ("P-256", hashes.SHA256()),
    "ES256K": ("P-256K", hashes.SHA256()),
    "ES384": ("P-384", hashes.SHA384()),
    "ES512": ("P-521", hashes.SHA512()),
}
SIGN_ALGORITHMS = frozenset(_SCHEMES)


def sign(key: ec.EllipticCurvePrivateKey, crv: str, alg: str, digest: bytes) -> bytes:
    """Sign a digest; the signature is r||s, each padded to the curve's byte size (66 for P-521).

    Raises BadParameter if the algorithm does not belong to the key's curve or the digest length
    is not the algorithm's hash size.
    """
    hash_alg = _scheme(crv, alg, digest)
    der = key.sign(digest, ec.ECDSA(utils.Prehashed(hash_alg)))
    r, s = utils.decode_dss_signature(der)
    size = coordinate_size(crv)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(
    key: ec.EllipticCurvePrivateKey, crv: str, alg: str, digest: bytes, signature: bytes
) -> bool:
    """Verify an r||s signature. False on any mismatch, including a wrong signature length.

    Raises BadParameter if the algorithm does not belong to the key's curve or the digest length
    is not the algorithm's hash size.
    """
    hash_alg = _scheme(crv, alg, digest)
    size = coordinate_size(crv)
    if len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    der = utils.encode_dss_signature(r, s)
    try:
        key.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(hash_alg)))
    except InvalidSignature:
        return False
    return True


def _scheme(crv: str, alg: str, digest: bytes) -> hashes.HashAlgorithm:
    scheme = _SCHEMES.get(alg)
    if scheme is None:
        raise BadParameter(f"Algorithm {alg} is not an EC signature algorithm")
    curve, hash_alg = scheme
    if curve != crv:
        raise BadParameter(f"Algorithm {alg} is not valid for curve {crv}: it needs {curve}")
    if len(digest) != hash_alg.digest_size:
        raise BadParameter(
            f"Digest for {alg} must be {hash_alg.digest_size} bytes, got {len(digest)}"
        )
    return hash_alg
