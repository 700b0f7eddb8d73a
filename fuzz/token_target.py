"""Fuzz target: access tokens and the headers that carry them: `TokenService.validate`
(auth/tokens.py), `bearer_token` and the Host-header parsing of the 401 challenge
(auth/challenge.py), and the external-issuer readers of auth/external.py (`unverified_issuer`,
`parse_jwt`, `TrustedIssuers.validate`).

Contract: the validators raise only Unauthorized, `parse_jwt` only ValueError, the Host parsers
only BadRequest (`challenge_header` as the auth middleware calls it, with the request's own Host as
the authority, too: its ValueError would be a 500); `bearer_token` and `unverified_issuer` raise
nothing. A token that is valid as built is accepted.
The harness holds both issuers' signing keys, so it signs what it builds and the fuzzer reaches the
claim checks behind the signature.

    .venv/bin/python fuzz/token_target.py -max_total_time=600 /tmp/token-corpus fuzz/corpus/token
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable, Mapping
from typing import Any

import atheris
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

with atheris.instrument_imports(include=["openmhsm"]):
    from openmhsm import errors
    from openmhsm.auth.challenge import bearer_token, challenge_header, resource_for_host
    from openmhsm.auth.external import IssuerKeys, TrustedIssuers, parse_jwt, unverified_issuer
    from openmhsm.auth.tokens import TokenService
    from openmhsm.types import Principal

from structured_inputs import b64u, choices, perturbed, perturbed_bytes, to_json

NOW = 1_700_000_000
ISSUER = "https://127.0.0.1:8443/tenant-1/v2.0"
EXTERNAL_ISSUER = "https://login.example.test/tenant-2/v2.0"
AUDIENCE = "https://0.0.1:8443"
NAMES = ("alg", "typ", "kid", "crit", "aud", "iss", "iat", "nbf", "exp", "sub", "oid", "appid")
NAMES += ("app_displayname", "xms_mhsm_kind", "tid", "idtyp", "jti", "name", "azp", "client_id")
_HASHES = {256: hashes.SHA256(), 384: hashes.SHA384()}


class FixedClock:
    def now(self) -> float:
        return float(NOW)


SIGNING_KEY = ec.derive_private_key(0x0DDBA11, ec.SECP256R1())
SERVICE = TokenService(SIGNING_KEY, ISSUER, FixedClock())
EXTERNAL_KEYS = {
    "ext-p256": ec.derive_private_key(0xC0FFEE, ec.SECP256R1()),
    "ext-p384": ec.derive_private_key(0xBADC0DE, ec.SECP384R1()),
}


def _public_jwk(kid: str, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    size = (key.curve.key_size + 7) // 8
    point = key.public_key().public_numbers()
    crv = f"P-{key.curve.key_size}"
    x, y = (b64u(v.to_bytes(size, "big")) for v in (point.x, point.y))
    return {"kty": "EC", "crv": crv, "x": x, "y": y, "kid": kid}


async def _external_jwks(issuer: str) -> Mapping[str, Any]:
    return {"keys": [_public_jwk(kid, key) for kid, key in EXTERNAL_KEYS.items()]}


NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used: no network, the keys are in hand
TRUSTED = TrustedIssuers([EXTERNAL_ISSUER], FixedClock(), NO_TLS)
TRUSTED.keys = IssuerKeys([EXTERNAL_ISSUER], NO_TLS, fetch=_external_jwks)
asyncio.run(TRUSTED.refresh(EXTERNAL_ISSUER))

OWN_HEADER = {"alg": "ES256", "typ": "JWT", "kid": SERVICE.kid}
OWN_CLAIMS = {
    "aud": AUDIENCE,
    "iss": ISSUER,
    "iat": NOW,
    "nbf": NOW,
    "exp": NOW + 3600,
    "sub": "0b3e5c1e-8a43-4b1e-9f7e-0d6f6f0c1a11",
    "oid": "0b3e5c1e-8a43-4b1e-9f7e-0d6f6f0c1a11",
    "appid": "5a1f7a7e-2c1d-4d9e-8b4e-1e2f3a4b5c6d",
    "app_displayname": "app-1",
    "xms_mhsm_kind": "service",
    "tid": "tenant-1",
    "idtyp": "app",
    "jti": "bm90IGEgcmVwbGF5",
}
EXTERNAL_CLAIMS = {
    "iss": EXTERNAL_ISSUER,
    "aud": [AUDIENCE],
    "nbf": NOW - 60,
    "exp": NOW + 3600,
    "oid": "7d4e2a6c-1f3b-4c5d-8e9f-0a1b2c3d4e5f",
    "azp": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
    "name": "external app",
}


def audience_ok(audience: str) -> bool:
    return audience == AUDIENCE


def signed_token(
    fdp: atheris.FuzzedDataProvider,
    header: dict[str, Any],
    claims: dict[str, Any],
    key: ec.EllipticCurvePrivateKey,
) -> tuple[str, bool]:
    """(a JWS of the changed header and claims signed with `key`, whether nothing changed)."""
    changed_header = perturbed(header, fdp, NAMES)
    changed_claims = perturbed(claims, fdp, NAMES)
    encoded = [b64u(to_json(part).encode()) for part in (changed_header, changed_claims)]
    signing_input = ".".join(encoded)
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(_HASHES[key.curve.key_size]))
    size = (key.curve.key_size + 7) // 8
    raw = b"".join(v.to_bytes(size, "big") for v in decode_dss_signature(der))
    signature = perturbed_bytes(raw, fdp)
    token = f"{signing_input}.{b64u(signature)}"
    intact = (
        signature == raw
        and to_json(changed_header) == to_json(header)
        and to_json(changed_claims) == to_json(claims)
    )
    return token, intact


def expect(errors_allowed: tuple[type[Exception], ...], call: Callable[[], Any]) -> Any:
    try:
        return call()
    except errors_allowed:
        return None


def check_token(token: str) -> tuple[Principal | None, Principal | None]:
    """Everything the auth middleware does with a token: (own principal, external principal)."""
    unverified_issuer(token)
    expect((ValueError,), lambda: parse_jwt(token))
    own = expect((errors.Unauthorized,), lambda: SERVICE.validate(token, audience_ok))
    external = expect((errors.Unauthorized,), lambda: TRUSTED.validate(token, audience_ok))
    return own, external


def check_host(header: str) -> None:
    """A Host header as the middleware uses it for a 401 (raw, as the server hands it over: the
    value without its surrounding spaces and tabs). BadRequest is the only way to refuse it."""
    host = header.strip(" \t")
    expect((errors.BadRequest,), lambda: resource_for_host(host))
    expect((errors.BadRequest,), lambda: challenge_header(host, f"https://{host}", "tenant-1"))


def check_document(data: bytes) -> None:
    """The bytes as an Authorization header, as a bare token, and as a Host header."""
    header = data.decode("latin-1")  # as Starlette reads a header value
    token = bearer_token(header)
    for text in {header, data.decode("utf-8", "replace"), token or ""}:
        check_token(text)
    check_host(header)


def check_built(fdp: atheris.FuzzedDataProvider) -> None:
    """A valid token of ours or of the external issuer, changed as the input chooses."""
    external = fdp.ConsumeBool()
    if external:
        kid = fdp.PickValueInList(list(EXTERNAL_KEYS))
        alg = "ES256" if kid == "ext-p256" else "ES384"
        header_template = {"alg": alg, "typ": "JWT", "kid": kid}
        token, intact = signed_token(fdp, header_template, EXTERNAL_CLAIMS, EXTERNAL_KEYS[kid])
    else:
        token, intact = signed_token(fdp, OWN_HEADER, OWN_CLAIMS, SIGNING_KEY)
    scheme = fdp.PickValueInList(["Bearer", "bearer", "BEARER", "Basic", "Bearer\t"])
    carried = bearer_token(f"{scheme} {token}")
    own, by_external = check_token(carried or token)
    if intact and carried is not None:
        assert (by_external if external else own) is not None, "a valid token was refused"


def TestOneInput(data: bytes) -> None:
    fdp = choices(data)
    if fdp is None:
        check_document(data)
    else:
        check_built(fdp)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
