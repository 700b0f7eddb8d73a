"""The extended region's write gate: reads and crypto pass, every write is refused with 403
`ReadOnlyRegion` naming the primary, and token endpoints never meet it."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from openmhsm.api.app import build_app
from openmhsm.api.region_gate import is_read

API = "api-version=2025-07-01"
PRIMARY = "https://primary.example:8443"
DIGEST = base64.urlsafe_b64encode(hashlib.sha256(b"m").digest()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("method", "path", "read"),
    [
        ("GET", "/keys/k/", True),
        ("HEAD", "/keys", True),
        ("POST", "/keys/k/v1/sign", True),
        ("POST", "/keys/k//decrypt", True),
        ("POST", "/keys/k/v1/unwrapkey", True),
        ("POST", "/keys/k/v1/release", True),
        ("POST", "/rng", True),
        ("POST", "/keys/sign/create", False),
        ("POST", "/keys/k/rotate", False),
        ("PUT", "/keys/sign", False),
        ("PATCH", "/keys/k/", False),
        ("DELETE", "/keys/k", False),
        ("POST", "/securitydomain/download", False),
        ("POST", "/backup", False),
    ],
)
def test_what_counts_as_a_read(method: str, path: str, read: bool) -> None:
    assert is_read(method, path) is read


def read_only(api: Any) -> Any:
    """The same stack, served as an extended region of PRIMARY."""
    api.stack.ctx.read_only = PRIMARY
    api.client.app.app = build_app(api.stack.ctx)
    return api


def test_writes_are_refused_with_read_only_region(api: Any) -> None:
    created = api.client.post(f"/keys/before/create?{API}", json={"kty": "EC-HSM"})
    assert created.status_code == 200, created.text
    read_only(api)
    refused = api.client.post(f"/keys/after/create?{API}", json={"kty": "EC-HSM"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["innererror"]["code"] == "ReadOnlyRegion"
    assert PRIMARY in error["message"]
    deleted = api.client.delete(f"/keys/before?{API}")
    assert deleted.status_code == 403


def test_reads_and_crypto_are_served(api: Any) -> None:
    api.client.post(f"/keys/k/create?{API}", json={"kty": "EC-HSM", "crv": "P-256"})
    read_only(api)
    assert api.client.get(f"/keys/k/?{API}").status_code == 200
    signed = api.client.post(f"/keys/k//sign?{API}", json={"alg": "ES256", "value": DIGEST})
    assert signed.status_code == 200, signed.text


def test_a_stranger_is_challenged_before_the_gate(api: Any) -> None:
    read_only(api)
    response = api.send_anonymous("POST", f"/keys/k/create?{API}", json={"kty": "EC-HSM"})
    assert response.status_code == 401
