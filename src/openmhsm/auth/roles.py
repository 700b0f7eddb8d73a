"""Managed HSM's role catalogue: the data actions and the nine built-in role definitions, with
their real ids and grants (API §3.1), and how a role's permissions grant one data action.

The grants are the docs table of API §3.1 corrected by what the service itself answers to GET
roleDefinitions (recorded in the Azure SDK for JS test recordings, 2021-2022): Crypto User also
holds `rng/action` (without it no built-in role could get random bytes), Crypto Officer
`keys/export/action`, and Crypto Auditor `keys/deletedKeys/read/action` where the docs table
ticks `keys/deletedKeys/delete` (purge) for a role that "reads but does not use" keys.

Actions compare case-insensitively, as Azure's do. A data action in a custom role may end with
`*` (`Microsoft.KeyVault/managedHsm/keys/*`): it grants every action that starts with the rest.
Within one permission, `notDataActions` subtract from `dataActions`; a role grants an action when
any of its permissions does.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "Microsoft.KeyVault/managedHsm/"
BUILT_IN = "AKVBuiltInRole"
CUSTOM = "CustomRole"


def _a(suffix: str) -> str:
    return PREFIX + suffix


# The SDK's KeyVaultDataAction enum (34 values), plus `keys/rotate/action` from the docs.
KEYS_READ = _a("keys/read/action")
KEYS_WRITE = _a("keys/write/action")
DELETED_READ = _a("keys/deletedKeys/read/action")
DELETED_RECOVER = _a("keys/deletedKeys/recover/action")
KEYS_BACKUP = _a("keys/backup/action")
KEYS_RESTORE = _a("keys/restore/action")
KEYS_ENCRYPT = _a("keys/encrypt/action")
KEYS_DECRYPT = _a("keys/decrypt/action")
KEYS_WRAP = _a("keys/wrap/action")
KEYS_UNWRAP = _a("keys/unwrap/action")
KEYS_SIGN = _a("keys/sign/action")
KEYS_VERIFY = _a("keys/verify/action")
KEYS_CREATE = _a("keys/create")
KEYS_DELETE = _a("keys/delete")
KEYS_EXPORT = _a("keys/export/action")
KEYS_RELEASE = _a("keys/release/action")
KEYS_IMPORT = _a("keys/import/action")
DELETED_PURGE = _a("keys/deletedKeys/delete")
KEYS_ROTATE = _a("keys/rotate/action")
ASSIGNMENTS_READ = _a("roleAssignments/read/action")
ASSIGNMENTS_WRITE = _a("roleAssignments/write/action")
ASSIGNMENTS_DELETE = _a("roleAssignments/delete/action")
DEFINITIONS_READ = _a("roleDefinitions/read/action")
DEFINITIONS_WRITE = _a("roleDefinitions/write/action")
DEFINITIONS_DELETE = _a("roleDefinitions/delete/action")
SD_DOWNLOAD = _a("securitydomain/download/action")
SD_DOWNLOAD_READ = _a("securitydomain/download/read")
SD_UPLOAD = _a("securitydomain/upload/action")
SD_UPLOAD_READ = _a("securitydomain/upload/read")
SD_TRANSFER_KEY = _a("securitydomain/transferkey/read")
BACKUP_START = _a("backup/start/action")
BACKUP_STATUS = _a("backup/status/action")
RESTORE_START = _a("restore/start/action")
RESTORE_STATUS = _a("restore/status/action")
RNG = _a("rng/action")

DATA_ACTIONS: tuple[str, ...] = (
    KEYS_READ, KEYS_WRITE, DELETED_READ, DELETED_RECOVER, KEYS_BACKUP, KEYS_RESTORE,
    KEYS_ENCRYPT, KEYS_DECRYPT, KEYS_WRAP, KEYS_UNWRAP, KEYS_SIGN, KEYS_VERIFY, KEYS_CREATE,
    KEYS_DELETE, KEYS_EXPORT, KEYS_RELEASE, KEYS_IMPORT, DELETED_PURGE, KEYS_ROTATE,
    ASSIGNMENTS_READ, ASSIGNMENTS_WRITE, ASSIGNMENTS_DELETE,
    DEFINITIONS_READ, DEFINITIONS_WRITE, DEFINITIONS_DELETE,
    SD_DOWNLOAD, SD_DOWNLOAD_READ, SD_UPLOAD, SD_UPLOAD_READ, SD_TRANSFER_KEY,
    BACKUP_START, BACKUP_STATUS, RESTORE_START, RESTORE_STATUS, RNG,
)  # fmt: skip
_KNOWN = {action.lower(): action for action in DATA_ACTIONS}

ROLE_READS = (ASSIGNMENTS_READ, DEFINITIONS_READ)
ROLE_MANAGEMENT = (
    ASSIGNMENTS_READ, ASSIGNMENTS_WRITE, ASSIGNMENTS_DELETE,
    DEFINITIONS_READ, DEFINITIONS_WRITE, DEFINITIONS_DELETE,
)  # fmt: skip
CRYPTO = (KEYS_ENCRYPT, KEYS_DECRYPT, KEYS_WRAP, KEYS_UNWRAP, KEYS_SIGN, KEYS_VERIFY)


@dataclass(frozen=True, slots=True)
class Permission:
    """One entry of a role's `permissions`. `actions`/`notActions` (control plane) are kept and
    shown, never evaluated: Managed HSM's local RBAC governs data actions only."""

    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()

    def grants(self, action: str) -> bool:
        lowered = action.lower()
        return any(_matches(p, lowered) for p in self.data_actions) and not any(
            _matches(p, lowered) for p in self.not_data_actions
        )


