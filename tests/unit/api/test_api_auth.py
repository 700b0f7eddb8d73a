"""Authentication at the HTTP edge: the 401 challenge the Azure SDK needs (API §2.1), answered
before the body is read, and which tokens are accepted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openmhsm.auth.tokens import TokenService
from openmhsm.domain.secrets import DomainSecrets

API = "api-version=2025-07-01"
TENANT = "7f3e8a52-0c1d-4b8e-9a6f-2d5c4b3a1e0f"
CHALLENGE = f'Bearer authorization="https://127.0.0.1:8443/{TENANT}", resource="https://0.0.1:8443"'
MISSING = "AKV10000: Request is missing a Bearer or PoP token."

BODY_ROUTES = [
    ("POST", "/keys/k1/create"),
    ("PUT", "/keys/k1"),
    ("PATCH", "/keys/k1/"),
    ("PATCH", "/keys/k1/0123456789abcdef0123456789abcdef"),
    ("POST", "/keys/restore"),
    ("PUT", "/keys/k1/rotationpolicy"),
    ("POST", "/rng"),
    ("POST", "/keys/k1//sign"),
    ("POST", "/keys/k1/0123456789abcdef0123456789abcdef/encrypt"),
    ("POST", "/keys/k1//release"),
]
BODYLESS_ROUTES = [
    ("GET", "/keys"),
    ("GET", "/keys/k1/"),
    ("DELETE", "/keys/k1"),
    ("POST", "/keys/k1/rotate"),
    ("POST", "/keys/k1/backup"),
    ("POST", "/deletedkeys/k1/recover"),
    ("DELETE", "/deletedkeys/k1"),
    ("GET", "/keys/k1//attestation"),
    ("GET", "/no/such/path"),
    ("PUT", "/rng"),
]


def url(path: str) -> str:
    return f"{path}?{API}"


def check_challenge(response: Any, message: str | None = MISSING) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert "Retry-After" not in response.headers
    assert "x-ms-request-id" in response.headers
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    if message is not None:
        assert error["message"] == message


class UnreadBody:
    """A request body that records whether the server ever read it."""

    def __init__(self) -> None:
        self.read = False

    def __iter__(self) -> Iterator[bytes]:
        self.read = True
        yield b'{"kty": "oct", "count": 1, "alg": "A256GCM", "value": "AA"}'


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_missing_token_is_challenged_without_reading_the_body(
    api: Any, method: str, path: str
) -> None:
    body = UnreadBody()
    response = api.send_anonymous(
        method, url(path), content=body, headers={"Content-Type": "application/json"}
    )
    check_challenge(response)
    assert not body.read


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES + BODYLESS_ROUTES)
def test_the_sdk_challenge_request_gets_a_401(api: Any, method: str, path: str) -> None:
    # The SDK's first request: same method and URL, no body, Content-Length: 0 if it had one.
    headers = {"Content-Length": "0"} if (method, path) in BODY_ROUTES else {}
    check_challenge(api.send_anonymous(method, url(path), headers=headers))


def test_challenge_names_the_parent_domain_of_a_dns_host(api: Any) -> None:
    response = api.send_anonymous("GET", url("/keys"), headers={"Host": "hsm1.example.com:8443"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://hsm1.example.com:8443/{TENANT}", '
        'resource="https://example.com:8443"'
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer a b",
        "Bearer abc",
        "Bearer a.b.c",
        "Bearer " + "a" * 9000,
    ],
    ids=repr,
)
def test_unusable_authorization_headers_are_challenged(api: Any, header: str) -> None:
    body = UnreadBody()
    response = api.client.post(
        url("/keys/k1/create"), content=body, headers={"Authorization": header}
    )
    check_challenge(response, message=None)
    assert not body.read


def test_bearer_scheme_is_case_insensitive(api: Any) -> None:
    response = api.client.get(url("/keys"), headers={"Authorization": f"bearer {api.token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "audience",
    [
        "https://127.0.0.1:8443",
        "https://0.0.1",
        "https://0.0.1:8444",
        "https://example.com",
        "https://managedhsm.azure.net",
        "0.0.1:8443",
    ],
)
def test_wrong_audience_is_challenged(api: Any, audience: str) -> None:
    token = api.stack.admin_token(audience=audience)
    body = UnreadBody()
    response = api.client.post(
        url("/keys/k1/create"), content=body, headers={"Authorization": f"Bearer {token}"}
    )
    check_challenge(response, "The access token audience is not accepted by this pool.")
    assert not body.read


def test_audience_with_trailing_slash_is_accepted(api: Any) -> None:
    token = api.stack.admin_token(audience="https://0.0.1:8443/")
    response = api.client.get(url("/keys"), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_token_from_another_pool_is_challenged(api: Any) -> None:
    other = TokenService(
        DomainSecrets.generate().token_signing_key(), api.stack.tokens.issuer, api.stack.clock
    )
    token, _ = other.issue(
        principal=api.stack.admin, audience="https://0.0.1:8443", tenant_id=TENANT
    )
    response = api.client.get(url("/keys"), headers={"Authorization": f"Bearer {token}"})
    check_challenge(response, "The access token was not signed by this pool.")


def test_token_from_another_issuer_is_challenged(api: Any) -> None:
    other = TokenService(
        api.stack.secrets.token_signing_key(), "https://evil.example/t/v2.0", api.stack.clock
    )
    token, _ = other.issue(
        principal=api.stack.admin, audience="https://0.0.1:8443", tenant_id=TENANT
    )
    response = api.client.get(url("/keys"), headers={"Authorization": f"Bearer {token}"})
    check_challenge(response, "The access token issuer is not accepted.")


def test_tampered_token_is_challenged(api: Any) -> None:
    header, claims, signature = api.token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    response = api.client.get(
        url("/keys"), headers={"Authorization": f"Bearer {header}.{claims}.{flipped}"}
    )
    check_challenge(response, message=None)


def test_expired_token_is_challenged(api: Any) -> None:
    token, _ = api.stack.tokens.issue(
        principal=api.stack.admin, audience="https://0.0.1:8443", tenant_id=TENANT, lifetime=600
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get(url("/keys"), headers=headers).status_code == 200
    api.stack.clock.advance(600 + 60)  # within the 60 s clock-skew allowance
    assert api.client.get(url("/keys"), headers=headers).status_code == 200
    api.stack.clock.advance(1)
    check_challenge(api.client.get(url("/keys"), headers=headers), "The access token has expired.")


def test_valid_token_passes(api: Any) -> None:
    assert api.client.get(url("/keys")).status_code == 200
    response = api.client.post(url("/keys/k1/create"), json={"kty": "oct"})
    assert response.status_code == 200, response.text


def test_public_routes_need_no_token(api: Any) -> None:
    for path in ("/healthz", "/readyz", f"/{TENANT}/v2.0/.well-known/openid-configuration"):
        response = api.send_anonymous("GET", path)
        assert response.status_code == 200, path
    assert api.send_anonymous("GET", "/readyz").json()["state"] == "Active"
