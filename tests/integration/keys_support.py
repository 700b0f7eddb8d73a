"""Helpers for the keys data-plane integration tests (imported by them; not a test module).

Every client here is closed when its block ends: an idle keep-alive connection left open makes the
pool's graceful stop wait out its drain timeout, and an unclosed socket is a ResourceWarning,
which `-W error` turns into a failure.
"""

from __future__ import annotations

import base64
import gc
import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from azure.keyvault.keys import JsonWebKey, KeyClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

if TYPE_CHECKING:
    from dev_pool import DevPool

API = {"api-version": "2025-07-01"}
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-256K": ec.SECP256K1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pool_token(pool: DevPool) -> str:
    """A bearer token from the pool's own issuer, for the pool's admin."""
    with pool.credential() as credential:
        return credential.get_token(pool.doc["resource"] + "/.default").token


@contextmanager
def anonymous_client(pool: DevPool) -> Iterator[httpx.Client]:
    """Raw HTTPS trusting the pool's CA (an SSLContext: httpx deprecates `verify=<path>`)."""
    tls = ssl.create_default_context(cafile=pool.ca)
    with httpx.Client(base_url=pool.url, verify=tls, timeout=30) as client:
        yield client


@contextmanager
def raw_client(pool: DevPool, token: str | None = None) -> Iterator[httpx.Client]:
    """Raw HTTPS with a bearer token (the admin's unless one is given)."""
    with anonymous_client(pool) as client:
        client.headers["Authorization"] = f"Bearer {token or pool_token(pool)}"
        yield client


@contextmanager
def sdk_key_client(pool: DevPool) -> Iterator[KeyClient]:
    """A KeyClient with `ClientSecretCredential(authority=pool, disable_instance_discovery=True)`
    and the SDK's default challenge checks (verify_challenge_resource stays on)."""
    with (
        pool.credential() as credential,
        KeyClient(pool.url, credential, connection_verify=pool.ca) as client,
    ):
        yield client
    release_connections()


def release_connections() -> None:
    """Close the connections azure-core leaves open behind error responses.

    An HttpResponseError keeps its response's socket until garbage collection, even after the
    client is closed; pytest keeps exceptions in reference cycles. The pool's graceful stop would
    then wait for that idle TLS connection (see test_keys_restart)."""
    gc.collect()


def assert_kv_error(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """The response is a Key Vault error (`{"error": {"code", "message", "innererror"?}}`)."""
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.status_code >= 400, response.text[:300]
    if response.status_code < 500:  # azure-core would retry a 4xx that carries Retry-After
        assert "retry-after" not in response.headers, response.headers
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    inner = error.get("innererror")
    assert inner is None or (isinstance(inner, dict) and isinstance(inner.get("code"), str)), body
    return error  # type: ignore[no-any-return]


def send_json(
    http: httpx.Client, method: str, path: str, body: Any, params: dict[str, str] | None = None
) -> httpx.Response:
    """Any JSON value as the body (lone surrogates travel escaped, as `json.dumps` writes them)."""
    return http.request(
        method,
        path,
        params=API if params is None else params,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


# --- JWK <-> cryptography -----------------------------------------------------------------


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def rsa_public(jwk: JsonWebKey) -> rsa.RSAPublicKey:
    assert jwk.n is not None and jwk.e is not None
    return rsa.RSAPublicNumbers(_int(jwk.e), _int(jwk.n)).public_key()


def ec_public(jwk: JsonWebKey) -> ec.EllipticCurvePublicKey:
    assert jwk.x is not None and jwk.y is not None and jwk.crv is not None
    curve = CURVES[getattr(jwk.crv, "value", jwk.crv)]
    return ec.EllipticCurvePublicNumbers(_int(jwk.x), _int(jwk.y), curve).public_key()


def _bytes(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or max(1, (n.bit_length() + 7) // 8), "big")


def b64int(n: int) -> str:
    """base64url of an integer's minimal big-endian bytes (a JWK integer field)."""
    return b64u(_bytes(n))


def rsa_jwk(key: rsa.RSAPrivateKey, *, crt: bool = True) -> JsonWebKey:
    """The SDK's JsonWebKey of a private RSA key (with or without the CRT parts)."""
    priv = key.private_numbers()
    pub = priv.public_numbers
    parts: dict[str, Any] = {"n": _bytes(pub.n), "e": _bytes(pub.e), "d": _bytes(priv.d)}
    if crt:
        parts |= {
            "p": _bytes(priv.p),
            "q": _bytes(priv.q),
            "dp": _bytes(priv.dmp1),
            "dq": _bytes(priv.dmq1),
            "qi": _bytes(priv.iqmp),
        }
    return JsonWebKey(kty="RSA", **parts)


def ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str) -> JsonWebKey:
    size = (CURVES[crv].key_size + 7) // 8
    pub = key.public_key().public_numbers()
    return JsonWebKey(
        kty="EC",
        crv=crv,
        x=_bytes(pub.x, size),
        y=_bytes(pub.y, size),
        d=_bytes(key.private_numbers().private_value, size),
    )


def raw_to_der(signature: bytes) -> bytes:
    """A JWS-style ECDSA signature (r||s) as DER."""
    half = len(signature) // 2
    return encode_dss_signature(_int(signature[:half]), _int(signature[half:]))


def der_to_raw(der: bytes, crv: str) -> bytes:
    size = (CURVES[crv].key_size + 7) // 8
    r, s = decode_dss_signature(der)
    return _bytes(r, size) + _bytes(s, size)
