"""`mhsm role assignment create|list|delete` and `mhsm role definition ...`: the pool's RBAC
through KeyVaultAccessControlClient, flags after `az keyvault role`.

`--role` is a role's name ("Managed HSM Crypto User", any case), its GUID or its id.
`--assignee` is a principal's client id, object id or display name, looked up among the pool's
principals (`mhsm principal list`); az's `--assignee-object-id` is used as given. `--scope` is
`/` (default), `/keys` or `/keys/NAME`.
"""

from __future__ import annotations

import argparse
import uuid
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError

from openmhsm.cli import principals, role_definitions
from openmhsm.cli.output import emit, reports_errors
from openmhsm.cli.pool_location import pool_command_parent, pool_of
from openmhsm.client import Clients, connect

if TYPE_CHECKING:
    from azure.keyvault.administration import KeyVaultRoleAssignment, KeyVaultRoleDefinition

COLUMNS = ("name", "roleName", "principalId", "principalName", "scope")
_ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments/"
_PRINCIPAL_TYPES = (
    "Application", "DirectoryObjectOrGroup", "DirectoryRoleTemplate", "Everyone", "ForeignGroup",
    "Group", "MSI", "ServicePrincipal", "Unknown", "User",
)  # fmt: skip


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    role = commands.add_parser("role", help="role assignments and definitions (RBAC)")
    sub = role.add_subparsers(dest="role_command", required=True, metavar="COMMAND")
    common = pool_command_parent()
    assignment = sub.add_parser("assignment", help="assign roles, list and delete assignments")
    verbs = assignment.add_subparsers(dest="assignment_command", required=True, metavar="COMMAND")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--scope", default="/", help='"/", "/keys" or "/keys/NAME" (default /)')

    create = verbs.add_parser(
        "create", parents=[common, scope], help="assign a role to a principal at a scope"
    )
    create.add_argument("--role", required=True, help="the role's name, GUID or id")
    who = create.add_mutually_exclusive_group(required=True)
    _assignee_flags(who)
    create.add_argument(
        "--assignee-principal-type", "-t", choices=_PRINCIPAL_TYPES,
        help="accepted for az's sake; the pool knows its principals' types",
    )  # fmt: skip
    create.add_argument("--name", "-n", help="the assignment's name (a GUID; default: a new one)")
    create.set_defaults(run=reports_errors(run_create))

    listing = verbs.add_parser("list", parents=[common, scope], help="role assignments")
    listing.add_argument("--role", help="only this role's (name, GUID or id)")
    _assignee_flags(listing.add_mutually_exclusive_group(), "only this principal's")
    listing.set_defaults(run=reports_errors(run_list))

    delete = verbs.add_parser(
        "delete",
        parents=[common, scope],
        help="delete assignments: by --ids, by --name, or every one matching --role/--assignee",
    )
    delete.add_argument("--ids", nargs="+", metavar="ID", help="assignment ids (as listed)")
    delete.add_argument("--name", "-n", help="the assignment's name (a GUID) at --scope")
    delete.add_argument("--role", help="delete this role's assignments (with --assignee: theirs)")
    _assignee_flags(delete.add_mutually_exclusive_group(), "delete this principal's assignments")
    delete.set_defaults(run=reports_errors(run_delete))

    role_definitions.register(sub, common)


def _assignee_flags(group: argparse._MutuallyExclusiveGroup, what: str = "") -> None:
    group.add_argument(
        "--assignee", help=what or "the principal: client id, object id or display name"
    )
    group.add_argument(
        "--assignee-object-id", help=f"{what or 'the principal'}, by object id as given (az's flag)"
    )


def assignment_json(
    assignment: KeyVaultRoleAssignment, role_names: dict[str, str], names: dict[str, str]
) -> dict[str, Any]:
    """An assignment as az prints it, with its role's and principal's names when known."""
    props = assignment.properties
    principal = str(props.principal_id) if props is not None else ""
    definition = str(props.role_definition_id) if props is not None else ""
    return {
        "id": assignment.role_assignment_id,
        "name": assignment.name,
        "principalId": principal,
        "principalName": names.get(principal.lower()),
        "roleDefinitionId": definition,
        "roleName": role_names.get(role_definitions.guid_of(definition)),
        "scope": props.scope if props is not None else None,
        "type": assignment.type,
    }


