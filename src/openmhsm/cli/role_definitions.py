"""`mhsm role definition list|show|create|update|delete`: the pool's role definitions (built-in
and custom) through KeyVaultAccessControlClient, flags after `az keyvault role definition`.

A custom role is given as az takes it: `--role-definition` with a JSON object (or `@FILE`) of
`roleName`, `description`, `actions`, `notActions`, `dataActions`, `notDataActions` (or a
`permissions` list of those) and `assignableScopes`; `name` (a GUID) is made up when absent.
Custom roles live at scope `/`, as in Managed HSM.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.keyvault.administration import KeyVaultPermission

from openmhsm.cli.output import emit, reports_errors
from openmhsm.cli.pool_location import pool_of
from openmhsm.client import connect

if TYPE_CHECKING:
    from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleDefinition

COLUMNS = ("roleName", "name", "roleType", "description")
_PERMISSION_FIELDS = ("actions", "notActions", "dataActions", "notDataActions")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `definition ...` to `mhsm role`; `common` gives the pool and --output."""
    definition = sub.add_parser("definition", help="list, show and manage role definitions")
    verbs = definition.add_subparsers(dest="definition_command", required=True, metavar="COMMAND")
    scoped = argparse.ArgumentParser(add_help=False, parents=[common])
    scoped.add_argument("--scope", default="/", help='"/", "/keys" or "/keys/NAME" (default /)')

    listing = verbs.add_parser("list", parents=[scoped], help="the role definitions at a scope")
    listing.add_argument("--custom-role-only", action="store_true", help="custom roles only")
    listing.set_defaults(run=reports_errors(run_list))

    show = verbs.add_parser("show", parents=[scoped], help="one role definition")
    _name_or_role_name(show)
    show.set_defaults(run=reports_errors(run_show))

    body = argparse.ArgumentParser(add_help=False, parents=[common])
    body.add_argument(
        "--role-definition",
        required=True,
        metavar="JSON_OR_@FILE",
        help="the custom role as a JSON object, or @FILE holding one (see `mhsm role --help`)",
    )
    create = verbs.add_parser("create", parents=[body], help="create a custom role")
    create.set_defaults(run=reports_errors(run_create))
    update = verbs.add_parser(
        "update", parents=[body], help="replace a custom role (its name, id or roleName given)"
    )
    update.set_defaults(run=reports_errors(run_update))

    delete = verbs.add_parser("delete", parents=[scoped], help="delete a custom role")
    _name_or_role_name(delete)
    delete.set_defaults(run=reports_errors(run_delete))


def _name_or_role_name(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", "-n", help="the definition's name (a GUID) or id")
    which.add_argument("--role-name", help='the role\'s name, e.g. "Managed HSM Crypto User"')


def definition_json(role: KeyVaultRoleDefinition) -> dict[str, Any]:
    """A role definition as az prints it."""
    return {
        "assignableScopes": [str(s) for s in role.assignable_scopes or []],
        "description": role.description,
        "id": role.id,
        "name": role.name,
        "permissions": [
            {
                "actions": list(p.actions or []),
                "notActions": list(p.not_actions or []),
                "dataActions": [str(a) for a in p.data_actions or []],
                "notDataActions": [str(a) for a in p.not_data_actions or []],
            }
            for p in role.permissions or []
        ],
        "roleName": role.role_name,
        "roleType": role.role_type,
        "type": role.type,
    }


def guid_of(definition_id: str) -> str:
    """The GUID at the end of a role definition id (or the bare GUID), lower-cased."""
    return definition_id.rstrip("/").rpartition("/")[2].lower()


def find_role(roles: list[KeyVaultRoleDefinition], wanted: str) -> KeyVaultRoleDefinition:
    """The role whose roleName (any case), GUID or id is `wanted`. Raises ValueError."""
    lowered = wanted.strip().lower()
    guid = guid_of(lowered)
    for role in roles:
        if lowered == (role.role_name or "").lower() or guid == (role.name or "").lower():
            return role
    raise ValueError(f"no role named {wanted!r}: see `mhsm role definition list`")


def list_roles(
    client: KeyVaultAccessControlClient, scope: str = "/"
) -> list[KeyVaultRoleDefinition]:
    return list(client.list_role_definitions(scope))


def run_list(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        roles = list_roles(clients.access_control, args.scope)
    if args.custom_role_only:
        roles = [r for r in roles if r.role_type == "CustomRole"]
    emit([definition_json(r) for r in roles], args.output, COLUMNS)
    return 0


def _named_role(
    client: KeyVaultAccessControlClient, args: argparse.Namespace
) -> KeyVaultRoleDefinition:
    if args.name is not None:
        return client.get_role_definition(args.scope, guid_of(args.name))
    return find_role(list_roles(client, args.scope), args.role_name)


def run_show(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(definition_json(_named_role(clients.access_control, args)), args.output, COLUMNS)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        client = clients.access_control
        role = _named_role(client, args)
        client.delete_role_definition(args.scope, str(role.name))
    emit(definition_json(role), args.output, COLUMNS)
    return 0


def read_role_definition(text: str) -> dict[str, Any]:
    """`--role-definition`: a JSON object, or `@FILE` holding one. Raises ValueError, OSError."""
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        body = json.loads(source)
    except ValueError:
        raise ValueError("--role-definition is not JSON (or @FILE of JSON)") from None
    if not isinstance(body, dict):
        raise ValueError("--role-definition must be a JSON object")
    return body


def permissions_of(body: dict[str, Any]) -> list[KeyVaultPermission]:
    """az's flat `actions`/`dataActions`/... fields, or a `permissions` list of them."""
    listed = body.get("permissions")
    groups = listed if isinstance(listed, list) else [body]
    permissions = []
    for group in groups:
        if not isinstance(group, dict):
            raise ValueError("--role-definition: each permission is a JSON object")
        fields = {f: group.get(f) or [] for f in _PERMISSION_FIELDS}
        if not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in fields.values()
        ):
            raise ValueError("--role-definition: actions are lists of strings")
        permissions.append(
            KeyVaultPermission(
                actions=fields["actions"],
                not_actions=fields["notActions"],
                data_actions=fields["dataActions"],
                not_data_actions=fields["notDataActions"],
            )
        )
    return permissions


def _set(
    client: KeyVaultAccessControlClient, name: str, body: dict[str, Any]
) -> KeyVaultRoleDefinition:
    scopes = body.get("assignableScopes") or ["/"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError("--role-definition: assignableScopes is a list of scopes")
    return client.set_role_definition(
        "/",
        name=name,
        role_name=body.get("roleName"),
        description=body.get("description"),
        permissions=permissions_of(body),
        assignable_scopes=scopes,
    )


def run_create(args: argparse.Namespace) -> int:
    body = read_role_definition(args.role_definition)
    name = guid_of(str(body.get("name") or body.get("id") or uuid.uuid4()))
    with connect(pool_of(args)) as clients:
        made = _set(clients.access_control, name, body)
    emit(definition_json(made), args.output, COLUMNS)
    return 0


def run_update(args: argparse.Namespace) -> int:
    body = read_role_definition(args.role_definition)
    with connect(pool_of(args)) as clients:
        client = clients.access_control
        given = body.get("name") or body.get("id")
        if given:
            name = guid_of(str(given))
        elif body.get("roleName"):
            name = str(find_role(list_roles(client), str(body["roleName"])).name)
        else:
            raise ValueError("--role-definition: give the role's name (GUID), id or roleName")
        client.get_role_definition("/", name)  # update, never create: NotFound if it is not there
        updated = _set(client, name, body)
    emit(definition_json(updated), args.output, COLUMNS)
    return 0
