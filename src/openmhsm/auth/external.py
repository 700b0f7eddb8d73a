"""Tokens from external OpenID Connect issuers (`mhsm up --trusted-issuer URL`): Entra ID,
Keycloak or any OIDC provider, so their principals can be given roles by object id.

Each issuer's discovery document and JWKS are fetched at start and refreshed every
`REFRESH_SECONDS`, and at once (rate-limited) when a token names a key id we do not know. A token
is accepted when its `iss` is exactly a trusted issuer, its signature verifies with that issuer's
key (RS256/384/512, PS256/384/512 or ES256/384/512), its audience is this pool's resource and it
is within its validity (60 s skew). The principal is the token's `oid` (Entra) or else `sub`.
Validation is cached by the token's SHA-256 like our own tokens.

`IssuerKeys` (discovery + JWKS, refreshed) and `parse_jwt` / `verify_signature` are shared with the
attestation issuers of secure key release (`auth/attestation.py`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from openmhsm import errors
from openmhsm.auth.tokens import CLOCK_SKEW, MAX_TOKEN_LENGTH, b64url_decode, b64url_json
from openmhsm.types import Clock, Principal

log = logging.getLogger(__name__)

REFRESH_SECONDS = 3600.0
MAX_DOCUMENT_BYTES = 1024 * 1024  # a discovery document or JWKS larger than this is refused
MIN_REFETCH_SECONDS = 30.0
CACHE_SIZE = 10_000
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
JwksFetch = Callable[[str], Awaitable[Mapping[str, Any]]]


def unverified_issuer(token: str) -> str | None:
    """The `iss` claim of a JWT, read without checking anything (to choose the validator)."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = b64url_json(parts[1])
    except ValueError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def parse_jwt(
    token: str, max_length: int = MAX_TOKEN_LENGTH
) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS, unverified.

    Raises ValueError for anything but three base64url parts holding two JSON objects.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(token) > max_length:
        raise ValueError("not a compact JWS")
    header, claims = b64url_json(parts[0]), b64url_json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("not a JWT")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


def public_key_from_jwk(jwk: object) -> PublicKey | None:
    """The RSA or EC (P-256/384/521) public key of a JWK, from n/e or x/y, else from the first
    certificate of its `x5c` (as Microsoft Azure Attestation publishes its keys); None if none,
    whatever the value (a JWKS entry that is no object, a certificate of an unknown key type)."""
    if not isinstance(jwk, Mapping):
        return None
    try:
        crv = jwk.get("crv")
        if jwk.get("kty") == "RSA" and "n" in jwk and "e" in jwk:
            n, e = _b64url_int(jwk["n"]), _b64url_int(jwk["e"])
            return rsa.RSAPublicNumbers(e, n).public_key()
        if jwk.get("kty") == "EC" and isinstance(crv, str) and crv in _CURVES and "x" in jwk:
            x, y = _b64url_int(jwk["x"]), _b64url_int(jwk.get("y"))
            return ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]).public_key()
        chain = jwk.get("x5c")
        if isinstance(chain, list) and chain and isinstance(chain[0], str):
            key = x509.load_der_x509_certificate(base64.b64decode(chain[0])).public_key()
            return key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None
    except (ValueError, UnsupportedAlgorithm):
        return None
    return None


def _b64url_int(value: object) -> int:
    """The big-endian integer of a base64url JWK field. Raises ValueError for anything else."""
    if not isinstance(value, str):
        raise ValueError("not a base64url string")
    return int.from_bytes(b64url_decode(value), "big")


