"""Tokens of an external OpenID Connect issuer (`mhsm up --trusted-issuer`): accepted once the
principal has a role, refused from an untrusted issuer, with a wrong audience or expired."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from dev_pool import DevPool, free_port, start_pool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.crypto.jwk import b64u_encode, int_to_b64u

CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"


class Issuer:
    """A minimal OIDC issuer over TLS: discovery, JWKS, and tokens minted by the test."""

    def __init__(self, root: Path) -> None:
        ca, ca_key = ensure_pool_ca(root / "issuer-ca")
        self.ca = ca
        cert, key = root / "issuer.pem", root / "issuer.key"
        issue_certificate(ca, ca_key, cert, key, names=["127.0.0.1"], server=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/issuer"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": "k1",
                    "use": "sig",
                    "alg": "RS256",
                    "n": int_to_b64u(numbers.n),
                    "e": int_to_b64u(numbers.e),
                }
            ]
        }

        async def discovery(request: Request) -> JSONResponse:
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/keys"})

        async def keys(request: Request) -> JSONResponse:
            return JSONResponse(jwks)

        app = Starlette(
            routes=[
                Route("/issuer/.well-known/openid-configuration", discovery),
                Route("/issuer/keys", keys),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def token(
        self,
        audience: str,
        subject: str,
        *,
        issuer: str | None = None,
        lifetime: int = 600,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer or self.url,
            "aud": audience,
            "oid": subject,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": "external-app",
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        signing_input = (
            f"{b64u_encode(json.dumps(header).encode())}.{b64u_encode(json.dumps(claims).encode())}"
        )
        signature = (key or self.key).sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{b64u_encode(signature)}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Issuer, DevPool]]:
    root = tmp_path_factory.mktemp("external")
    issuer = Issuer(root)
    pool = start_pool(root, "--trusted-issuer", issuer.url, "--trusted-issuer-ca", str(issuer.ca))
    yield issuer, pool
    pool.stop()
    issuer.stop()


def _client(pool: DevPool, token: str) -> httpx.Client:
    tls = ssl.create_default_context(cafile=pool.ca)
    return httpx.Client(
        base_url=pool.url, verify=tls, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def _assign(pool: DevPool, principal_id: str, role: str) -> None:
    body: dict[str, Any] = {
        "properties": {
            "principalId": principal_id,
            "roleDefinitionId": f"Microsoft.KeyVault/providers/Microsoft.Authorization/"
            f"roleDefinitions/{role}",
        }
    }
    with pool.http() as admin:
        made = admin.put(
            f"/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}?api-version=7.6",
            json=body,
        )
    assert made.status_code == 201, made.text


def test_external_token_works_once_the_principal_has_a_role(
    setup: tuple[Issuer, DevPool],
) -> None:
    issuer, pool = setup
    subject = str(uuid.uuid4())
    token = issuer.token(pool.doc["resource"], subject)
    with _client(pool, token) as http:
        denied = http.post("/keys/ext-key/create?api-version=7.6", json={"kty": "EC-HSM"})
        assert denied.status_code == 403, denied.text
        _assign(pool, subject, CRYPTO_USER)
        made = http.post("/keys/ext-key/create?api-version=7.6", json={"kty": "EC-HSM"})
        assert made.status_code == 200, made.text


def test_untrusted_wrong_audience_and_expired_tokens_get_401(
    setup: tuple[Issuer, DevPool],
) -> None:
    issuer, pool = setup
    subject = str(uuid.uuid4())
    _assign(pool, subject, CRYPTO_USER)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad_tokens = {
        "untrusted issuer": issuer.token(
            pool.doc["resource"], subject, issuer="https://127.0.0.1:1/elsewhere"
        ),
        "forged signature": issuer.token(pool.doc["resource"], subject, key=stranger),
        "wrong audience": issuer.token("https://example.test", subject),
        "expired": issuer.token(pool.doc["resource"], subject, lifetime=-120),
    }
    for why, token in bad_tokens.items():
        with _client(pool, token) as http:
            got = http.get("/keys?api-version=7.6")
        assert got.status_code == 401, (why, got.text)
        assert "WWW-Authenticate" in got.headers
    with _client(pool, issuer.token(pool.doc["resource"], subject)) as http:
        assert http.get("/keys?api-version=7.6").status_code == 200
