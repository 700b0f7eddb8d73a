"""The audit policy in the full app: one line per request, whoever answered it (route, 401
challenge, activation gate, 404 default, token endpoint), with the principal and its issuer when
authenticated, the error code when failed, and never a query string, token, body or secret."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from unit_stack import ISSUER, RESOURCE, TENANT, ApiHarness

from openmhsm.api.app import build_app
from openmhsm.services.audit import AuditLog

API = "api-version=2025-07-01"
AuditLines = Callable[[], list[dict[str, Any]]]


def url(path: str) -> str:
    return f"{path}?{API}"


@pytest.fixture
def audit(api: ApiHarness, tmp_path: Path) -> AuditLines:
    """Rebuild the harness's app with an audit log; returns a reader of its lines."""
    log = AuditLog(tmp_path / "audit", 0)
    api.stack.ctx.audit = log
    api.client.app.app = build_app(api.stack.ctx)  # the harness's late-bound app

    def read() -> list[dict[str, Any]]:
        path = tmp_path / "audit" / "partition-0.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    return read


def raw_text(tmp_path: Path) -> str:
    return (tmp_path / "audit" / "partition-0.jsonl").read_text()


def test_authenticated_call(api: ApiHarness, audit: AuditLines) -> None:
    response = api.client.get(url("/keys") + "&maxresults=5&$skiptoken=c2VjcmV0")
    assert response.status_code == 200
    (line,) = audit()
    admin = api.stack.admin
    assert admin is not None
    assert line["request_id"] == response.headers["x-ms-request-id"]
    assert line["principal"] == {
        "object_id": admin.object_id,
        "client_id": admin.client_id,
        "name": "admin",
    }
    assert line["issuer"] == ISSUER
    assert line["operation"] == "GET /keys"
    assert line["resource"] == "/keys"
    assert line["status"] == 200
    assert "error_code" not in line
    assert line["partition"] == 0
    assert line["client"] == "testclient"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert line["time"].endswith("Z") and line["time"][10] == "T"


def test_denied_calls(api: ApiHarness, audit: AuditLines) -> None:
    api.send_anonymous("POST", url("/keys/k1/create"), json={"kty": "EC"})
    api.client.get(url("/no/such/path"))
    api.client.get("/keys")  # no api-version
    api.client.get(url("/keys/missing/"))
    api.stack.ctx.state = lambda: "NotActivated"
    api.client.get(url("/keys"))
    got = [(x["operation"], x["status"], x.get("error_code"), "principal" in x) for x in audit()]
    assert got == [
        ("POST /keys/{name}/create", 401, "Unauthorized", False),
        ("other", 404, "NotFound", True),
        ("GET /keys", 400, "BadParameter", False),
        ("GET /keys/{name}/", 404, "KeyNotFound", True),
        ("GET /keys", 403, "Forbidden", False),  # the gate answers before authentication
    ]


def test_token_endpoint(api: ApiHarness, audit: AuditLines, tmp_path: Path) -> None:
    principal, secret = api.call(api.stack.principals.create, "app1")
    tokens = []
    for given in ("wrong-secret-value", secret):
        form = {
            "client_id": principal.client_id,
            "client_secret": given,
            "grant_type": "client_credentials",
            "scope": f"{RESOURCE}/.default",
        }
        request = api.client.build_request("POST", f"/{TENANT}/oauth2/v2.0/token", data=form)
        del request.headers["Authorization"]
        response = api.client.send(request)
        if response.status_code == 200:
            tokens.append(response.json()["access_token"])
    assert len(tokens) == 1
    got = [(x["operation"], x["resource"], x["status"], x.get("error_code")) for x in audit()]
    path = f"/{TENANT}/oauth2/v2.0/token"
    assert got == [
        ("POST /{tenant}/oauth2/v2.0/token", path, 401, "invalid_client"),
        ("POST /{tenant}/oauth2/v2.0/token", path, 200, None),
    ]
    text = raw_text(tmp_path)
    for secret_text in (secret, "wrong-secret-value", tokens[0], api.token):
        assert secret_text not in text


def test_no_key_material_or_bodies(api: ApiHarness, audit: AuditLines, tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    d = base64.urlsafe_b64encode(private.private_value.to_bytes(32, "big")).rstrip(b"=").decode()
    pub = private.public_numbers
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": base64.urlsafe_b64encode(pub.x.to_bytes(32, "big")).rstrip(b"=").decode(),
        "y": base64.urlsafe_b64encode(pub.y.to_bytes(32, "big")).rstrip(b"=").decode(),
        "d": d,
    }
    assert api.client.put(url("/keys/imported"), json={"key": jwk}).status_code == 200
    created = api.client.post(url("/openmhsm/principals"), json={"name": "app2"}).json()
    (imported, made) = audit()
    assert imported["operation"] == "PUT /keys/{name}"
    assert imported["resource"] == "/keys/imported"
    assert made["operation"] == "POST /openmhsm/principals" and made["status"] == 201
    text = raw_text(tmp_path)
    for secret_text in (d, created["client_secret"], api.token, "Bearer", API):
        assert secret_text not in text


def test_server_error_is_audited(api: ApiHarness, audit: AuditLines) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    api.stack.ctx.keys.get = broken  # type: ignore[method-assign]
    response = api.client.get(url("/keys/k1/"))
    assert response.status_code == 500
    (line,) = audit()
    assert (line["status"], line["error_code"]) == (500, "InternalError")