@dataclass(frozen=True, slots=True)
class RoleDefinition:
    """A role: `name` is its GUID (lower case), `role_name` what people call it."""

    name: str
    role_name: str
    description: str
    permissions: tuple[Permission, ...]
    role_type: str = CUSTOM
    assignable_scopes: tuple[str, ...] = ("/",)

    def grants(self, action: str) -> bool:
        return any(p.grants(action) for p in self.permissions)


def _matches(pattern: str, lowered_action: str) -> bool:
    lowered = pattern.lower()
    if lowered.endswith("*"):
        return lowered_action.startswith(lowered[:-1])
    return lowered == lowered_action


def check_data_action(pattern: str) -> str | None:
    """Why `pattern` is not a data action a role may hold, or None when it is one: a known
    action, or a prefix ending with `*` that covers at least one known action."""
    lowered = pattern.lower()
    if lowered.endswith("*"):
        if "*" in lowered[:-1] or not any(_matches(lowered, a) for a in _KNOWN):
            return f"'{pattern[:200]}' matches no Managed HSM data action."
        return None
    if lowered not in _KNOWN:
        return f"'{pattern[:200]}' is not a Managed HSM data action."
    return None


def _built_in(guid: str, role_name: str, description: str, *actions: str) -> RoleDefinition:
    return RoleDefinition(guid, role_name, description, (Permission(actions),), BUILT_IN)


ADMINISTRATOR = "a290e904-7015-4bba-90c8-60543313cdb4"
CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
POLICY_ADMINISTRATOR = "4bd23610-cdcf-4971-bdee-bdc562cc28e4"
CRYPTO_AUDITOR = "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
ENCRYPTION_USER = "33413926-3206-4cdd-b39a-83574fe37a17"
RELEASE_USER = "21dbd100-6940-42c2-9190-5d6cb909625c"
BACKUP = "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
RESTORE = "6efe6056-5259-49d2-8b3d-d3d73544b20b"

BUILT_IN_ROLES: dict[str, RoleDefinition] = {
    role.name: role
    for role in (
        _built_in(
            ADMINISTRATOR,
            "Managed HSM Administrator",
            "Security domain, full backup and restore, and role management; no key operations.",
            SD_DOWNLOAD, SD_DOWNLOAD_READ, SD_UPLOAD, SD_UPLOAD_READ, SD_TRANSFER_KEY,
            *ROLE_MANAGEMENT, BACKUP_START, BACKUP_STATUS, RESTORE_START, RESTORE_STATUS,
        ),
        _built_in(
            CRYPTO_OFFICER,
            "Managed HSM Crypto Officer",
            "Role management, deleted keys (read, recover, purge), and key export.",
            DELETED_READ, DELETED_RECOVER, DELETED_PURGE, KEYS_EXPORT, *ROLE_MANAGEMENT,
        ),
        _built_in(
            CRYPTO_USER,
            "Managed HSM Crypto User",
            "Every key management and cryptographic operation except on deleted keys.",
            KEYS_READ, KEYS_WRITE, KEYS_ROTATE, KEYS_CREATE, KEYS_DELETE, KEYS_BACKUP,
            KEYS_RESTORE, KEYS_RELEASE, KEYS_IMPORT, *CRYPTO, RNG, *ROLE_READS,
        ),
        _built_in(
            POLICY_ADMINISTRATOR,
            "Managed HSM Policy Administrator",
            "Creating and deleting role assignments.",
            *ROLE_MANAGEMENT,
        ),
        # Not `keys/deletedKeys/delete` (purge), which the docs table ticks: a typo (see above).
        _built_in(
            CRYPTO_AUDITOR,
            "Managed HSM Crypto Auditor",
            "Reading key attributes, not using keys.",
            KEYS_READ, DELETED_READ, *ROLE_READS,
        ),
        _built_in(
            ENCRYPTION_USER,
            "Managed HSM Crypto Service Encryption User",
            "Using a key for service encryption: read, wrap and unwrap.",
            KEYS_READ, KEYS_WRAP, KEYS_UNWRAP,
        ),
        _built_in(
            RELEASE_USER,
            "Managed HSM Crypto Service Release User",
            "Releasing keys to a trusted execution environment.",
            KEYS_RELEASE,
        ),
        _built_in(
            BACKUP,
            "Managed HSM Backup",
            "Backing up single keys or the whole HSM.",
            KEYS_BACKUP, BACKUP_START, BACKUP_STATUS,
        ),
        _built_in(
            RESTORE,
            "Managed HSM Restore",
            "Restoring single keys or the whole HSM.",
            KEYS_RESTORE, RESTORE_START, RESTORE_STATUS,
        ),
    )
}  # fmt: skip
