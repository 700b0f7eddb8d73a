"""Which data action each data-plane operation needs, at which scope, and the decision.

`OPERATIONS` is the one table: every route of `api.app.data_plane_routes` (METHOD + path
template) maps to exactly one data action of `auth/roles.py`; a unit test keeps it complete. The
scope of a request follows from its template: `/keys/<name>` for a path about one key (including
the RBAC paths scoped to it), `/keys` for the key collection (`/keys`, `/deletedkeys…`,
`/keys/restore`, the RBAC paths at `/keys`), `/` for everything else.

Choices where Azure documents no data action:
- settings: reading needs `roleDefinitions/read/action` and changing needs
  `roleDefinitions/write/action`, as a pool-wide policy is administered like its roles.
- `/openmhsm/principals` (OpenMHSM's own identity administration): listing needs
  `roleAssignments/read/action`, creating and resetting a secret `roleAssignments/write/action`,
  deleting `roleAssignments/delete/action`; whoever may assign roles may already give any
  principal any power, so this grants nothing more.
- attestation reads key attributes: `keys/read/action`.
- `/openmhsm/jobs` (OpenMHSM's list of recent backups and restores) needs
  `backup/status/action`, as reading any one backup's status does.
- `/openmhsm/ping` (an authenticated call that does nothing, for benchmarks) needs
  `keys/read/action`, which every role that uses keys has.
- `/openmhsm/dashboard` (the data of the `/ui` dashboard: pool health, metrics, backups, recent
  audit events of every caller) needs `securitydomain/download/read`, a read action that among
  the built-in roles only Managed HSM Administrator holds, as the dashboard is for administrators.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from openmhsm.auth import roles as r
from openmhsm.errors import Forbidden
from openmhsm.types import Principal

_AUTHZ = "/providers/Microsoft.Authorization"
_KEY_OPERATIONS = {
    "sign": r.KEYS_SIGN,
    "verify": r.KEYS_VERIFY,
    "encrypt": r.KEYS_ENCRYPT,
    "decrypt": r.KEYS_DECRYPT,
    "wrapkey": r.KEYS_WRAP,
    "unwrapkey": r.KEYS_UNWRAP,
}


def _rbac_operations() -> dict[tuple[str, str], str]:
    table = {}
    for scope in ("", "/keys", "/keys/{name}"):
        for kind, read, write, delete, item in (
            ("roleDefinitions", r.DEFINITIONS_READ, r.DEFINITIONS_WRITE, r.DEFINITIONS_DELETE,
             "{definition}"),
            ("roleAssignments", r.ASSIGNMENTS_READ, r.ASSIGNMENTS_WRITE, r.ASSIGNMENTS_DELETE,
             "{assignment}"),
        ):  # fmt: skip
            collection = f"{scope}{_AUTHZ}/{kind}"
            table[("GET", collection)] = read
            table[("GET", f"{collection}/{item}")] = read
            table[("PUT", f"{collection}/{item}")] = write
            table[("DELETE", f"{collection}/{item}")] = delete
    return table


OPERATIONS: dict[tuple[str, str], str] = {
    # keys
    ("GET", "/keys"): r.KEYS_READ,
    ("POST", "/keys/{name}/create"): r.KEYS_CREATE,
    ("PUT", "/keys/{name}"): r.KEYS_IMPORT,
    ("GET", "/keys/{name}/"): r.KEYS_READ,
    ("GET", "/keys/{name}/{version}"): r.KEYS_READ,
    ("PATCH", "/keys/{name}/"): r.KEYS_WRITE,
    ("PATCH", "/keys/{name}/{version}"): r.KEYS_WRITE,
    ("GET", "/keys/{name}/versions"): r.KEYS_READ,
    ("DELETE", "/keys/{name}"): r.KEYS_DELETE,
    ("POST", "/keys/{name}/rotate"): r.KEYS_ROTATE,
    ("GET", "/keys/{name}/rotationpolicy"): r.KEYS_READ,
    ("PUT", "/keys/{name}/rotationpolicy"): r.KEYS_WRITE,
    ("POST", "/keys/{name}//release"): r.KEYS_RELEASE,
    ("POST", "/keys/{name}/{version}/release"): r.KEYS_RELEASE,
    ("GET", "/keys/{name}//attestation"): r.KEYS_READ,
    ("GET", "/keys/{name}/{version}/attestation"): r.KEYS_READ,
    ("POST", "/keys/{name}/backup"): r.KEYS_BACKUP,
    ("POST", "/keys/restore"): r.KEYS_RESTORE,
    **{("POST", f"/keys/{{name}}//{op}"): action for op, action in _KEY_OPERATIONS.items()},
    **{
        ("POST", f"/keys/{{name}}/{{version}}/{op}"): action
        for op, action in _KEY_OPERATIONS.items()
    },
    # full backup and restore, selective key restore
    ("POST", "/backup"): r.BACKUP_START,
    ("POST", "/prebackup"): r.BACKUP_START,
    ("GET", "/backup/{job}/pending"): r.BACKUP_STATUS,
    ("PUT", "/restore"): r.RESTORE_START,
    ("PUT", "/prerestore"): r.RESTORE_START,
    ("PUT", "/keys/{name}/restore"): r.RESTORE_START,
    ("GET", "/restore/{job}/pending"): r.RESTORE_STATUS,
    ("GET", "/openmhsm/jobs"): r.BACKUP_STATUS,
    ("GET", "/openmhsm/ping"): r.KEYS_READ,
    ("GET", "/openmhsm/dashboard"): r.SD_DOWNLOAD_READ,
    # deleted keys
    ("GET", "/deletedkeys"): r.DELETED_READ,
    ("GET", "/deletedkeys/{name}"): r.DELETED_READ,
    ("POST", "/deletedkeys/{name}/recover"): r.DELETED_RECOVER,
    ("DELETE", "/deletedkeys/{name}"): r.DELETED_PURGE,
    # random bytes
    ("POST", "/rng"): r.RNG,
    # security domain
    ("POST", "/securitydomain/download"): r.SD_DOWNLOAD,
    ("GET", "/securitydomain/download/pending"): r.SD_DOWNLOAD_READ,
    ("GET", "/securitydomain/upload"): r.SD_TRANSFER_KEY,
    ("POST", "/securitydomain/upload"): r.SD_UPLOAD,
    ("GET", "/securitydomain/upload/pending"): r.SD_UPLOAD_READ,
    # settings
    ("GET", "/settings"): r.DEFINITIONS_READ,
    ("GET", "/settings/{name}"): r.DEFINITIONS_READ,
    ("PATCH", "/settings/{name}"): r.DEFINITIONS_WRITE,
    # principals (OpenMHSM's own)
    ("GET", "/openmhsm/principals"): r.ASSIGNMENTS_READ,
    ("POST", "/openmhsm/principals"): r.ASSIGNMENTS_WRITE,
    ("DELETE", "/openmhsm/principals/{client_id}"): r.ASSIGNMENTS_DELETE,
    ("POST", "/openmhsm/principals/{client_id}/reset-secret"): r.ASSIGNMENTS_WRITE,
    # role definitions and assignments at `/`, `/keys`, `/keys/{name}`
    **_rbac_operations(),
}


class Decider(Protocol):
    def is_allowed(self, principal_id: str, data_action: str, scope: str) -> bool: ...

    async def catch_up(self) -> None:
        """Apply the role changes storage holds that this partition has not seen yet."""


def request_scope(template: str, path_params: Mapping[str, Any]) -> str:
    """The RBAC scope a request on `template` acts at."""
    if template.startswith("/keys/{name}"):
        return f"/keys/{path_params['name']}"
    if template.startswith(("/keys", "/deletedkeys")):
        return "/keys"
    return "/"


async def authorize(
    decider: Decider,
    principal: Principal,
    method: str,
    template: str,
    path_params: Mapping[str, Any],
) -> None:
    """Allow the request or raise Forbidden (inner code `ForbiddenByRbac`) naming the data
    action the principal lacks; an operation missing from the table is refused, never let by.

    The decision reads memory only. Before refusing, the partition catches up with storage
    once, so a role just assigned through another partition is effective at once."""
    action = OPERATIONS.get(("GET" if method == "HEAD" else method, template))
    if action is None:
        raise Forbidden(
            f"No data action is defined for {method} {template}.", inner_code="ForbiddenByRbac"
        )
    scope = request_scope(template, path_params)
    if decider.is_allowed(principal.object_id, action, scope):
        return
    await decider.catch_up()
    if not decider.is_allowed(principal.object_id, action, scope):
        raise Forbidden(
            "Caller is not authorized to perform action on resource. "
            f"Caller: oid={principal.object_id}. Action: '{action}'. Resource: '{scope[:140]}'.",
            inner_code="ForbiddenByRbac",
        )
