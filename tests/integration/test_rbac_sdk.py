"""Issue 5: azure-keyvault-administration's KeyVaultAccessControlClient against a real dev pool:
role definitions (built-in and custom) and assignments at `/`, `/keys` and `/keys/<name>`, with
filters and paging, and the roles enforced on the keys the admin uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultDataAction,
    KeyVaultPermission,
    KeyVaultRoleScope,
)
from dev_pool import DevPool

from openmhsm.auth import roles

BUILT_IN_NAMES = {
    "Managed HSM Administrator",
    "Managed HSM Crypto Officer",
    "Managed HSM Crypto User",
    "Managed HSM Policy Administrator",
    "Managed HSM Crypto Auditor",
    "Managed HSM Crypto Service Encryption User",
    "Managed HSM Crypto Service Release User",
    "Managed HSM Backup",
    "Managed HSM Restore",
}


@pytest.fixture(scope="module")
def access(dev_pool: DevPool) -> Iterator[KeyVaultAccessControlClient]:
    with dev_pool.access_client() as client:
        yield client


def test_built_in_definitions(access: KeyVaultAccessControlClient) -> None:
    found = list(access.list_role_definitions(KeyVaultRoleScope.GLOBAL))
    built_in = [d for d in found if d.role_type == "AKVBuiltInRole"]
    assert len(built_in) == 9
    assert {d.role_name for d in built_in} == BUILT_IN_NAMES
    assert {d.name for d in built_in} == set(roles.BUILT_IN_ROLES)
    user = access.get_role_definition(KeyVaultRoleScope.GLOBAL, roles.CRYPTO_USER)
    assert user.role_name == "Managed HSM Crypto User"
    assert user.assignable_scopes == ["/"]
    assert (
        user.id
        == f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{user.name}"
    )
    assert KeyVaultDataAction.SIGN_HSM_KEY in user.permissions[0].data_actions


def test_custom_definition_set_get_delete(access: KeyVaultAccessControlClient) -> None:
    name = uuid.uuid4()
    permissions = [
        KeyVaultPermission(
            data_actions=[KeyVaultDataAction.READ_HSM_KEY, "Microsoft.KeyVault/managedHsm/keys/*"],
            not_data_actions=[KeyVaultDataAction.PURGE_DELETED_HSM_KEY],
        )
    ]
    made = access.set_role_definition(
        KeyVaultRoleScope.GLOBAL,
        name=name,
        role_name="sdk custom role",
        description="made by the SDK test",
        permissions=permissions,
    )
    assert made.name == str(name) and made.role_type == "CustomRole"
    assert made.permissions[0].not_data_actions == [KeyVaultDataAction.PURGE_DELETED_HSM_KEY]
    fetched = access.get_role_definition(KeyVaultRoleScope.GLOBAL, name)
    assert fetched.role_name == "sdk custom role" and fetched.description == "made by the SDK test"
    updated = access.set_role_definition(
        KeyVaultRoleScope.GLOBAL, name=name, role_name="sdk custom role v2", permissions=permissions
    )
    assert updated.role_name == "sdk custom role v2"
    assert str(name) in {d.name for d in access.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    with pytest.raises(HttpResponseError) as refused:  # definitions live at `/` only
        access.set_role_definition(KeyVaultRoleScope.KEYS, name=uuid.uuid4(), role_name="x")
    assert refused.value.status_code == 400
    access.delete_role_definition(KeyVaultRoleScope.GLOBAL, name)
    with pytest.raises(ResourceNotFoundError):
        access.get_role_definition(KeyVaultRoleScope.GLOBAL, name)
    access.delete_role_definition(KeyVaultRoleScope.GLOBAL, name)  # the SDK swallows the 404


def test_definitions_are_paged(access: KeyVaultAccessControlClient) -> None:
    names = [uuid.uuid4() for _ in range(20)]  # 29 definitions: more than one page of 25
    for n, name in enumerate(names):
        access.set_role_definition(
            KeyVaultRoleScope.GLOBAL,
            name=name,
            role_name=f"paged {n}",
            permissions=[KeyVaultPermission(data_actions=[KeyVaultDataAction.READ_HSM_KEY])],
        )
    try:
        listed = [d.name for d in access.list_role_definitions(KeyVaultRoleScope.GLOBAL)]
        assert len(listed) == len(set(listed)) == 29
        assert {str(n) for n in names} <= set(listed)
    finally:
        for name in names:
            access.delete_role_definition(KeyVaultRoleScope.GLOBAL, name)


@pytest.mark.parametrize("scope", ["/", "/keys", "/keys/rbac-sdk-key"])
def test_assignments_at_each_scope(access: KeyVaultAccessControlClient, scope: str) -> None:
    principal = str(uuid.uuid4())
    made = access.create_role_assignment(scope, roles.CRYPTO_AUDITOR, principal)
    assert made.properties.scope == scope
    assert made.properties.principal_id == principal
    assert made.properties.role_definition_id.endswith(roles.CRYPTO_AUDITOR)
    fetched = access.get_role_assignment(scope, made.name)
    assert fetched.role_assignment_id == made.role_assignment_id
    mine = list(access.list_role_assignments(scope, filter=f"principalId eq '{principal}'"))
    assert [a.name for a in mine] == [made.name]
    assert made.name in {a.name for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
    at_scope = {a.name for a in access.list_role_assignments(scope, filter="atScope()")}
    assert made.name in at_scope
    if scope != "/":
        root_only = access.list_role_assignments(KeyVaultRoleScope.GLOBAL, filter="atScope()")
        assert made.name not in {a.name for a in root_only}
    with pytest.raises(HttpResponseError) as built_in:
        access.delete_role_definition(KeyVaultRoleScope.GLOBAL, roles.CRYPTO_AUDITOR)
    assert built_in.value.status_code == 400  # a built-in role is never deleted
    access.delete_role_assignment(scope, made.name)
    with pytest.raises(ResourceNotFoundError):
        access.get_role_assignment(scope, made.name)
    access.delete_role_assignment(scope, made.name)  # the SDK swallows the 404


def test_a_custom_role_in_use_cannot_be_deleted(access: KeyVaultAccessControlClient) -> None:
    role = access.set_role_definition(
        KeyVaultRoleScope.GLOBAL,
        role_name="in use",
        permissions=[KeyVaultPermission(data_actions=[KeyVaultDataAction.READ_HSM_KEY])],
    )
    held = access.create_role_assignment("/keys/k1", role.id, str(uuid.uuid4()))
    with pytest.raises(HttpResponseError) as refused:
        access.delete_role_definition(KeyVaultRoleScope.GLOBAL, role.name)
    assert refused.value.status_code == 409
    access.delete_role_assignment("/keys/k1", held.name)
    access.delete_role_definition(KeyVaultRoleScope.GLOBAL, role.name)


def test_dev_mode_admin_holds_three_roles_and_they_are_enforced(
    dev_pool: DevPool, access: KeyVaultAccessControlClient
) -> None:
    admin = dev_pool.admin_object_id
    held = list(access.list_role_assignments("/", filter=f"principalId eq '{admin}'"))
    by_role = {a.properties.role_definition_id.rsplit("/", 1)[1]: a for a in held}
    assert set(by_role) == {roles.ADMINISTRATOR, roles.CRYPTO_OFFICER, roles.CRYPTO_USER}
    user = by_role[roles.CRYPTO_USER]
    with dev_pool.key_client() as keys:
        keys.create_ec_key("rbac-enforced", curve="P-256")
        access.delete_role_assignment("/", user.name)
        try:
            with pytest.raises(HttpResponseError) as refused:
                keys.get_key("rbac-enforced")
            assert refused.value.status_code == 403
            assert refused.value.error is not None and refused.value.error.code == "Forbidden"
            assert "keys/read/action" in refused.value.message
        finally:
            access.create_role_assignment("/", roles.CRYPTO_USER, admin, name=user.name)
        assert keys.get_key("rbac-enforced").name == "rbac-enforced"
