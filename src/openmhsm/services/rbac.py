"""Managed HSM's local RBAC: role definitions, role assignments, and the decision "may this
principal perform this data action at this scope" (DESIGN §6, API §3.1). No HTTP here.

- Built-in definitions are computed (`auth/roles.py`), never stored. Custom ones live at
  `rbac/definitions/<guid>`: at most 50, set at scope `/` only, assignable at `/`, never with a
  built-in role's GUID or any other role's name.
- Assignments live at `rbac/assignments/<name>`, at `/`, `/keys` or `/keys/<name>`: at most 50 at
  `/` and at `/keys`, 10 per key. The definition must exist; a definition in use cannot be
  deleted (409 `RoleDefinitionHasAssignments`, as Azure RBAC answers).
- Records are kept by the key cache (one watch per partition; own writes applied at once), and
  decisions read only the in-memory index: O(assignments of the principal).
- Limits and "in use" are checked against this partition's cache, so two partitions racing on
  different records can briefly exceed a limit or leave an assignment to a deleted definition
  (which then grants nothing).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openmhsm.auth.roles import (
    BUILT_IN_ROLES,
    CUSTOM,
    Permission,
    RoleDefinition,
    check_data_action,
)
from openmhsm.errors import BadParameter, Conflict, NotFound
from openmhsm.services import rbac_index
from openmhsm.services.key_cache import Attempt, KeyCache
from openmhsm.services.rbac_index import RbacIndex, RoleAssignment, is_guid, principal_key
from openmhsm.services.validation import check_name
from openmhsm.storage.base import Delete, Put

MAX_CUSTOM_ROLES = 50
MAX_ASSIGNMENTS = {"/": 50, "/keys": 50}
MAX_KEY_ASSIGNMENTS = 10
MAX_TEXT = 1024
MAX_ACTIONS = 100
_DEFINITION_ID = re.compile(
    r"^/?(?:Microsoft\.KeyVault/)?providers/Microsoft\.Authorization/roleDefinitions/([^/]+)$",
    re.IGNORECASE,
)
_TERM = re.compile(
    r"^(?:(?P<at>atScope\(\))"
    r"|principalId\s+eq\s+'(?P<pid>[^']*)'"
    r"|assignedTo\('(?P<to>[^']*)'\)"
    r"|roleName\s+eq\s+'(?P<role>[^']*)')$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Filter:
    """A `$filter`: `atScope()`, `principalId eq '…'` (or `assignedTo('…')`), `roleName eq '…'`,
    joined by `and`."""

    at_scope: bool = False
    principal_id: str | None = None
    role_name: str | None = None


def parse_filter(text: str | None) -> Filter:
    """Raises BadParameter for anything else."""
    if not text or not text.strip():
        return Filter()
    at_scope, principal, role = False, None, None
    for term in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _TERM.fullmatch(term.strip())
        if match is None:
            raise BadParameter(f"The filter '{text[:200]}' is not supported.")
        at_scope = at_scope or match["at"] is not None
        principal = match["pid"] if match["pid"] is not None else match["to"] or principal
        role = match["role"] if match["role"] is not None else role
    return Filter(at_scope, principal, role)


def check_scope(scope: str) -> str:
    """`/`, `/keys` or `/keys/<valid key name>`. Raises BadParameter."""
    if scope in ("/", "/keys"):
        return scope
    if scope.startswith("/keys/"):
        check_name(scope[len("/keys/") :])
        return scope
    raise BadParameter(
        f"The scope '{scope[:200]}' is not valid: use '/', '/keys' or '/keys/<name>'."
    )


def definition_id_name(definition_id: Any) -> str:
    """The GUID in a role definition id, with or without a leading slash (or a bare GUID).
    Raises BadParameter."""
    if isinstance(definition_id, str):
        match = _DEFINITION_ID.fullmatch(definition_id.strip())
        name = match[1] if match else definition_id.strip()
        if is_guid(name):
            return name.lower()
    raise BadParameter("properties.roleDefinitionId is not a role definition id.")


def _guid(name: str, what: str) -> str:
    if not is_guid(name):
        raise BadParameter(f"The {what} name must be a GUID.")
    return name.lower()


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ACTIONS:
        raise BadParameter(f"{field} must be a list of at most {MAX_ACTIONS} strings.")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_TEXT for v in value):
        raise BadParameter(f"{field} must be a list of non-empty strings.")
    return tuple(value)


def _data_actions(value: Any, field: str) -> tuple[str, ...]:
    actions = _strings(value, field)
    for action in actions:
        problem = check_data_action(action)
        if problem is not None:
            raise BadParameter(f"{field}: {problem}")
    return actions


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadParameter(f"{field} must be a string of at most {MAX_TEXT} characters.")
    return value


def _permissions(value: Any) -> tuple[Permission, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ACTIONS:
        raise BadParameter("properties.permissions must be a list.")
    permissions = []
    for entry in value:
        if not isinstance(entry, dict):
            raise BadParameter("Each permission must be an object.")
        permissions.append(
            Permission(
                data_actions=_data_actions(entry.get("dataActions"), "dataActions"),
                not_data_actions=_data_actions(entry.get("notDataActions"), "notDataActions"),
                actions=_strings(entry.get("actions"), "actions"),
                not_actions=_strings(entry.get("notActions"), "notActions"),
            )
        )
    return tuple(permissions)


def _properties(body: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = body.get("properties")
    if not isinstance(properties, dict):
        raise BadParameter("The 'properties' object is required.")
    return properties


class RbacService:
    """Role definitions and assignments of the pool, over the partition's key cache."""

    def __init__(self, cache: KeyCache) -> None:
        self.cache = cache
        self.index = RbacIndex()
        cache.attach(rbac_index.PREFIX, self.index)

    def is_allowed(self, principal_id: str, data_action: str, scope: str) -> bool:
        """Whether any of the principal's assignments covering `scope` grants the action."""
        return self.index.is_allowed(principal_id, data_action, scope)

    async def catch_up(self) -> None:
        """Wait (briefly) for the changes other partitions committed to reach this one."""
        await self.cache.catch_up()

    # --- definitions -----------------------------------------------------------------------

    def list_definitions(self, query: Filter) -> list[RoleDefinition]:
        """Every definition (all are at `/`, so at or above any scope), by GUID."""
        roles = [*BUILT_IN_ROLES.values(), *self.index.definitions.values()]
        if query.role_name is not None:
            wanted = query.role_name.lower()
            roles = [r for r in roles if r.role_name.lower() == wanted]
        return sorted(roles, key=lambda r: r.name)

    def get_definition(self, name: str) -> RoleDefinition:
        """Raises NotFound."""
        role = self.index.definition(name)
        if role is None:
            raise NotFound(
                f"Role definition '{name[:64]}' was not found.", inner_code="RoleDefinitionNotFound"
            )
        return role

    async def set_definition(
        self, scope: str, name: str, body: Mapping[str, Any]
    ) -> RoleDefinition:
        """Create or replace a custom role. Raises BadParameter, Conflict."""
        if scope != "/":
            raise BadParameter("Role definitions can only be set at scope '/'.")
        lname = _guid(name, "role definition")
        if lname in BUILT_IN_ROLES:
            raise BadParameter("A built-in role definition cannot be changed.")
        properties = _properties(body)
        scopes = _strings(properties.get("assignableScopes"), "assignableScopes") or ("/",)
        if any(s != "/" for s in scopes):
            raise BadParameter("A custom role can only be assignable at scope '/'.")
        role = RoleDefinition(
            name=lname,
            role_name=_text(properties.get("roleName"), "roleName"),
            description=_text(properties.get("description"), "description"),
            permissions=_permissions(properties.get("permissions")),
            role_type=CUSTOM,
            assignable_scopes=scopes,
        )
        path = rbac_index.definition_path(lname)

        async def attempt() -> Attempt[RoleDefinition]:
            customs = self.index.definitions
            if lname not in customs and len(customs) >= MAX_CUSTOM_ROLES:
                raise BadParameter(
                    f"A pool holds at most {MAX_CUSTOM_ROLES} custom role definitions.",
                    inner_code="RoleDefinitionLimitExceeded",
                )
            if role.role_name and any(
                other.role_name.lower() == role.role_name.lower() and other.name != lname
                for other in (*BUILT_IN_ROLES.values(), *customs.values())
            ):
                raise Conflict(
                    f"A role definition named '{role.role_name[:200]}' already exists.",
                    inner_code="RoleDefinitionWithSameNameExists",
                )
            put = Put(path, rbac_index.dump_definition(role), self.cache.revision_of(path))
            return [(put, role)], role

        return await self.cache.write(lname, attempt, refresh_prefix=rbac_index.PREFIX)

    async def delete_definition(self, scope: str, name: str) -> RoleDefinition:
        """Remove a custom role that no assignment uses. Raises BadParameter, NotFound,
        Conflict."""
        if scope != "/":
            raise BadParameter("Role definitions can only be deleted at scope '/'.")
        role = self.get_definition(name)
        if role.name in BUILT_IN_ROLES:
            raise BadParameter("A built-in role definition cannot be deleted.")
        path = rbac_index.definition_path(role.name)

        async def attempt() -> Attempt[RoleDefinition]:
            current = self.get_definition(role.name)
            if any(a.role_id == role.name for a in self.index.assignments.values()):
                raise Conflict(
                    "The role definition has role assignments; delete them first.",
                    inner_code="RoleDefinitionHasAssignments",
                )
            return [(Delete(path, self.cache.revision_of(path)), None)], current

        return await self.cache.write(role.name, attempt, refresh_prefix=rbac_index.PREFIX)

    # --- assignments -----------------------------------------------------------------------

    def list_assignments(self, scope: str, query: Filter) -> list[RoleAssignment]:
        """Assignments at, above or below `scope` (`atScope()`: at or above), by name."""
        requested = check_scope(scope).lower()
        found = []
        for a in self.index.assignments.values():
            at = a.scope.lower()
            above = rbac_index.covers(at, requested)
            if not (above or (not query.at_scope and rbac_index.covers(requested, at))):
                continue
            if query.principal_id is not None and principal_key(a.principal_id) != principal_key(
                query.principal_id
            ):
                continue
            found.append(a)
        return sorted(found, key=lambda a: a.name)

    def get_assignment(self, scope: str, name: str) -> RoleAssignment:
        """The assignment `name` at exactly `scope`. Raises BadParameter, NotFound."""
        check_scope(scope)
        found = self.index.assignments.get(name.lower())
        if found is None or found.scope.lower() != scope.lower():
            raise NotFound(
                f"Role assignment '{name[:64]}' was not found at scope '{scope[:200]}'.",
                inner_code="RoleAssignmentNotFound",
            )
        return found

    async def create_assignment(
        self, scope: str, name: str, principal_id: Any, definition_id: Any
    ) -> RoleAssignment:
        """Assign a role; the same name with the same content again is answered as created.
        Raises BadParameter, NotFound (no such role), Conflict."""
        check_scope(scope)
        lname = _guid(name, "role assignment")
        if not isinstance(principal_id, str) or not 0 < len(principal_id.strip()) <= 256:
            raise BadParameter("properties.principalId is required.")
        role = self.get_definition(definition_id_name(definition_id))
        wanted = RoleAssignment(lname, scope, principal_id.strip(), role.name)
        path = rbac_index.assignment_path(lname)

        async def attempt() -> Attempt[RoleAssignment]:
            existing = self.index.assignments.get(lname)
            if existing is not None:
                if _same(existing, wanted):
                    return [], existing
                raise Conflict(
                    "A role assignment with this name exists with other properties.",
                    inner_code="RoleAssignmentUpdateNotPermitted",
                )
            self._check_new_assignment(wanted)
            put = Put(path, rbac_index.dump_assignment(wanted), 0)
            return [(put, wanted)], wanted

        return await self.cache.write(lname, attempt, refresh_prefix=rbac_index.PREFIX)

    def _check_new_assignment(self, wanted: RoleAssignment) -> None:
        scope = wanted.scope.lower()
        same_scope = [a for a in self.index.assignments.values() if a.scope.lower() == scope]
        if any(_same(a, wanted) for a in same_scope):
            raise Conflict("The role assignment already exists.", inner_code="RoleAssignmentExists")
        limit = MAX_ASSIGNMENTS.get(scope, MAX_KEY_ASSIGNMENTS)
        if len(same_scope) >= limit:
            raise BadParameter(
                f"At most {limit} role assignments can be made at scope '{wanted.scope}'.",
                inner_code="RoleAssignmentLimitExceeded",
            )

    async def delete_assignment(self, scope: str, name: str) -> RoleAssignment:
        """Raises BadParameter, NotFound. Looked up only once the cache has caught up (in
        `cache.write`): a partition whose watch lags must not answer 404 for an assignment
        another partition has just made, which the SDK takes for a successful delete."""
        check_scope(scope)

        async def attempt() -> Attempt[RoleAssignment]:
            current = self.get_assignment(scope, name)
            path = rbac_index.assignment_path(current.name)
            return [(Delete(path, self.cache.revision_of(path)), None)], current

        return await self.cache.write(name.lower(), attempt, refresh_prefix=rbac_index.PREFIX)

    async def ensure_assignment(self, principal_id: str, role_id: str, scope: str = "/") -> None:
        """Give a principal a role at `scope` unless it holds it there already (idempotent: the
        assignment's name derives from the three)."""
        if any(
            a.role_id == role_id and a.scope.lower() == scope.lower()
            for a in self.index.by_principal.get(principal_key(principal_id), {}).values()
        ):
            return
        name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"openmhsm:{principal_id}:{role_id}:{scope}"))
        await self.create_assignment(scope, name, principal_id, role_id)

    def has_assignments(self) -> bool:
        return bool(self.index.assignments)


def _same(a: RoleAssignment, b: RoleAssignment) -> bool:
    return (
        a.scope.lower() == b.scope.lower()
        and principal_key(a.principal_id) == principal_key(b.principal_id)
        and a.role_id == b.role_id
    )
