"""Secure key release and key attestation (no HTTP here).

Release: the target proves itself with an attestation token from a trusted issuer; the key version
must be exportable, enabled and within nbf/exp, and its release policy must hold for the token's
claims. The key material is then wrapped (`crypto/key_wrap_export.py`) to the RSA key the token
carries in `x-ms-runtime.keys` (the one with kid `TpmEphemeralEncryptionKey`, else the first RSA
key), and put, as Managed HSM does, in `key_hsm`: base64url of
`{"schema_version": "1.0", "header": {"kid": <target key id>, "alg": "dir", "enc": <enc>},
"ciphertext": <base64url blob>}`. The API signs the result with the pool's key.

Attestation (`version` OPENMHSM-1): two statements signed by the pool's key, whose certificate
chain (`certificatePemFile`) leads to the pool CA. `privateKeyAttestation` says the pool holds the
private (or secret) key named `kid` with these properties; `publicKeyAttestation` (RSA and EC)
binds the public JWK and its RFC 7638 thumbprint to that `kid`. Only HSM key types (`-HSM`) are
attested, as Managed HSM attests only HSM keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from openmhsm.auth.attestation import AttestationIssuers, PoolSigner
from openmhsm.auth.external import public_key_from_jwk
from openmhsm.crypto.jwk import b64u_encode, public_jwk
from openmhsm.crypto.key_wrap_export import (
    ALGORITHMS,
    DEFAULT_ENC,
    exported_material,
    wrap_for_export,
)
from openmhsm.errors import BadParameter, Forbidden
from openmhsm.services.keys import KeyService
from openmhsm.services.records import KeyVersion
from openmhsm.services.release_policy import PolicyError, allows, load_policy
from openmhsm.types import JSON, Clock

ATTESTATION_VERSION = "OPENMHSM-1"
TARGET_KEY_ID = "TpmEphemeralEncryptionKey"  # Azure's name for the key a release is wrapped to
MAX_NONCE = 1024


@dataclass(frozen=True, slots=True)
class Released:
    """A key version released to a target: what the response describes and signs."""

    kv: KeyVersion
    enc: str
    nonce: str | None
    key_hsm: str


def _thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace; base64url."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64u_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def target_key(claims: Mapping[str, Any]) -> tuple[str, rsa.RSAPublicKey]:
    """(kid, key) of the RSA key a token's `x-ms-runtime.keys` offers to wrap a release to.

    Raises BadParameter when it offers none.
    """
    runtime = claims.get("x-ms-runtime")
    keys = runtime.get("keys") if isinstance(runtime, Mapping) else None
    candidates = [k for k in keys if isinstance(k, Mapping)] if isinstance(keys, list) else []
    rsa_keys = [k for k in candidates if k.get("kty") == "RSA"]
    preferred = [k for k in rsa_keys if k.get("kid") == TARGET_KEY_ID]
    for jwk in preferred + rsa_keys:
        key = public_key_from_jwk(jwk)
        if isinstance(key, rsa.RSAPublicKey):
            return str(jwk.get("kid", "")), key
    raise BadParameter(
        "The target attestation token carries no RSA key in 'x-ms-runtime.keys' to wrap the "
        "released key to."
    )


class KeyRelease:
    """Releases exportable keys to attested targets, and attests HSM keys."""

    def __init__(
        self,
        keys: KeyService,
        clock: Clock,
        signer: PoolSigner,
        issuers: AttestationIssuers | None = None,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.signer = signer
        self.issuers = issuers

    async def release(self, name: str, version: str | None, params: Mapping[str, Any]) -> Released:
        """The key version wrapped for the target of `params` (`target`, `enc`, `nonce`).

        Raises BadParameter (bad request, no key in the token), KeyNotFound, Forbidden (key not
        releasable, token not trusted or not valid, policy not satisfied or unreadable).
        """
        target, enc, nonce = _release_params(params)
        kv = await self.keys.get(name, version)
        self._check_releasable(kv)
        if self.issuers is None:
            raise Forbidden("This pool trusts no attestation authority; it releases no keys.")
        attested = self.issuers.verify(target)
        try:
            allowed = allows(load_policy(kv.release_policy), attested.issuer, attested.claims)
        except PolicyError as exc:
            raise Forbidden(f"The key's release policy cannot be evaluated: {exc}.") from None
        if not allowed:
            raise Forbidden("The target's attestation does not satisfy the key's release policy.")
        kid, wrapping_key = target_key(attested.claims)
        blob = wrap_for_export(enc, wrapping_key, exported_material(kv.material))
        envelope = {
            "schema_version": "1.0",
            "header": {"kid": kid, "alg": "dir", "enc": enc},
            "ciphertext": b64u_encode(blob),
        }
        key_hsm = b64u_encode(json.dumps(envelope, separators=(",", ":")).encode())
        return Released(kv, enc, nonce, key_hsm)

    def _check_releasable(self, kv: KeyVersion) -> None:
        a = kv.attributes
        if not a.exportable or kv.release_policy is None:
            raise Forbidden("Operation release is not allowed: the key is not exportable.")
        if not a.enabled:
            raise Forbidden("Operation release is not allowed on a disabled key.")
        now = self.clock.now()
        if a.nbf is not None and now < a.nbf:
            raise Forbidden("Operation release is not allowed: the key is not yet valid (nbf).")
        if a.exp is not None and now >= a.exp:
            raise Forbidden("Operation release is not allowed on an expired key.")

    def attest(self, kv: KeyVersion, kid: str) -> JSON:
        """The `attributes.attestation` of a key version; `kid` is its identifier.

        Raises BadParameter for a key type without -HSM.
        """
        if not kv.kty.endswith("-HSM"):
            raise BadParameter(
                f"Key attestation is only available for HSM keys; this key's type is {kv.kty}.",
                inner_code="KeyTypeNotSupported",
            )
        statement = self._statement(kv, kid)
        jwk = public_jwk(kv.material)
        private = {**statement, "attests": "private", "key_ops": list(kv.key_ops)}
        attestation: JSON = {
            "version": ATTESTATION_VERSION,
            "certificatePemFile": b64u_encode(self.signer.chain_pem()),
            "privateKeyAttestation": b64u_encode(self.signer.sign(private).encode()),
        }
        if jwk["kty"] != "oct":
            public = {**statement, "attests": "public", "jwk": jwk}
            attestation["publicKeyAttestation"] = b64u_encode(self.signer.sign(public).encode())
        return attestation

    def _statement(self, kv: KeyVersion, kid: str) -> JSON:
        a = kv.attributes
        jwk = public_jwk(kv.material)
        statement: JSON = {
            "iat": int(self.clock.now()),
            "kid": kid,
            "kty": kv.kty,
            "key_size": kv.material.size,
            "exportable": a.exportable,
            "created": a.created,
        }
        if kv.material.crv is not None:
            statement["crv"] = kv.material.crv
        if jwk["kty"] != "oct":
            statement["jwk_thumbprint"] = _thumbprint(jwk)
        return statement


def _release_params(params: Mapping[str, Any]) -> tuple[str, str, str | None]:
    target = params.get("target")
    if not isinstance(target, str) or not target:
        raise BadParameter("The 'target' field (an attestation token) is required.")
    enc = params.get("enc")
    if enc is None:
        enc = DEFAULT_ENC
    if not isinstance(enc, str) or enc not in ALGORITHMS:
        raise BadParameter(
            f"Invalid enc value: expected one of {', '.join(sorted(ALGORITHMS))}.",
            inner_code="InvalidEncryptionAlgorithm",
        )
    nonce = params.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > MAX_NONCE):
        raise BadParameter(f"The 'nonce' field must be a string of at most {MAX_NONCE} characters.")
    return target, enc, nonce