class Directory:
    """The pool's roles and principals, fetched once per command."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.roles: list[KeyVaultRoleDefinition] = role_definitions.list_roles(
            clients.access_control
        )
        self.principals = self._principals()

    def _principals(self) -> list[dict[str, Any]]:
        # Needs the administrator's rights; a caller without them names object ids.
        try:
            listed = principals.call(self.clients, "GET", principals.PATH)["value"]
        except HttpResponseError:
            return []
        return [p for p in listed if isinstance(p, dict)]

    def role_names(self) -> dict[str, str]:
        return {str(r.name).lower(): str(r.role_name) for r in self.roles}

    def principal_names(self) -> dict[str, str]:
        return {str(p.get("object_id")).lower(): str(p.get("name")) for p in self.principals}

    def role(self, wanted: str) -> KeyVaultRoleDefinition:
        return role_definitions.find_role(self.roles, wanted)

    def object_id(self, assignee: str | None, object_id: str | None) -> str | None:
        """The object id --assignee names (client id, object id or unique display name), or
        --assignee-object-id. Raises ValueError for an ambiguous display name."""
        if object_id is not None or assignee is None:
            return object_id
        wanted = assignee.strip().lower()
        for key in ("object_id", "client_id"):
            for principal in self.principals:
                if str(principal.get(key, "")).lower() == wanted:
                    return str(principal["object_id"])
        named = [p for p in self.principals if str(p.get("name", "")).lower() == wanted]
        if len(named) > 1:
            raise ValueError(f"{len(named)} principals are named {assignee!r}: give a client id")
        return str(named[0]["object_id"]) if named else assignee


def run_create(args: argparse.Namespace) -> int:
    name = str(uuid.UUID(args.name)) if args.name else None
    with connect(pool_of(args)) as clients:
        directory = Directory(clients)
        role = directory.role(args.role)
        principal = directory.object_id(args.assignee, args.assignee_object_id)
        assert principal is not None  # one of the two is required
        made = clients.access_control.create_role_assignment(
            args.scope, str(role.id), principal, name=name
        )
        result = assignment_json(made, directory.role_names(), directory.principal_names())
    emit(result, args.output, COLUMNS)
    return 0


def _matching(
    clients: Clients, directory: Directory, args: argparse.Namespace
) -> list[KeyVaultRoleAssignment]:
    found = list(clients.access_control.list_role_assignments(args.scope))
    if args.role:
        wanted = str(directory.role(args.role).name).lower()
        found = [
            a for a in found
            if a.properties and role_definitions.guid_of(a.properties.role_definition_id) == wanted
        ]  # fmt: skip
    principal = directory.object_id(args.assignee, args.assignee_object_id)
    if principal is not None:
        found = [
            a for a in found
            if a.properties and str(a.properties.principal_id).lower() == principal.lower()
        ]  # fmt: skip
    return found


def run_list(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        directory = Directory(clients)
        found = _matching(clients, directory, args)
        roles, names = directory.role_names(), directory.principal_names()
    emit([assignment_json(a, roles, names) for a in found], args.output, COLUMNS)
    return 0


def split_assignment_id(assignment_id: str) -> tuple[str, str]:
    """(scope, name) of an assignment id such as `/keys/k1/providers/Microsoft.Authorization/
    roleAssignments/<name>`. Raises ValueError."""
    prefix, found, name = assignment_id.strip().partition(_ASSIGNMENTS)
    if not found or not name or "/" in name:
        raise ValueError(f"not a role assignment id: {assignment_id!r}")
    return prefix or "/", name


def run_delete(args: argparse.Namespace) -> int:
    chosen = [args.ids, args.name, args.role, args.assignee, args.assignee_object_id]
    if not any(chosen):
        raise ValueError("say which assignments: --ids, --name, or --role and/or --assignee")
    if ((args.ids or args.name) and any(chosen[2:])) or (args.ids and args.name):
        raise ValueError("give --ids, --name, or --role/--assignee, not several of them")
    with connect(pool_of(args)) as clients:
        client = clients.access_control
        directory = Directory(clients)
        if args.ids:
            targets = [split_assignment_id(i) for i in args.ids]
        elif args.name:
            targets = [(args.scope, args.name)]
        else:
            targets = [(a.properties.scope if a.properties else args.scope, str(a.name))
                       for a in _matching(clients, directory, args)]  # fmt: skip
        deleted = []
        for scope, name in targets:
            assignment = client.get_role_assignment(scope, name)
            client.delete_role_assignment(scope, name)
            deleted.append(assignment)
        roles, names = directory.role_names(), directory.principal_names()
    emit([assignment_json(a, roles, names) for a in deleted], args.output, COLUMNS)
    return 0
