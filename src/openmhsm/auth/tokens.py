"""Access tokens: compact JWS (ES256) JWTs issued and validated by the pool.

Tokens are Entra-ID shaped (`iss`, `aud`, `sub`/`oid`, `appid`, `tid`, `idtyp`...) but opaque to the
SDKs; only this module reads them. Validation is cached by the token's SHA-256 so a request costs no
signature check after the first (DESIGN §6); a cached entry is still re-checked for expiry and
audience. Error messages never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from openmhsm import errors
from openmhsm.types import Clock, Principal

ALGORITHM = "ES256"
CLOCK_SKEW = 60  # seconds of tolerance on exp and nbf, for partitions whose clocks differ a little
MAX_TOKEN_LENGTH = 8192
CACHE_SIZE = 10_000
_COORD = 32  # bytes in a P-256 coordinate and in each half of an ES256 signature
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KIND_CLAIM = "xms_mhsm_kind"


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding. Raises ValueError on any other input."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def b64url_json(text: str) -> Any:
    """The JSON value in one base64url part of a compact JWS. Raises ValueError for anything else,
    JSON nested deeper than the parser can go included (a RecursionError from json)."""
    try:
        return json.loads(b64url_decode(text))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _json_b64(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(_COORD, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_COORD, "big")),
    }


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint of a P-256 public key, base64url."""
    # Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
    canonical = json.dumps(_public_jwk(key), separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class _Validated:
    principal: Principal
    audience: str
    expires_on: int


class TokenService:
    """Issues and validates the pool's access tokens with one P-256 signing key."""

    def __init__(self, signing_key: ec.EllipticCurvePrivateKey, issuer: str, clock: Clock) -> None:
        self.issuer = issuer
        self._peer_issuer: str | None = None
        self._clock = clock
        self._cache: dict[bytes, _Validated] = {}
        self._verifiers: dict[str, ec.EllipticCurvePublicKey] = {}
        self.rotate(signing_key)

    def trust_peer(self, issuer: str | None) -> None:
        """Also accept tokens that name `issuer`: the other region of this pool, which signs with
        the same domain-derived key (DESIGN §8), so a client keeps its token across a failover
        and a forwarded write carries the caller's own token. None trusts no peer."""
        if issuer != self._peer_issuer:
            self._peer_issuer = issuer
            self._cache.clear()  # tokens validated under the old trust are checked anew

    def _trusts(self, issuer: object) -> bool:
        return isinstance(issuer, str) and issuer in (self.issuer, self._peer_issuer)

    def rotate(self, signing_key: ec.EllipticCurvePrivateKey) -> None:
        """Sign with `signing_key` from now on. Tokens signed with earlier keys stay valid until
        they expire (a pool that takes on an uploaded security domain keeps its clients)."""
        if not isinstance(signing_key.curve, ec.SECP256R1):
            raise ValueError("the token signing key must be an EC P-256 key")
        self._key = signing_key
        self._public = signing_key.public_key()
        self.kid = jwk_thumbprint(self._public)
        self._header = _json_b64({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid})
        self._verifiers[self.kid] = self._public

    def issue(
        self, *, principal: Principal, audience: str, tenant_id: str, lifetime: int = 3600
    ) -> tuple[str, int]:
        """A signed token for `principal` and `audience`; returns (token, expires_on epoch)."""
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        now = int(self._clock.now())
        expires_on = now + lifetime
        claims = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "sub": principal.object_id,
            "oid": principal.object_id,
            "appid": principal.client_id,
            "app_displayname": principal.name,
            _KIND_CLAIM: principal.kind,
            "tid": tenant_id,
            "idtyp": "app",
            "jti": secrets.token_urlsafe(16),
        }
        signing_input = f"{self._header}.{_json_b64(claims)}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
        return f"{signing_input}.{b64url_encode(signature)}", expires_on

    def validate(self, token: str, audience_ok: Callable[[str], bool]) -> Principal:
        """The principal a valid token was issued to.

        Checks structure, `alg` (ES256 only), `kid`, signature, `iss`, `aud` (via `audience_ok`),
        `exp` and `nbf` (with 60 s skew). Raises `errors.Unauthorized`; the message never contains
        the token.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise errors.Unauthorized("The access token is malformed.")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock.now()
        cached = self._cache.get(digest)
        if cached is None:
            cached = self._verify(token, now)
            self._remember(digest, cached)
        if now > cached.expires_on + CLOCK_SKEW:
            self._cache.pop(digest, None)
            raise errors.Unauthorized("The access token has expired.")
        if not audience_ok(cached.audience):
            raise errors.Unauthorized("The access token audience is not accepted by this pool.")
        return cached.principal

    def jwks(self) -> dict[str, Any]:
        """The public signing key as a JWK Set."""
        keys = [
            {**_public_jwk(public), "kid": kid, "use": "sig", "alg": ALGORITHM}
            for kid, public in self._verifiers.items()
        ]
        return {"keys": keys}

    def _remember(self, digest: bytes, entry: _Validated) -> None:
        if len(self._cache) >= CACHE_SIZE:
            # Oldest first: dicts keep insertion order, so this is O(1) eviction.
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = entry

    def _verify(self, token: str, now: float) -> _Validated:
        """Full check of a token not seen before; expiry and audience are checked by the caller."""
        malformed = errors.Unauthorized("The access token is malformed.")
        parts = token.split(".")
        if len(parts) != 3:
            raise malformed
        try:
            header = b64url_json(parts[0])
            signature = b64url_decode(parts[2])
        except ValueError:
            raise malformed from None
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
            raise errors.Unauthorized("The access token algorithm is not accepted.")
        kid = header.get("kid")
        public = self._verifiers.get(kid) if isinstance(kid, str) else None
        if public is None or "crit" in header:
            raise errors.Unauthorized("The access token was not signed by this pool.")
        if len(signature) != 2 * _COORD:
            raise errors.Unauthorized("The access token signature is invalid.")
        der = encode_dss_signature(
            int.from_bytes(signature[:_COORD], "big"), int.from_bytes(signature[_COORD:], "big")
        )
        try:
            public.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, UnicodeEncodeError):
            raise errors.Unauthorized("The access token signature is invalid.") from None
        try:
            claims = b64url_json(parts[1])
        except ValueError:
            raise malformed from None
        return self._check_claims(claims, now)

    def _check_claims(self, claims: Any, now: float) -> _Validated:
        if not isinstance(claims, dict) or not self._trusts(claims.get("iss")):
            raise errors.Unauthorized("The access token issuer is not accepted.")
        audience, oid, appid = claims.get("aud"), claims.get("oid"), claims.get("appid")
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not (
            isinstance(audience, str)
            and isinstance(oid, str)
            and isinstance(appid, str)
            and _is_int(exp)
            and _is_int(nbf)
        ):
            raise errors.Unauthorized("The access token is malformed.")
        if now + CLOCK_SKEW < nbf:
            raise errors.Unauthorized("The access token is not valid yet.")
        name, kind = claims.get("app_displayname", ""), claims.get(_KIND_CLAIM, "service")
        principal = Principal(
            object_id=oid,
            client_id=appid,
            name=name if isinstance(name, str) else "",
            kind=kind if isinstance(kind, str) else "service",
            issuer=self.issuer,
        )
        return _Validated(principal=principal, audience=audience, expires_on=exp)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
