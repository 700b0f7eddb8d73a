"""The RBAC REST group in-process (API §3.1) and its enforcement at the HTTP edge: status codes
and JSON as KeyVaultAccessControlClient reads them, paging, filters, and the 403 of a denial."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from openmhsm.auth import roles

API = "api-version=7.6"
AUTHZ = "/providers/Microsoft.Authorization"
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
TENANT = "7f3e8a52-0c1d-4b8e-9a6f-2d5c4b3a1e0f"
P = roles.PREFIX
Harness = Any


def url(path: str, **query: str) -> str:
    extra = "".join(f"&{k}={quote(v, safe='')}" for k, v in query.items())
    return f"{path}?{API}{extra}"


@pytest.fixture
def rbac_api(make_api: Callable[..., Harness]) -> Harness:
    return make_api(rbac=True)


def principal_headers(api: Harness, name: str = "app") -> tuple[str, dict[str, str]]:
    """A new principal of the pool (no roles) and the headers that authenticate it."""
    principal, _ = api.call(api.stack.principals.create, name)
    token, _ = api.stack.tokens.issue(
        principal=principal, audience="https://0.0.1:8443", tenant_id=TENANT, lifetime=3600
    )
    return principal.object_id, {"Authorization": f"Bearer {token}"}


def assign(api: Harness, principal_id: str, role: str, scope: str = "") -> Any:
    name = str(uuid.uuid4())
    body = {"properties": {"principalId": principal_id, "roleDefinitionId": DEFINITION_ID + role}}
    response = api.client.put(url(f"{scope}{AUTHZ}/roleAssignments/{name}"), json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- role definitions ----------------------------------------------------------------------


def test_built_in_definitions(rbac_api: Harness) -> None:
    response = rbac_api.client.get(url(f"{AUTHZ}/roleDefinitions"))
    assert response.status_code == 200
    page = response.json()
    assert page["nextLink"] is None
    by_name = {d["name"]: d for d in page["value"]}
    assert set(by_name) == set(roles.BUILT_IN_ROLES)
    user = by_name[roles.CRYPTO_USER]
    assert user["id"] == DEFINITION_ID + roles.CRYPTO_USER
    assert user["type"] == "Microsoft.Authorization/roleDefinitions"
    props = user["properties"]
    assert props["roleName"] == "Managed HSM Crypto User"
    assert props["type"] == "AKVBuiltInRole"
    assert props["assignableScopes"] == ["/"]
    assert P + "keys/sign/action" in props["permissions"][0]["dataActions"]
    assert props["permissions"][0]["notDataActions"] == []
    single = rbac_api.client.get(url(f"/keys{AUTHZ}/roleDefinitions/{roles.BACKUP.upper()}"))
    assert single.status_code == 200 and single.json()["name"] == roles.BACKUP


def test_custom_definition_lifecycle(rbac_api: Harness) -> None:
    name = str(uuid.uuid4())
    body = {
        "properties": {
            "roleName": "signer",
            "description": "signs",
            "permissions": [
                {"dataActions": [P + "keys/sign/action", P + "keys/read/action"]},
            ],
        }
    }
    path = f"{AUTHZ}/roleDefinitions/{name}"
    made = rbac_api.client.put(url(path), json=body)
    assert made.status_code == 201, made.text
    shown = made.json()
    assert shown["id"] == DEFINITION_ID + name and shown["name"] == name
    assert shown["properties"]["type"] == "CustomRole"
    assert shown["properties"]["assignableScopes"] == ["/"]
    assert shown["properties"]["permissions"][0]["notDataActions"] == []
    assert rbac_api.client.get(url(path)).json() == shown
    at_keys = rbac_api.client.put(url(f"/keys{AUTHZ}/roleDefinitions/{name}"), json=body)
    assert at_keys.status_code == 400
    deleted = rbac_api.client.delete(url(path))
    assert deleted.status_code == 200 and deleted.json() == shown
    missing = rbac_api.client.get(url(path))
    assert missing.status_code == 404
    assert missing.json()["error"]["innererror"]["code"] == "RoleDefinitionNotFound"
    assert rbac_api.client.delete(url(path)).status_code == 404


def test_definitions_page_with_absolute_next_links_that_keep_the_filter(
    rbac_api: Harness,
) -> None:
    seen: list[str] = []
    link: str | None = url(f"{AUTHZ}/roleDefinitions", maxresults="4", **{"$filter": "atScope()"})
    while link is not None:
        response = rbac_api.client.get(link)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [d["name"] for d in page["value"]]
        link = page["nextLink"]
        if link is not None:
            assert link.startswith("https://127.0.0.1:8443/providers/")
            assert "%24filter=atScope%28%29" in link.replace("$", "%24")
    assert seen == sorted(roles.BUILT_IN_ROLES)


# --- role assignments ----------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["/", "/keys", "/keys/k1"])
def test_assignment_lifecycle_at_each_scope(rbac_api: Harness, scope: str) -> None:
    prefix = "" if scope == "/" else scope
    name = str(uuid.uuid4())
    principal = str(uuid.uuid4())
    path = f"{prefix}{AUTHZ}/roleAssignments/{name}"
    body = {
        "properties": {
            "principalId": principal,
            "roleDefinitionId": "/" + DEFINITION_ID + roles.CRYPTO_USER,  # Terraform's form
        }
    }
    made = rbac_api.client.put(url(path), json=body)
    assert made.status_code == 201, made.text
    shown = made.json()
    assert shown == {
        "id": path,
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "scope": scope,
            "roleDefinitionId": DEFINITION_ID + roles.CRYPTO_USER,
            "principalId": principal,
        },
    }
    assert rbac_api.client.put(url(path), json=body).status_code == 201  # same again
    assert rbac_api.client.get(url(path)).json() == shown
    listed = rbac_api.client.get(
        url(f"{prefix}{AUTHZ}/roleAssignments", **{"$filter": f"principalId eq '{principal}'"})
    )
    assert [a["name"] for a in listed.json()["value"]] == [name]
    deleted = rbac_api.client.delete(url(path))
    assert deleted.status_code == 200 and deleted.json() == shown
    assert rbac_api.client.get(url(path)).status_code == 404


def test_assignment_listing_and_errors(rbac_api: Harness) -> None:
    admin = rbac_api.stack.admin.object_id
    on_key = assign(rbac_api, admin, roles.CRYPTO_USER, "/keys/k1")
    root = rbac_api.client.get(url(f"{AUTHZ}/roleAssignments", **{"$filter": "atScope()"}))
    assert [a["properties"]["principalId"] for a in root.json()["value"]] == [admin]
    everything = rbac_api.client.get(url(f"{AUTHZ}/roleAssignments")).json()["value"]
    assert on_key in everything and len(everything) == 2
    bad_filter = rbac_api.client.get(url(f"{AUTHZ}/roleAssignments", **{"$filter": "x eq 1"}))
    assert bad_filter.status_code == 400
    no_role = {"properties": {"principalId": admin, "roleDefinitionId": str(uuid.uuid4())}}
    put = rbac_api.client.put(url(f"{AUTHZ}/roleAssignments/{uuid.uuid4()}"), json=no_role)
    assert put.status_code == 404
    bad_key = rbac_api.client.put(
        url(f"/keys/bad_name{AUTHZ}/roleAssignments/{uuid.uuid4()}"), json=no_role
    )
    assert bad_key.status_code == 400


def test_key_named_providers_still_reaches_the_keys_routes(rbac_api: Harness) -> None:
    admin = rbac_api.stack.admin.object_id
    assign(rbac_api, admin, roles.CRYPTO_USER)
    made = rbac_api.client.post(url("/keys/providers/create"), json={"kty": "oct-HSM"})
    assert made.status_code == 200, made.text
    assert rbac_api.client.get(url("/keys/providers/")).status_code == 200
    assert rbac_api.client.get(url("/keys/k1/providers")).status_code == 404  # a version


# --- enforcement ---------------------------------------------------------------------------


def test_denial_is_a_key_vault_403_naming_the_action(rbac_api: Harness) -> None:
    _, headers = principal_headers(rbac_api)
    response = rbac_api.client.post(url("/keys/k1/create"), json={"kty": "EC-HSM"}, headers=headers)
    assert response.status_code == 403
    assert "Retry-After" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["innererror"]["code"] == "ForbiddenByRbac"
    assert f"'{P}keys/create'" in error["message"]
    assert "'/keys/k1'" in error["message"]
    assert headers["Authorization"].split()[1] not in response.text


def test_the_bootstrap_admin_manages_roles_but_not_keys(rbac_api: Harness) -> None:
    denied = rbac_api.client.post(url("/keys/k1/create"), json={"kty": "EC-HSM"})
    assert denied.status_code == 403
    assert rbac_api.client.get(url(f"{AUTHZ}/roleAssignments")).status_code == 200
    admin = rbac_api.stack.admin.object_id
    assign(rbac_api, admin, roles.CRYPTO_USER)
    made = rbac_api.client.post(url("/keys/k1/create"), json={"kty": "EC-HSM"})
    assert made.status_code == 200


class UnreadBody:
    """A request body that records whether the server ever read it."""

    def __init__(self) -> None:
        self.read = False

    def __iter__(self) -> Iterator[bytes]:
        self.read = True
        yield b'{"kty": "EC-HSM"}'


def test_denial_comes_before_the_body_is_read(rbac_api: Harness) -> None:
    _, headers = principal_headers(rbac_api)
    body = UnreadBody()
    response = rbac_api.client.post(
        url("/keys/k1/create"),
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 403
    assert not body.read


def test_unknown_paths_and_methods_fall_through_to_the_router(rbac_api: Harness) -> None:
    _, headers = principal_headers(rbac_api)
    missing = rbac_api.client.get(url("/no/such/path"), headers=headers)
    assert missing.status_code == 404
    wrong_method = rbac_api.client.put(url("/rng"), headers=headers)
    assert wrong_method.status_code == 405


def test_head_needs_the_read_action(rbac_api: Harness) -> None:
    _, headers = principal_headers(rbac_api)
    assert rbac_api.client.head(url("/keys"), headers=headers).status_code == 403


def test_key_scoped_assignment_through_the_api(rbac_api: Harness) -> None:
    admin = rbac_api.stack.admin.object_id
    assign(rbac_api, admin, roles.CRYPTO_USER)
    for name in ("k1", "k2"):
        created = rbac_api.client.post(url(f"/keys/{name}/create"), json={"kty": "EC-HSM"})
        assert created.status_code == 200
    app, headers = principal_headers(rbac_api)
    assign(rbac_api, app, roles.CRYPTO_AUDITOR, "/keys/K1")
    assert rbac_api.client.get(url("/keys/k1/"), headers=headers).status_code == 200
    assert rbac_api.client.get(url("/keys/k2/"), headers=headers).status_code == 403
    assert rbac_api.client.get(url("/keys"), headers=headers).status_code == 403
    own = rbac_api.client.get(url(f"/keys/k1{AUTHZ}/roleAssignments"), headers=headers)
    assert own.status_code == 200  # role reads at the key's scope
    assert rbac_api.client.get(url(f"{AUTHZ}/roleAssignments"), headers=headers).status_code == 403
