"""Attestation for secure key release: checking the attestation tokens of release targets, and
signing the pool's own statements (release results, key attestations).

A target's token must come from an attestation issuer the pool trusts (`mhsm up
--attestation-issuer URL`; Microsoft Azure Attestation or any OpenID issuer): its `iss` is exactly
a trusted issuer, its signature verifies with that issuer's published key (RS*, PS*, ES*), it has
not expired and is already valid (60 s skew).

The pool signs with the private key of its TLS server certificate, as Managed HSM signs release
results with its TLS key: the JWS header carries the certificate chain (`x5c`, up to the pool CA)
and `kid` = `x5t#S256`, the certificate's SHA-256 thumbprint. With the EC P-256 key `mhsm up`
issues the algorithm is ES256 (Managed HSM's RSA key gives it RS256); an RSA key gives RS256.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from openmhsm.auth.external import IssuerKeys, parse_jwt, verify_signature
from openmhsm.auth.tokens import CLOCK_SKEW, b64url_encode
from openmhsm.errors import BadParameter, Forbidden
from openmhsm.types import Clock

MAX_ATTESTATION_TOKEN = 64 * 1024  # attestation tokens carry reports and keys: larger than ours
_SIGNING_ALGS = ("RS", "PS", "ES")
_EC_ALGS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": ("ES256", hashes.SHA256),
    "secp384r1": ("ES384", hashes.SHA384),
    "secp521r1": ("ES512", hashes.SHA512),
}
SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Attested:
    """A verified attestation token: who issued it and what it claims."""

    issuer: str
    claims: Mapping[str, Any]


class AttestationIssuers:
    """The attestation issuers the pool trusts for secure key release, with their keys."""

    def __init__(self, keys: IssuerKeys, clock: Clock) -> None:
        self.keys = keys
        self._clock = clock

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    def verify(self, token: str) -> Attested:
        """The issuer and claims of a valid attestation token.

        Raises BadParameter for something that is not a JWT, Forbidden for an untrusted issuer,
        an unknown key, a bad signature or a token outside its validity.
        """
        try:
            header, claims, signed, signature = parse_jwt(token, MAX_ATTESTATION_TOKEN)
        except ValueError:
            raise BadParameter("The target attestation token is not a valid JWT.") from None
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or not self.keys.trusts(issuer):
            raise Forbidden("The target attestation token was not issued by a trusted authority.")
        key = self.keys.key(issuer, str(header.get("kid")))
        if key is None:
            raise Forbidden("The target attestation token was signed by an unknown key.")
        alg = str(header.get("alg", ""))
        if (
            "crit" in header
            or not alg.startswith(_SIGNING_ALGS)
            or not verify_signature(key, alg, signed, signature)
        ):
            raise Forbidden("The target attestation token signature is invalid.")
        now = self._clock.now()
        exp, nbf = _time(claims.get("exp")), _time(claims.get("nbf", 0))
        if exp is None or nbf is None:
            raise Forbidden("The target attestation token has no valid 'exp' and 'nbf'.")
        if now > exp + CLOCK_SKEW:
            raise Forbidden("The target attestation token has expired.")
        if now < nbf - CLOCK_SKEW:
            raise Forbidden("The target attestation token is not valid yet.")
        return Attested(issuer.rstrip("/"), claims)


def _time(value: Any) -> float | None:
    """A finite number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return seconds if math.isfinite(seconds) else None


def _thumbprint(cert: x509.Certificate) -> str:
    return b64url_encode(cert.fingerprint(hashes.SHA256()))


class PoolSigner:
    """Signs the pool's statements as compact JWS with a key and its certificate chain."""

    def __init__(self, key: SignerKey, chain: Sequence[x509.Certificate]) -> None:
        if not chain or chain[0].public_key() != key.public_key():
            raise ValueError("the first certificate of the chain must be the signing key's")
        self._key = key
        self.chain = tuple(chain)
        self._hash: type[hashes.HashAlgorithm]
        if isinstance(key, rsa.RSAPrivateKey):
            self.alg, self._hash = "RS256", hashes.SHA256
        elif key.curve.name in _EC_ALGS:
            self.alg, self._hash = _EC_ALGS[key.curve.name]
        else:
            raise ValueError("the signing key must be RSA or EC P-256/384/521")
        self.kid = _thumbprint(chain[0])
        header = {
            "alg": self.alg,
            "kid": self.kid,
            "x5t#S256": self.kid,
            "x5c": [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain
            ],
        }
        self._header = b64url_encode(json.dumps(header, separators=(",", ":")).encode())

    @classmethod
    def from_pem(cls, key_pem: bytes, *cert_pems: bytes) -> PoolSigner:
        """A signer from a PEM private key and PEM certificates, leaf first (`server.key`,
        `server.pem`, `ca.pem`). Raises ValueError for an unusable key or chain."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key must be RSA or EC")
        chain = [cert for pem in cert_pems for cert in x509.load_pem_x509_certificates(pem)]
        return cls(key, chain)

    def chain_pem(self) -> bytes:
        """The certificate chain, leaf first, as concatenated PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def sign(self, payload: Mapping[str, Any]) -> str:
        """`payload` as a compact JWS signed with the pool's key."""
        body = b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
        signed = f"{self._header}.{body}".encode("ascii")
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(signed, padding.PKCS1v15(), self._hash())
        else:
            r, s = decode_dss_signature(self._key.sign(signed, ec.ECDSA(self._hash())))
            size = (self._key.curve.key_size + 7) // 8
            signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return f"{self._header}.{body}.{b64url_encode(signature)}"