def verify_signature(key: PublicKey, alg: str, signed: bytes, signature: bytes) -> bool:
    """Whether `signature` is `alg`'s signature of `signed` under `key` (RS*, PS*, ES* with a
    raw r||s signature). False for any other algorithm or a key of the wrong type."""
    digest = _HASHES.get(alg[2:])
    if digest is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey) and alg.startswith("RS"):
            key.verify(signature, signed, padding.PKCS1v15(), digest)
        elif isinstance(key, rsa.RSAPublicKey) and alg.startswith("PS"):
            pss = padding.PSS(padding.MGF1(digest), padding.PSS.DIGEST_LENGTH)
            key.verify(signature, signed, pss, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and alg.startswith("ES"):
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.verify(der, signed, ec.ECDSA(digest))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class IssuerKeys:
    """The signing keys of a set of OpenID issuers, by issuer and key id.

    Each issuer's discovery document (`<issuer>/.well-known/openid-configuration`) and JWKS
    (`jwks_uri`) are fetched at start and every `REFRESH_SECONDS`, and soon (at most every
    `MIN_REFETCH_SECONDS`) after a lookup misses. `fetch` replaces the HTTPS fetch (tests).
    """

    def __init__(
        self,
        issuers: Sequence[str],
        tls: ssl.SSLContext | None = None,
        *,
        fetch: JwksFetch | None = None,
        label: str = "trusted issuer",
    ) -> None:
        self.issuers = tuple(i.rstrip("/") for i in issuers)
        self._tls = tls or ssl.create_default_context()
        self._fetch = fetch or self._fetch_jwks
        self._label = label
        self._keys: dict[str, dict[str, PublicKey]] = {i: {} for i in self.issuers}
        self._fetched: dict[str, float] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._refetches: set[asyncio.Task[None]] = set()

    def trusts(self, issuer: str) -> bool:
        return issuer.rstrip("/") in self._keys

    def key(self, issuer: str, kid: str) -> PublicKey | None:
        """The issuer's key `kid`, or None (and a refresh soon, for a trusted issuer)."""
        key = self._keys.get(issuer.rstrip("/"), {}).get(kid)
        if key is None:
            self._refetch_soon(issuer.rstrip("/"))
        return key

    async def start(self) -> None:
        for issuer in self.issuers:
            await self.refresh(issuer)
        self._refresher = asyncio.create_task(self._refresh_loop())

    async def stop(self) -> None:
        tasks = [t for t in (self._refresher, *self._refetches) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for issuer in self.issuers:
                await self.refresh(issuer)

    async def _fetch_jwks(self, issuer: str) -> Mapping[str, Any]:
        async with httpx.AsyncClient(verify=self._tls, timeout=5.0) as http:
            config = await self._get_json(http, f"{issuer}/.well-known/openid-configuration")
            return await self._get_json(http, str(config["jwks_uri"]))

    @staticmethod
    async def _get_json(http: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
        response = await http.get(url)
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError("document too large")
        body = response.json()
        if not isinstance(body, Mapping):
            raise ValueError("not a JSON object")
        return body

    async def refresh(self, issuer: str) -> None:
        """Fetch the issuer's discovery document and JWKS; keep the old keys on any failure,
        and on an answer with no usable key (an error body must not unseat good keys)."""
        self._fetched[issuer] = time.monotonic()
        try:
            jwks = await self._fetch(issuer)
            keys = {}
            for jwk in jwks.get("keys", []):
                key = public_key_from_jwk(jwk)
                if key is not None and isinstance(jwk.get("kid"), str):
                    keys[jwk["kid"]] = key
            if not keys and self._keys.get(issuer):
                raise ValueError("no usable keys")
            self._keys[issuer] = keys
            log.info("%s %s: %d signing keys", self._label, issuer, len(keys))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever the issuer sends, the partition goes on
            log.warning("could not refresh the keys of %s %s: %s", self._label, issuer, exc)

    def _refetch_soon(self, issuer: str) -> None:
        if issuer not in self._keys:
            return
        if time.monotonic() - self._fetched.get(issuer, 0.0) < MIN_REFETCH_SECONDS:
            return
        self._fetched[issuer] = time.monotonic()  # one refetch in flight, not one per token
        with contextlib.suppress(RuntimeError):  # no running loop: the next refresh will do
            task = asyncio.get_running_loop().create_task(self.refresh(issuer))
            self._refetches.add(task)
            task.add_done_callback(self._refetches.discard)


@dataclass(frozen=True)
class _Accepted:
    principal: Principal
    audience: str
    expires_on: float


class TrustedIssuers:
    """The external issuers this pool accepts tokens from, with their keys."""

    def __init__(
        self, issuers: Sequence[str], clock: Clock, tls: ssl.SSLContext | None = None
    ) -> None:
        self.keys = IssuerKeys(issuers, tls)
        self.issuers = self.keys.issuers
        self._clock = clock
        self._cache: dict[bytes, _Accepted] = {}

    def trusts(self, issuer: str) -> bool:
        return self.keys.trusts(issuer)

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    async def refresh(self, issuer: str) -> None:
        await self.keys.refresh(issuer)

    def validate(self, token: str, audience_ok: Callable[[str], bool]) -> Principal:
        """The principal of a valid external token. Raises errors.Unauthorized."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock.now()
        accepted = self._cache.get(digest) or self._check(token, now)
        if now > accepted.expires_on + CLOCK_SKEW:
            self._cache.pop(digest, None)
            raise errors.Unauthorized("The access token has expired.")
        if not audience_ok(accepted.audience):
            raise errors.Unauthorized("The access token audience is not accepted by this pool.")
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = accepted
        return accepted.principal

    def _check(self, token: str, now: float) -> _Accepted:
        bad = errors.Unauthorized("The access token is not valid for this pool.")
        try:
            header, claims, signed, signature = parse_jwt(token)
        except ValueError:
            raise bad from None
        iss, kid, alg = claims.get("iss"), header.get("kid"), header.get("alg")
        issuer = iss.rstrip("/") if isinstance(iss, str) else ""
        key = self.keys.key(issuer, kid) if isinstance(kid, str) else None
        if key is None:
            raise errors.Unauthorized("The access token was signed by an unknown key.")
        if "crit" in header or not verify_signature(
            key, alg if isinstance(alg, str) else "", signed, signature
        ):
            raise errors.Unauthorized("The access token signature is invalid.")
        exp, nbf = _epoch(claims.get("exp")), _epoch(claims.get("nbf", 0))
        if exp is None or nbf is None:
            raise bad
        if now < nbf - CLOCK_SKEW:
            raise errors.Unauthorized("The access token is not valid yet.")
        subject = claims.get("oid") or claims.get("sub")
        audience = claims.get("aud")
        if isinstance(audience, list):
            audience = audience[0] if len(audience) == 1 else None
        if not isinstance(subject, str) or not isinstance(audience, str):
            raise bad
        client_id = _first_text(claims.get("appid"), claims.get("azp"), claims.get("client_id"))
        principal = Principal(
            object_id=subject,
            client_id=client_id,
            name=_first_text(claims.get("name"), client_id, subject),
            kind="external",
            issuer=issuer,
        )
        return _Accepted(principal, audience, exp)


def _epoch(value: object) -> float | None:
    """A NumericDate claim in seconds, or None unless it is a finite number (a huge integer,
    or a NaN that would compare false with every time, is no date)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _first_text(*values: object) -> str:
    """The first non-empty string among claim values, else ""."""
    return next((v for v in values if isinstance(v, str) and v), "")
