"""RbacService: built-in grants, scopes, key-scoped assignments, notDataActions, wildcards,
limits, definitions in use, filters, and an index kept coherent with storage."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from unit_stack import stall_watch, writer_skips_catch_up

from openmhsm.auth import roles
from openmhsm.errors import BadParameter, Conflict, NotFound, StorageUnavailable
from openmhsm.services.rbac import (
    MAX_CUSTOM_ROLES,
    MAX_KEY_ASSIGNMENTS,
    RbacService,
    definition_id_name,
    parse_filter,
)
from openmhsm.storage.memory import MemoryStorage

Runner = Callable[..., Any]
P = roles.PREFIX
ALICE = "5b0c2f1e-8c3d-4e5f-9a0b-1c2d3e4f5a6b"
BOB = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
DEFINITIONS_URL = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


def new_name() -> str:
    return str(uuid.uuid4())


async def assign(
    rbac: RbacService, principal: str, role: str, scope: str = "/", name: str | None = None
) -> Any:
    return await rbac.create_assignment(
        scope, name or new_name(), principal, DEFINITIONS_URL + role
    )


def custom(*data_actions: str, not_data_actions: tuple[str, ...] = (), name: str = "") -> Any:
    return {
        "properties": {
            "roleName": name,
            "permissions": [
                {"dataActions": list(data_actions), "notDataActions": list(not_data_actions)}
            ],
        }
    }


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 2.0
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


# --- built-in roles ------------------------------------------------------------------------

# API §3.1, corrected by what the service itself lists (see auth/roles.py).
GRANTS = {
    roles.ADMINISTRATOR: {
        "securitydomain/download/action", "securitydomain/download/read",
        "securitydomain/upload/action", "securitydomain/upload/read",
        "securitydomain/transferkey/read", "roleAssignments/read/action",
        "roleAssignments/write/action", "roleAssignments/delete/action",
        "roleDefinitions/read/action", "roleDefinitions/write/action",
        "roleDefinitions/delete/action", "backup/start/action", "backup/status/action",
        "restore/start/action", "restore/status/action",
    },
    roles.CRYPTO_OFFICER: {
        "keys/deletedKeys/read/action", "keys/deletedKeys/recover/action",
        "keys/deletedKeys/delete", "keys/export/action", "roleAssignments/read/action",
        "roleAssignments/write/action", "roleAssignments/delete/action",
        "roleDefinitions/read/action", "roleDefinitions/write/action",
        "roleDefinitions/delete/action",
    },
    roles.CRYPTO_USER: {
        "keys/read/action", "keys/write/action", "keys/rotate/action", "keys/create",
        "keys/delete", "keys/backup/action", "keys/restore/action", "keys/release/action",
        "keys/import/action", "keys/encrypt/action", "keys/decrypt/action",
        "keys/wrap/action", "keys/unwrap/action", "keys/sign/action", "keys/verify/action",
        "rng/action", "roleAssignments/read/action", "roleDefinitions/read/action",
    },
    roles.POLICY_ADMINISTRATOR: {
        "roleAssignments/read/action", "roleAssignments/write/action",
        "roleAssignments/delete/action", "roleDefinitions/read/action",
        "roleDefinitions/write/action", "roleDefinitions/delete/action",
    },
    roles.CRYPTO_AUDITOR: {
        "keys/read/action", "keys/deletedKeys/read/action", "roleAssignments/read/action",
        "roleDefinitions/read/action",
    },
    roles.ENCRYPTION_USER: {"keys/read/action", "keys/wrap/action", "keys/unwrap/action"},
    roles.RELEASE_USER: {"keys/release/action"},
    roles.BACKUP: {"keys/backup/action", "backup/start/action", "backup/status/action"},
    roles.RESTORE: {"keys/restore/action", "restore/start/action", "restore/status/action"},
}  # fmt: skip


def test_nine_built_in_roles_grant_what_the_service_lists() -> None:
    assert set(roles.BUILT_IN_ROLES) == set(GRANTS)
    for guid, expected in GRANTS.items():
        role = roles.BUILT_IN_ROLES[guid]
        granted = {a[len(P) :] for a in roles.DATA_ACTIONS if role.grants(a)}
        assert granted == expected, role.role_name
        assert role.role_type == roles.BUILT_IN


def test_auditor_cannot_purge() -> None:
    assert not roles.BUILT_IN_ROLES[roles.CRYPTO_AUDITOR].grants(P + "keys/deletedKeys/delete")


# --- scopes --------------------------------------------------------------------------------


def test_scopes_cover_what_is_below_them(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        read = P + "keys/read/action"
        await assign(rbac, ALICE, roles.CRYPTO_USER, "/")
        await assign(rbac, BOB, roles.CRYPTO_USER, "/keys")
        for scope in ("/", "/keys", "/keys/k1"):
            assert rbac.is_allowed(ALICE, read, scope)
        assert not rbac.is_allowed(BOB, read, "/")
        assert rbac.is_allowed(BOB, read, "/keys")
        assert rbac.is_allowed(BOB, read, "/keys/anything")
        assert not rbac.is_allowed(BOB, P + "rng/action", "/")  # random bytes are at `/`

    hsm(body, rbac=True)


def test_key_scoped_assignment_acts_on_that_key_only(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        await assign(rbac, ALICE, roles.ENCRYPTION_USER, "/keys/Wrapper")
        wrap = P + "keys/wrap/action"
        assert rbac.is_allowed(ALICE, wrap, "/keys/wrapper")  # names are case-insensitive
        assert rbac.is_allowed(ALICE, wrap, "/keys/WRAPPER")
        assert not rbac.is_allowed(ALICE, wrap, "/keys/other")
        assert not rbac.is_allowed(ALICE, wrap, "/keys")
        assert not rbac.is_allowed(ALICE, wrap, "/")
        assert not rbac.is_allowed(ALICE, P + "keys/sign/action", "/keys/wrapper")
        assert not rbac.is_allowed(BOB, wrap, "/keys/wrapper")

    hsm(body, rbac=True)


def test_principal_ids_compare_as_guids_or_exactly(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        await assign(rbac, ALICE.upper(), roles.CRYPTO_AUDITOR)
        await assign(rbac, "Keycloak-User", roles.CRYPTO_AUDITOR)
        read = P + "keys/read/action"
        assert rbac.is_allowed(ALICE, read, "/")
        assert rbac.is_allowed(ALICE.upper(), read, "/")
        assert rbac.is_allowed("Keycloak-User", read, "/")
        assert not rbac.is_allowed("keycloak-user", read, "/")

    hsm(body, rbac=True)


# --- custom roles: notDataActions, wildcards ------------------------------------------------


def test_not_data_actions_subtract_within_one_permission(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        no_sign = new_name()
        await rbac.set_definition(
            "/", no_sign, custom(P + "keys/*", not_data_actions=(P + "keys/sign/action",))
        )
        await assign(rbac, ALICE, no_sign)
        assert rbac.is_allowed(ALICE, P + "keys/verify/action", "/keys/k1")
        assert rbac.is_allowed(ALICE, P + "keys/deletedKeys/delete", "/keys")
        assert not rbac.is_allowed(ALICE, P + "keys/sign/action", "/keys/k1")
        assert not rbac.is_allowed(ALICE, P + "rng/action", "/")
        # Another role held by the same principal still grants what this one subtracts.
        await assign(rbac, ALICE, roles.CRYPTO_USER, "/keys/k1")
        assert rbac.is_allowed(ALICE, P + "keys/sign/action", "/keys/k1")
        assert not rbac.is_allowed(ALICE, P + "keys/sign/action", "/keys/k2")

    hsm(body, rbac=True)


def test_not_data_actions_do_not_reach_other_permissions_of_the_role() -> None:
    role = roles.RoleDefinition(
        "x",
        "x",
        "",
        (
            roles.Permission((P + "keys/*",), (P + "keys/sign/action",)),
            roles.Permission((P + "keys/sign/action",)),
        ),
    )
    assert role.grants(P + "keys/sign/action")


def test_wildcards_and_case() -> None:
    everything = roles.Permission((P + "*",))
    assert all(everything.grants(a) for a in roles.DATA_ACTIONS)
    deleted = roles.Permission(("microsoft.keyvault/MANAGEDHSM/keys/deletedKeys/*",))
    assert deleted.grants(P + "keys/deletedKeys/recover/action")
    assert deleted.grants(P + "keys/deletedKeys/delete")
    assert not deleted.grants(P + "keys/delete")
    exact = roles.Permission(("Microsoft.KeyVault/managedHsm/KEYS/READ/ACTION",))
    assert exact.grants(P + "keys/read/action")
    assert not exact.grants(P + "keys/read/action/more")


@pytest.mark.parametrize(
    "action",
    [
        P + "keys/bogus/action",
        P + "keys/*/action",
        "Microsoft.KeyVault/vaults/keys/*",
        P + "nothing*",
        "*x",
    ],
)
def test_unknown_data_actions_are_refused(hsm: Runner, action: str) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.rbac.set_definition("/", new_name(), custom(action))
        with pytest.raises(BadParameter):
            await s.rbac.set_definition("/", new_name(), custom(not_data_actions=(action,)))

    hsm(body, rbac=True)


# --- definitions ---------------------------------------------------------------------------


def test_custom_definition_rules(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        name = new_name().upper()
        made = await rbac.set_definition("/", name, custom(P + "rng/action", name="Random"))
        assert made.name == name.lower() and made.role_type == roles.CUSTOM
        assert made.assignable_scopes == ("/",)
        assert rbac.get_definition(name).role_name == "Random"
        updated = await rbac.set_definition("/", name, custom(P + "keys/read/action", name="R"))
        assert rbac.get_definition(name) == updated
        with pytest.raises(BadParameter, match="scope '/'"):
            await rbac.set_definition("/keys", new_name(), custom())
        with pytest.raises(BadParameter, match="built-in"):
            await rbac.set_definition("/", roles.CRYPTO_USER, custom())
        with pytest.raises(Conflict) as same_name:
            await rbac.set_definition("/", new_name(), custom(name="managed hsm crypto user"))
        assert same_name.value.inner_code == "RoleDefinitionWithSameNameExists"
        with pytest.raises(Conflict):
            await rbac.set_definition("/", new_name(), custom(name="r"))
        with pytest.raises(BadParameter, match="GUID"):
            await rbac.set_definition("/", "not-a-guid", custom())
        with pytest.raises(BadParameter, match="assignable"):
            body_keys = custom()
            body_keys["properties"]["assignableScopes"] = ["/keys"]
            await rbac.set_definition("/", new_name(), body_keys)
        with pytest.raises(BadParameter, match="properties"):
            await rbac.set_definition("/", new_name(), {})
        with pytest.raises(BadParameter, match="built-in"):
            await rbac.delete_definition("/", roles.ADMINISTRATOR)
        with pytest.raises(NotFound):
            await rbac.delete_definition("/", new_name())
        names = [d.name for d in rbac.list_definitions(parse_filter(None))]
        assert names == sorted(names) and len(names) == 10
        assert [d.name for d in rbac.list_definitions(parse_filter("roleName eq 'r'"))] == [
            name.lower()
        ]

    hsm(body, rbac=True)


def test_at_most_fifty_custom_definitions(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        names = [new_name() for _ in range(MAX_CUSTOM_ROLES)]
        for name in names:
            await s.rbac.set_definition("/", name, custom(P + "rng/action"))
        with pytest.raises(BadParameter) as caught:
            await s.rbac.set_definition("/", new_name(), custom())
        assert caught.value.inner_code == "RoleDefinitionLimitExceeded"
        await s.rbac.set_definition("/", names[0], custom(P + "keys/read/action"))  # an update

    hsm(body, rbac=True)


def test_definition_in_use_cannot_be_deleted(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        role = new_name()
        await rbac.set_definition("/", role, custom(P + "rng/action"))
        held = await assign(rbac, ALICE, role, "/keys/k1")
        with pytest.raises(Conflict) as caught:
            await rbac.delete_definition("/", role)
        assert caught.value.inner_code == "RoleDefinitionHasAssignments"
        await rbac.delete_assignment("/keys/k1", held.name)
        gone = await rbac.delete_definition("/", role)
        assert gone.name == role
        with pytest.raises(NotFound):
            rbac.get_definition(role)

    hsm(body, rbac=True)


# --- assignments ---------------------------------------------------------------------------


def test_assignment_rules(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        name = new_name()
        made = await assign(rbac, ALICE, roles.CRYPTO_USER, "/keys", name=name)
        assert (made.scope, made.principal_id, made.role_id) == ("/keys", ALICE, roles.CRYPTO_USER)
        again = await rbac.create_assignment(
            "/keys", name, ALICE, "/" + DEFINITIONS_URL + roles.CRYPTO_USER
        )
        assert again == made  # the same request again: answered as created
        with pytest.raises(Conflict) as changed:
            await assign(rbac, BOB, roles.CRYPTO_USER, "/keys", name=name)
        assert changed.value.inner_code == "RoleAssignmentUpdateNotPermitted"
        with pytest.raises(Conflict) as duplicate:
            await assign(rbac, ALICE, roles.CRYPTO_USER, "/keys")
        assert duplicate.value.inner_code == "RoleAssignmentExists"
        with pytest.raises(NotFound):
            await assign(rbac, ALICE, new_name())
        for scope in ("/secrets", "/keys/", "/keys/a/b", "keys", "/keys/bad_name"):
            with pytest.raises(BadParameter):
                await assign(rbac, ALICE, roles.CRYPTO_USER, scope)
        with pytest.raises(BadParameter):
            await rbac.create_assignment("/", new_name(), "", roles.CRYPTO_USER)
        with pytest.raises(BadParameter):
            await rbac.create_assignment("/", "x", ALICE, roles.CRYPTO_USER)
        assert rbac.get_assignment("/keys", name.upper()) == made
        with pytest.raises(NotFound):
            rbac.get_assignment("/", name)  # it is at /keys
        assert await rbac.delete_assignment("/keys", name) == made
        with pytest.raises(NotFound):
            await rbac.delete_assignment("/keys", name)
        assert not rbac.is_allowed(ALICE, P + "keys/read/action", "/keys")

    hsm(body, rbac=True)


@pytest.mark.parametrize(
    "given",
    [
        DEFINITIONS_URL + roles.BACKUP,
        "/" + DEFINITIONS_URL + roles.BACKUP,
        "/providers/Microsoft.Authorization/roleDefinitions/" + roles.BACKUP.upper(),
        roles.BACKUP,
    ],
)
def test_definition_ids_with_or_without_leading_slash(given: str) -> None:
    assert definition_id_name(given) == roles.BACKUP


def test_assignment_limits(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        for n in range(MAX_KEY_ASSIGNMENTS):
            await assign(rbac, f"principal-{n}", roles.CRYPTO_AUDITOR, "/keys/k1")
        with pytest.raises(BadParameter) as caught:
            await assign(rbac, ALICE, roles.CRYPTO_AUDITOR, "/keys/K1")
        assert caught.value.inner_code == "RoleAssignmentLimitExceeded"
        await assign(rbac, ALICE, roles.CRYPTO_AUDITOR, "/keys/k2")  # another key's own count
        for n in range(50):
            await assign(rbac, f"principal-{n}", roles.CRYPTO_AUDITOR, "/")
        with pytest.raises(BadParameter):
            await assign(rbac, ALICE, roles.CRYPTO_AUDITOR, "/")

    hsm(body, rbac=True)


def test_list_filters(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        rbac = s.rbac
        root = await assign(rbac, ALICE, roles.CRYPTO_USER, "/")
        keys = await assign(rbac, BOB, roles.CRYPTO_AUDITOR, "/keys")
        k1 = await assign(rbac, ALICE, roles.ENCRYPTION_USER, "/keys/k1")
        k2 = await assign(rbac, BOB, roles.ENCRYPTION_USER, "/keys/k2")

        def names(scope: str, text: str | None = None) -> set[str]:
            return {a.name for a in rbac.list_assignments(scope, parse_filter(text))}

        everything = {root.name, keys.name, k1.name, k2.name}
        assert names("/") == everything
        assert names("/", "atScope()") == {root.name}
        assert names("/keys") == everything
        assert names("/keys", "atScope()") == {root.name, keys.name}
        assert names("/keys/k1") == {root.name, keys.name, k1.name}
        assert names("/keys/K1", "atScope()") == {root.name, keys.name, k1.name}
        assert names("/", f"principalId eq '{ALICE.upper()}'") == {root.name, k1.name}
        assert names("/keys", f"atScope() and principalId eq '{BOB}'") == {keys.name}
        assert names("/", f"assignedTo('{BOB}')") == {keys.name, k2.name}
        with pytest.raises(BadParameter):
            parse_filter("principalId ne 'x'")

    hsm(body, rbac=True)


# --- coherence with storage ----------------------------------------------------------------


def test_other_partitions_follow_through_the_watch(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        theirs = RbacService(peer.cache)
        role = new_name()
        await s.rbac.set_definition("/", role, custom(P + "keys/sign/action"))
        made = await assign(s.rbac, ALICE, role, "/keys/k1")
        sign = P + "keys/sign/action"
        await eventually(lambda: theirs.is_allowed(ALICE, sign, "/keys/k1"), "assignment")
        await s.rbac.delete_assignment("/keys/k1", made.name)
        await eventually(lambda: not theirs.is_allowed(ALICE, sign, "/keys/k1"), "removal")
        assert peer.cache.names() == []  # RBAC records are not keys

    hsm(body, rbac=True)


def test_an_index_attached_late_replays_what_was_loaded(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await assign(s.rbac, ALICE, roles.CRYPTO_AUDITOR, "/keys")
        peer = await s.peer()
        late = RbacService(peer.cache)
        assert late.is_allowed(ALICE, P + "keys/read/action", "/keys/x")
        assert late.has_assignments()

    hsm(body, rbac=True)


def test_a_lost_race_refreshes_from_storage(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        name = new_name()
        peer = await s.peer(load=False)  # sees nothing: its first write races
        theirs = RbacService(peer.cache)
        made = await assign(s.rbac, ALICE, roles.CRYPTO_USER, "/", name=name)
        again = await assign(theirs, ALICE, roles.CRYPTO_USER, "/", name=name)
        assert again == made
        assert theirs.is_allowed(ALICE, P + "keys/create", "/keys/k9")

    hsm(body, rbac=True)


def test_reload_after_compaction_rebuilds_the_index(
    hsm: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        theirs = RbacService(peer.cache)
        gone = await assign(s.rbac, ALICE, roles.CRYPTO_AUDITOR)
        await eventually(lambda: theirs.has_assignments(), "the first assignment")
        await s.rbac.delete_assignment("/", gone.name)
        writer_skips_catch_up(s)
        for n in range(8):  # no yield: the peer's watch is left behind the short history
            await assign(s.rbac, f"principal-{n}", roles.CRYPTO_AUDITOR, "/keys")
        await eventually(lambda: len(theirs.index.assignments) == 8, "reload")
        assert not theirs.is_allowed(ALICE, P + "keys/read/action", "/")
        assert theirs.is_allowed("principal-7", P + "keys/read/action", "/keys/k")

    with caplog.at_level(logging.WARNING, logger="openmhsm.services.key_cache"):
        hsm(body, rbac=True, storage=MemoryStorage(max_history=4))
    assert "fell behind compaction" in caplog.text


def test_ensure_assignment_is_idempotent(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.rbac.ensure_assignment(ALICE, roles.ADMINISTRATOR)
        await s.rbac.ensure_assignment(ALICE.upper(), roles.ADMINISTRATOR)
        await s.rbac.ensure_assignment(ALICE, roles.ADMINISTRATOR, "/keys")
        held = s.rbac.list_assignments("/", parse_filter(f"principalId eq '{ALICE}'"))
        assert sorted(a.scope for a in held) == ["/", "/keys"]

    hsm(body, rbac=True)


def test_catch_up_applies_what_another_partition_just_committed(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        theirs = RbacService(peer.cache)
        await assign(s.rbac, ALICE, roles.CRYPTO_AUDITOR)
        await s.view.put_if("settings/unrelated", b"1")  # the newest record is not RBAC's
        assert not theirs.is_allowed(ALICE, P + "keys/read/action", "/")  # no yield yet
        await theirs.catch_up()
        assert theirs.is_allowed(ALICE, P + "keys/read/action", "/")
        assert await peer.cache.catch_up(timeout=0.1)

    hsm(body, rbac=True)


def test_catch_up_gives_up_without_a_watch(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer(load=False)
        await assign(s.rbac, ALICE, roles.CRYPTO_AUDITOR)
        assert not await peer.cache.catch_up(timeout=0.05)

    hsm(body, rbac=True)


def test_catch_up_gives_up_at_once_when_storage_is_down(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        async def down() -> int:
            raise StorageUnavailable("no quorum")

        s.storage.revision = down
        started = time.monotonic()
        assert not await s.cache.catch_up(timeout=5.0)
        assert time.monotonic() - started < 1.0

    hsm(body, rbac=True)


def test_a_partition_whose_watch_stalled_finds_a_fresh_assignment_to_delete(hsm: Runner) -> None:
    """The chaos suite's lost unassign: the peer's stale index answered 404, which the SDK
    takes for a successful delete, and the assignment stayed."""

    async def body(s: Any) -> None:
        peer = await s.peer()
        theirs = RbacService(peer.cache)
        await stall_watch(peer)
        made = await assign(s.rbac, ALICE, roles.CRYPTO_USER)
        assert (await theirs.delete_assignment("/", made.name)).name == made.name
        await s.rbac.catch_up()
        with pytest.raises(NotFound):
            s.rbac.get_assignment("/", made.name)

    hsm(body, rbac=True)
