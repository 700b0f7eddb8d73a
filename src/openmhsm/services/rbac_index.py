"""RBAC records (custom role definitions, role assignments), their stored format, and the
partition's in-memory index of them, fed by the key cache (`KeyCache.attach`).

Records are JSON with a version field, sealed by the barrier like every record:
`rbac/definitions/<guid>` and `rbac/assignments/<name>`, names lower-cased. The index answers
"which assignments does this principal hold" in one dict lookup, and memoises whether a role
grants an action, so an authorization decision reads no storage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from openmhsm.auth.roles import BUILT_IN_ROLES, CUSTOM, Permission, RoleDefinition

PREFIX = "rbac/"
DEFINITIONS = "rbac/definitions/"
ASSIGNMENTS = "rbac/assignments/"
_RECORD_VERSION = 1
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    """`role_id` is the definition's GUID; `scope` keeps the form it was assigned with."""

    name: str
    scope: str
    principal_id: str
    role_id: str


def principal_key(principal_id: str) -> str:
    """How principal ids compare: GUIDs (Entra object ids) case-insensitively, anything else
    (an external issuer's `sub`) exactly."""
    lowered = principal_id.lower()
    return lowered if _GUID.fullmatch(lowered) else principal_id


def is_guid(text: str) -> bool:
    return _GUID.fullmatch(text.lower()) is not None


def definition_path(name: str) -> str:
    return DEFINITIONS + name.lower()


def assignment_path(name: str) -> str:
    return ASSIGNMENTS + name.lower()


def dump_definition(role: RoleDefinition) -> bytes:
    record = {
        "version": _RECORD_VERSION,
        "name": role.name,
        "roleName": role.role_name,
        "description": role.description,
        "assignableScopes": list(role.assignable_scopes),
        "permissions": [
            {
                "dataActions": list(p.data_actions),
                "notDataActions": list(p.not_data_actions),
                "actions": list(p.actions),
                "notActions": list(p.not_actions),
            }
            for p in role.permissions
        ],
    }
    return json.dumps(record, separators=(",", ":")).encode()


def load_definition(value: bytes) -> RoleDefinition:
    record = _load(value)
    return RoleDefinition(
        name=record["name"],
        role_name=record["roleName"],
        description=record["description"],
        permissions=tuple(
            Permission(
                data_actions=tuple(p["dataActions"]),
                not_data_actions=tuple(p["notDataActions"]),
                actions=tuple(p["actions"]),
                not_actions=tuple(p["notActions"]),
            )
            for p in record["permissions"]
        ),
        role_type=CUSTOM,
        assignable_scopes=tuple(record["assignableScopes"]),
    )


def dump_assignment(assignment: RoleAssignment) -> bytes:
    record = {
        "version": _RECORD_VERSION,
        "name": assignment.name,
        "scope": assignment.scope,
        "principalId": assignment.principal_id,
        "roleId": assignment.role_id,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def load_assignment(value: bytes) -> RoleAssignment:
    record = _load(value)
    return RoleAssignment(
        name=record["name"],
        scope=record["scope"],
        principal_id=record["principalId"],
        role_id=record["roleId"],
    )


def _load(value: bytes) -> dict[str, Any]:
    record = json.loads(value)
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
        raise ValueError("unsupported RBAC record")
    return record


def covers(assigned: str, requested: str) -> bool:
    """Whether an assignment at scope `assigned` applies to a request at scope `requested`
    (both lower case): `/` covers everything, `/keys` every key, `/keys/<name>` that key."""
    return (
        assigned == "/"
        or assigned == requested
        or (assigned == "/keys" and requested.startswith("/keys/"))
    )


class RbacIndex:
    """Custom definitions and assignments by name, and assignments by principal."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.definitions: dict[str, RoleDefinition] = {}
        self.assignments: dict[str, RoleAssignment] = {}
        self.by_principal: dict[str, dict[str, RoleAssignment]] = {}
        self._grants: dict[tuple[str, str], bool] = {}

    def apply(self, kind: str, path: str, value: bytes | None, parsed: Any) -> None:
        if path.startswith(DEFINITIONS):
            name = path[len(DEFINITIONS) :]
            self._grants.clear()
            if kind == "put":
                self.definitions[name] = parsed or load_definition(value or b"")
            else:
                self.definitions.pop(name, None)
        elif path.startswith(ASSIGNMENTS):
            name = path[len(ASSIGNMENTS) :]
            self._forget(name)
            if kind == "put":
                assignment = parsed or load_assignment(value or b"")
                self.assignments[name] = assignment
                key = principal_key(assignment.principal_id)
                self.by_principal.setdefault(key, {})[name] = assignment

    def _forget(self, name: str) -> None:
        old = self.assignments.pop(name, None)
        if old is None:
            return
        key = principal_key(old.principal_id)
        held = self.by_principal.get(key)
        if held is not None:
            held.pop(name, None)
            if not held:
                del self.by_principal[key]

    def definition(self, name: str) -> RoleDefinition | None:
        lowered = name.lower()
        return BUILT_IN_ROLES.get(lowered) or self.definitions.get(lowered)

    def grants(self, role_id: str, action: str) -> bool:
        """Whether the role grants `action`; an assignment to a role since deleted grants
        nothing. Memoised until a definition changes (few roles, few actions)."""
        key = (role_id, action)
        known = self._grants.get(key)
        if known is None:
            role = self.definition(role_id)
            known = self._grants[key] = role is not None and role.grants(action)
        return known

    def is_allowed(self, principal_id: str, action: str, scope: str) -> bool:
        held = self.by_principal.get(principal_id) or self.by_principal.get(
            principal_key(principal_id)
        )
        if not held:
            return False
        requested = scope.lower()
        for a in held.values():
            if covers(a.scope.lower(), requested) and self.grants(a.role_id, action):
                return True
        return False
