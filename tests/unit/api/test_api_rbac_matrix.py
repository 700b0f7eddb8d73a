"""The RBAC matrix (issue 5, "Done when"): for each built-in role, and a custom role with
`notDataActions`, and every data-plane operation, a call succeeds past authorization if and only if
the role grants the operation's data action at the assignment's scope.

One in-process stack per role. The bootstrap admin (Managed HSM Administrator) assigns the role
through the REST API to three fresh principals: at `/`, at `/keys`, and at `/keys/k1`. Each calls
every operation of the one table (`auth/authorize.py`) on keys k1 and k2; a denial is exactly a
403 `ForbiddenByRbac`, and an allowed call may fail later for its own reasons (404, 400...).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from openmhsm.api.app import build_app
from openmhsm.auth import roles
from openmhsm.auth.authorize import OPERATIONS, request_scope
from openmhsm.errors import Conflict

API = "api-version=7.6"
AUTHZ = "/providers/Microsoft.Authorization"
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
TENANT = "7f3e8a52-0c1d-4b8e-9a6f-2d5c4b3a1e0f"
P = roles.PREFIX
VERSION = "0123456789abcdef0123456789abcdef"
NO_SIGN_NO_PURGE = "0b5e2a4c-1d3f-4a6b-8c9d-0e1f2a3b4c5d"
CUSTOM_BODY = {
    "properties": {
        "roleName": "keys but no signing or purging",
        "permissions": [
            {
                "dataActions": [P + "keys/*", P + "rng/action"],
                "notDataActions": [P + "keys/sign/action", P + "keys/deletedKeys/delete"],
            }
        ],
    }
}
CUSTOM_ROLE = roles.RoleDefinition(
    NO_SIGN_NO_PURGE,
    "custom",
    "",
    (
        roles.Permission(
            (P + "keys/*", P + "rng/action"),
            (P + "keys/sign/action", P + "keys/deletedKeys/delete"),
        ),
    ),
)
ROLES = {**roles.BUILT_IN_ROLES, NO_SIGN_NO_PURGE: CUSTOM_ROLE}
SCOPES = ("/", "/keys", "/keys/k1")
Harness = Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_jwk() -> dict[str, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    public = numbers.public_numbers
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(public.x.to_bytes(32, "big")),
        "y": b64(public.y.to_bytes(32, "big")),
        "d": b64(numbers.private_value.to_bytes(32, "big")),
    }


DIGEST = b64(hashlib.sha256(b"matrix").digest())
BODIES: dict[str, Any] = {
    "create": {"kty": "EC-HSM", "crv": "P-256"},
    "sign": {"alg": "ES256", "value": DIGEST},
    "verify": {"alg": "ES256", "digest": DIGEST, "value": b64(bytes(64))},
    "encrypt": {"alg": "A256GCM", "value": b64(b"x")},
    "decrypt": {"alg": "A256GCM", "value": b64(b"x"), "iv": b64(bytes(12)), "tag": b64(bytes(16))},
    "wrapkey": {"alg": "A256KW", "value": b64(bytes(32))},
    "unwrapkey": {"alg": "A256KW", "value": b64(bytes(40))},
    "release": {"target": "x"},
    "rotationpolicy": {"lifetimeActions": [], "attributes": {"expiryTime": "P90D"}},
    "restore": {"value": b64(b"not a backup")},
    "rng": {"count": 4},
    "download": {"certificates": [], "required": 2},
    "upload": {"value": "{}"},
    "settings": {"value": "true"},
    "principals": {"name": "made-in-matrix"},
}


def request_for(method: str, template: str, key: str) -> tuple[str, Any]:
    """A concrete path and body for one operation of the table, acting on `key`."""
    path = (
        template.replace("{name}", key)
        .replace("{version}", VERSION)
        .replace("{definition}", roles.CRYPTO_AUDITOR if method == "GET" else str(uuid.uuid4()))
        .replace("{assignment}", str(uuid.uuid4()))
        .replace("{client_id}", str(uuid.uuid4()))
    )
    if template.startswith("/settings/"):
        path = "/settings/AllowKeyManagementOperationsThroughARM"
    if method in ("GET", "DELETE"):
        return path, None
    last = template.rstrip("/").rsplit("/", 1)[-1]
    if template == "/keys/{name}" and method == "PUT":
        return path, {"key": _private_jwk()}
    if "roleDefinitions" in template:
        return path, {"properties": {"roleName": str(uuid.uuid4()), "permissions": []}}
    if "roleAssignments" in template:
        role = DEFINITION_ID + roles.CRYPTO_AUDITOR
        return path, {"properties": {"principalId": str(uuid.uuid4()), "roleDefinitionId": role}}
    body = BODIES.get(last) or BODIES.get(template.split("/")[1])
    return path, body if body is not None else ({} if method != "PATCH" else {"tags": {}})


class FakeDomain:
    """An active security domain whose operations refuse with a Conflict (not a 403)."""

    @staticmethod
    def cached_state() -> str:
        return "Active"

    async def state(self) -> str:
        return "Active"

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: Any) -> Any:
            raise Conflict("the matrix's security domain does nothing")

        return refuse


def token_headers(api: Harness, principal: Any) -> dict[str, str]:
    token, _ = api.stack.tokens.issue(
        principal=principal, audience="https://0.0.1:8443", tenant_id=TENANT, lifetime=3600
    )
    return {"Authorization": f"Bearer {token}"}


def assign(api: Harness, principal_id: str, role: str, scope: str) -> None:
    prefix = "" if scope == "/" else scope
    body = {"properties": {"principalId": principal_id, "roleDefinitionId": DEFINITION_ID + role}}
    made = api.client.put(f"{prefix}{AUTHZ}/roleAssignments/{uuid.uuid4()}?{API}", json=body)
    assert made.status_code == 201, made.text


def expected(role: roles.RoleDefinition, action: str, assigned: str, requested: str) -> bool:
    covered = assigned == "/" or assigned == requested
    covered = covered or (assigned == "/keys" and requested.startswith("/keys/"))
    return covered and role.grants(action)


@pytest.fixture
def matrix_api(make_api: Callable[..., Harness]) -> Harness:
    harness = make_api(rbac=True, jobs=True)
    stack = harness.stack
    # Serve the security-domain routes too, so that the matrix covers them.
    harness.client.app.app = build_app(dataclasses.replace(stack.ctx, security_domain=FakeDomain()))
    for name in ("k1", "k2"):
        harness.call(stack.keys.create, name, {"kty": "EC-HSM", "crv": "P-256"})
    return harness


async def run_matrix(
    app: Any, role: roles.RoleDefinition, callers: dict[str, Any]
) -> tuple[list[Any], int, int]:
    """Every operation as every caller, in the app's own loop (no thread hop per request):
    the mismatches, and how many calls were allowed and denied."""
    mismatches = []
    allowed = denied_count = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1:8443") as http:
        for (method, template), action in sorted(OPERATIONS.items()):
            per_key = template.startswith("/keys/{name}")
            for key in ("k1", "k2") if per_key else ("k1",):
                path, body = request_for(method, template, key)
                requested = request_scope(template, {"name": key})
                for assigned, headers in callers.items():
                    if key == "k2" and assigned != "/keys/k1":
                        continue  # k2 tells only the key-scoped caller anything new
                    response = await http.request(
                        method, f"{path}?{API}", json=body, headers=headers
                    )
                    assert response.status_code != 500, (method, path, response.text)
                    error = response.json().get("error", {}) if response.content else {}
                    denied = response.status_code == 403 and (
                        error.get("innererror", {}).get("code") == "ForbiddenByRbac"
                    )
                    if denied == expected(role, action, assigned, requested):
                        mismatches.append((method, path, assigned, response.status_code))
                    denied_count += denied
                    allowed += not denied
    return mismatches, allowed, denied_count


@pytest.mark.parametrize("role_id", list(ROLES), ids=[r.role_name for r in ROLES.values()])
def test_role_matrix(matrix_api: Harness, role_id: str) -> None:
    api = matrix_api
    role = ROLES[role_id]
    if role_id == NO_SIGN_NO_PURGE:
        made = api.client.put(f"{AUTHZ}/roleDefinitions/{role_id}?{API}", json=CUSTOM_BODY)
        assert made.status_code == 201, made.text
    callers = {}
    for scope in SCOPES:
        principal, _ = api.call(api.stack.principals.create, f"holder-{scope.count('/')}")
        assign(api, principal.object_id, role_id, scope)
        callers[scope] = token_headers(api, principal)
    mismatches, allowed, denied = api.call(run_matrix, api.client.app, role, callers)
    assert mismatches == []
    assert allowed > 0 and denied > 0 and allowed + denied > 200
