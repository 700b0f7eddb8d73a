"""Authentication on the keys data plane: a request without a valid token gets 401 with a
`WWW-Authenticate` challenge the Azure SDK can parse (API §2.1), before its body or path is looked
at; forged, expired, misdirected or mangled tokens are refused the same way.

Expiry of a genuinely pool-signed token needs a clock we control: that is covered by
tests/unit/auth/test_auth_tokens.py (test_expiry_with_skew, test_expired_when_first_seen,
test_audience_checked_even_when_cached)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from keys_support import (
    API,
    anonymous_client,
    assert_kv_error,
    b64u,
    der_to_raw,
    pool_token,
    release_connections,
    unb64u,
)

if TYPE_CHECKING:
    from dev_pool import DevPool


@pytest.fixture(scope="module")
def token(dev_pool: DevPool) -> str:
    return pool_token(dev_pool)


@pytest.fixture(scope="module")
def anon(dev_pool: DevPool) -> Iterator[httpx.Client]:
    with anonymous_client(dev_pool) as client:
        yield client


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters as azure-keyvault's ChallengeAuthPolicy reads them (API §2.1.4)."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer" and rest, header
    params = {}
    for item in rest.split(","):
        parts = item.split("=")
        assert len(parts) == 2, f"challenge value holds ',' or '=': {header}"
        params[parts[0].strip()] = parts[1].strip().strip('"')
    return params


def assert_challenge(response: httpx.Response, pool: DevPool) -> None:
    assert_kv_error(response, 401)
    assert response.json()["error"]["code"] == "Unauthorized"
    params = parse_challenge(response.headers["WWW-Authenticate"])
    assert params["authorization"] == f"{pool.url}/{pool.doc['tenant_id']}"
    assert params["resource"] == pool.doc["resource"]
    assert pool.url.split("//")[1].endswith("." + params["resource"].split("//")[1])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/keys", None),
        ("GET", "/keys/some-key/", None),
        ("POST", "/keys/some-key/create", b'{"kty": "EC-HSM"}'),
        ("POST", "/keys/some-key/create", b"{not json at all"),
        ("PUT", "/keys/a_b", b"[]"),
        ("POST", "/keys/k//sign", b""),
        ("POST", "/rng", b'{"count": 0}'),
        ("DELETE", "/deletedkeys/x", None),
        ("GET", "/no/such/path", None),
    ],
)
def test_no_token_gets_challenge_before_body_or_path(
    dev_pool: DevPool, anon: httpx.Client, method: str, path: str, body: bytes | None
) -> None:
    r = anon.request(method, path, params=API, content=body)
    assert_challenge(r, dev_pool)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(unb64u(token.split(".")[1]))
    return claims


def _sign_jwt(
    header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey
) -> str:
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    return f"{signing_input}.{b64u(der_to_raw(der, 'P-256'))}"


def _header(alg: str) -> str:
    return b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())


def _forgeries(token: str) -> dict[str, str]:
    header = json.loads(unb64u(token.split(".")[0]))
    claims = _claims(token)
    mine = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    expired = {**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    wrong_aud = {**claims, "aud": "https://elsewhere.example:443"}
    head, _, signature = token.split(".")

    def payload(c: dict[str, Any]) -> str:
        return b64u(json.dumps(c).encode())

    return {
        "forged-signature": _sign_jwt(header, claims, mine),
        "forged-expired": _sign_jwt(header, expired, mine),
        "forged-wrong-audience": _sign_jwt(header, wrong_aud, mine),
        "genuine-signature-altered-audience": f"{head}.{payload(wrong_aud)}.{signature}",
        "genuine-signature-altered-expiry": f"{head}.{payload(expired)}.{signature}",
        "alg-none": f"{_header('none')}.{payload(claims)}.",
        "alg-hs256-with-public-key": f"{_header('HS256')}.{payload(claims)}.{signature}",
        "truncated": token[:-10],
        "garbage": "not-a-token",
        "three-empty-parts": "..",
        "oversized": "a" * 12_000,  # over the token limit (8 KiB), under the head limit
    }


FORGERY_NAMES = [
    "forged-signature",
    "forged-expired",
    "forged-wrong-audience",
    "genuine-signature-altered-audience",
    "genuine-signature-altered-expiry",
    "alg-none",
    "alg-hs256-with-public-key",
    "truncated",
    "garbage",
    "three-empty-parts",
    "oversized",
]


@pytest.mark.parametrize("kind", FORGERY_NAMES)
def test_invalid_tokens_are_rejected(
    dev_pool: DevPool, anon: httpx.Client, token: str, kind: str
) -> None:
    bad = _forgeries(token)[kind]
    r = anon.get("/keys", params=API, headers={"Authorization": f"Bearer {bad}"})
    assert_challenge(r, dev_pool)
    assert bad[:40] not in r.text, "the error must not echo the token"


def test_a_token_past_the_request_head_limit_gets_431(anon: httpx.Client) -> None:
    bad = "a" * 20_000
    r = anon.get("/keys", params=API, headers={"Authorization": f"Bearer {bad}"})
    assert r.status_code == 431 and r.json()["error"]["code"] == "RequestHeaderFieldsTooLarge"
    assert bad[:40] not in r.text


def test_other_schemes_and_malformed_headers(
    dev_pool: DevPool, anon: httpx.Client, token: str
) -> None:
    for value in (
        f"Basic {token}",
        f"Bearer{token}",
        "Bearer",
        f"Bearer {token} x",
        f"PoP {token}",
    ):
        r = anon.get("/keys", params=API, headers={"Authorization": value})
        assert_challenge(r, dev_pool)


def test_genuine_token_works(anon: httpx.Client, token: str) -> None:
    r = anon.get("/keys", params=API, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    r = anon.get("/keys", params=API, headers={"Authorization": f"bearer {token}"})
    assert r.status_code == 200, "the scheme is case-insensitive"


class _ForgedCredential:
    """A credential that hands the SDK a token the pool did not sign."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_sdk_with_forged_token_raises_client_authentication_error(
    dev_pool: DevPool, token: str
) -> None:
    forged = _forgeries(token)["forged-signature"]
    with (
        KeyClient(dev_pool.url, _ForgedCredential(forged), connection_verify=dev_pool.ca) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.get_key("anything")
    release_connections()
