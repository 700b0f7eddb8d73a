"""The one table of data actions (`auth/authorize.py`): every data-plane route has exactly one
entry, every entry names a data action of the role catalogue (API §3.1), and the scope of a
request follows from its path."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from starlette.routing import Route

from openmhsm.api.app import data_plane_routes
from openmhsm.auth import roles
from openmhsm.auth.authorize import OPERATIONS, authorize, request_scope
from openmhsm.errors import Forbidden
from openmhsm.types import Principal

Runner = Callable[..., Any]
P = roles.PREFIX


class _Domain:
    """Enough of a SecurityDomainService for its routes to be listed."""

    @staticmethod
    def cached_state() -> str:
        return "Active"


def every_route(hsm: Runner) -> set[tuple[str, str]]:
    async def body(stack: Any) -> list[Any]:
        ctx = dataclasses.replace(stack.ctx, security_domain=_Domain())
        return data_plane_routes(ctx)

    routes = hsm(body, rbac=True, jobs=True)
    assert all(isinstance(route, Route) for route in routes)
    return {
        (method, route.path) for route in routes for method in route.methods if method != "HEAD"
    }


def test_every_route_has_an_entry_and_every_entry_a_route(hsm: Runner) -> None:
    served = every_route(hsm)
    assert served - OPERATIONS.keys() == set()
    assert OPERATIONS.keys() - served == set()
    assert len(served) == len(OPERATIONS)


def test_every_action_is_in_the_catalogue() -> None:
    assert set(OPERATIONS.values()) <= set(roles.DATA_ACTIONS)


def test_catalogue_is_the_sdk_enum_plus_rotate() -> None:
    from azure.keyvault.administration import KeyVaultDataAction

    sdk = {action.value for action in KeyVaultDataAction}
    assert len(sdk) == 34
    assert set(roles.DATA_ACTIONS) == sdk | {P + "keys/rotate/action"}
    assert len(roles.DATA_ACTIONS) == len(set(roles.DATA_ACTIONS)) == 35


@pytest.mark.parametrize(
    ("method", "template", "action"),
    [
        ("POST", "/keys/{name}/create", "keys/create"),
        ("PUT", "/keys/{name}", "keys/import/action"),
        ("GET", "/keys/{name}/", "keys/read/action"),
        ("GET", "/keys/{name}/{version}", "keys/read/action"),
        ("GET", "/keys", "keys/read/action"),
        ("GET", "/keys/{name}/versions", "keys/read/action"),
        ("PATCH", "/keys/{name}/{version}", "keys/write/action"),
        ("DELETE", "/keys/{name}", "keys/delete"),
        ("POST", "/keys/{name}//sign", "keys/sign/action"),
        ("POST", "/keys/{name}/{version}/verify", "keys/verify/action"),
        ("POST", "/keys/{name}//encrypt", "keys/encrypt/action"),
        ("POST", "/keys/{name}//decrypt", "keys/decrypt/action"),
        ("POST", "/keys/{name}//wrapkey", "keys/wrap/action"),
        ("POST", "/keys/{name}/{version}/unwrapkey", "keys/unwrap/action"),
        ("POST", "/rng", "rng/action"),
        ("GET", "/deletedkeys", "keys/deletedKeys/read/action"),
        ("GET", "/deletedkeys/{name}", "keys/deletedKeys/read/action"),
        ("POST", "/deletedkeys/{name}/recover", "keys/deletedKeys/recover/action"),
        ("DELETE", "/deletedkeys/{name}", "keys/deletedKeys/delete"),
        ("POST", "/keys/{name}/backup", "keys/backup/action"),
        ("POST", "/keys/restore", "keys/restore/action"),
        ("POST", "/keys/{name}/rotate", "keys/rotate/action"),
        ("GET", "/keys/{name}/rotationpolicy", "keys/read/action"),
        ("PUT", "/keys/{name}/rotationpolicy", "keys/write/action"),
        ("POST", "/keys/{name}//release", "keys/release/action"),
        ("POST", "/securitydomain/download", "securitydomain/download/action"),
        ("GET", "/securitydomain/download/pending", "securitydomain/download/read"),
        ("GET", "/securitydomain/upload", "securitydomain/transferkey/read"),
        ("POST", "/securitydomain/upload", "securitydomain/upload/action"),
        ("GET", "/securitydomain/upload/pending", "securitydomain/upload/read"),
        (
            "PUT",
            "/providers/Microsoft.Authorization/roleAssignments/{assignment}",
            "roleAssignments/write/action",
        ),
        (
            "DELETE",
            "/keys/{name}/providers/Microsoft.Authorization/roleAssignments/{assignment}",
            "roleAssignments/delete/action",
        ),
        (
            "GET",
            "/keys/providers/Microsoft.Authorization/roleDefinitions",
            "roleDefinitions/read/action",
        ),
        (
            "PUT",
            "/providers/Microsoft.Authorization/roleDefinitions/{definition}",
            "roleDefinitions/write/action",
        ),
        ("GET", "/settings", "roleDefinitions/read/action"),
        ("PATCH", "/settings/{name}", "roleDefinitions/write/action"),
    ],
)  # fmt: skip
def test_operation_needs_the_documented_action(method: str, template: str, action: str) -> None:
    assert OPERATIONS[(method, template)] == P + action


@pytest.mark.parametrize(
    ("template", "params", "scope"),
    [
        ("/keys/{name}/create", {"name": "K1"}, "/keys/K1"),
        ("/keys/{name}/{version}/sign", {"name": "k1", "version": "v"}, "/keys/k1"),
        (
            "/keys/{name}/providers/Microsoft.Authorization/roleAssignments",
            {"name": "k1"},
            "/keys/k1",
        ),
        ("/keys", {}, "/keys"),
        ("/keys/restore", {}, "/keys"),
        ("/deletedkeys", {}, "/keys"),
        ("/deletedkeys/{name}/recover", {"name": "k1"}, "/keys"),
        ("/keys/providers/Microsoft.Authorization/roleDefinitions", {}, "/keys"),
        ("/providers/Microsoft.Authorization/roleDefinitions", {}, "/"),
        ("/rng", {}, "/"),
        ("/securitydomain/download", {}, "/"),
        ("/settings/{name}", {"name": "x"}, "/"),
    ],
)  # fmt: skip
def test_request_scope(template: str, params: dict[str, str], scope: str) -> None:
    assert request_scope(template, params) == scope


class _Decider:
    def __init__(self, allowed: bool, after_catch_up: bool = False) -> None:
        self.allowed = allowed
        self.after_catch_up = after_catch_up
        self.asked: list[tuple[str, str, str]] = []
        self.caught_up = 0

    def is_allowed(self, principal_id: str, data_action: str, scope: str) -> bool:
        self.asked.append((principal_id, data_action, scope))
        return self.allowed

    async def catch_up(self) -> None:
        self.caught_up += 1
        self.allowed = self.allowed or self.after_catch_up


PRINCIPAL = Principal(object_id="oid-1", client_id="app-1", name="app", kind="service")


def test_denial_names_the_action_and_scope() -> None:
    decider = _Decider(False)
    with pytest.raises(Forbidden) as caught:
        asyncio.run(authorize(decider, PRINCIPAL, "POST", "/keys/{name}//sign", {"name": "k1"}))
    assert caught.value.inner_code == "ForbiddenByRbac"
    assert f"'{P}keys/sign/action'" in caught.value.message
    assert "'/keys/k1'" in caught.value.message
    assert decider.asked == [("oid-1", P + "keys/sign/action", "/keys/k1")] * 2
    assert decider.caught_up == 1


def test_a_denial_is_decided_again_after_catching_up() -> None:
    decider = _Decider(False, after_catch_up=True)
    asyncio.run(authorize(decider, PRINCIPAL, "GET", "/keys", {}))
    assert decider.caught_up == 1
    allowed = _Decider(True)
    asyncio.run(authorize(allowed, PRINCIPAL, "GET", "/keys", {}))
    assert allowed.caught_up == 0


def test_head_needs_what_get_needs_and_unknown_operations_are_refused() -> None:
    decider = _Decider(True)
    asyncio.run(authorize(decider, PRINCIPAL, "HEAD", "/keys", {}))
    assert decider.asked == [("oid-1", P + "keys/read/action", "/keys")]
    with pytest.raises(Forbidden, match="No data action"):
        asyncio.run(authorize(decider, PRINCIPAL, "POST", "/no/such/template", {}))
