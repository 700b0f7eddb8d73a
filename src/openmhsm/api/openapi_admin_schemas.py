"""The `components.schemas` of the OpenAPI document's administration side: RBAC (API.md §3.1),
full backup and restore (§3.2), settings (§3.3), the security domain (§4.1), OpenMHSM's own
principals, jobs and ping, and the public health and token endpoints (§2.2, §2.3). Data only."""

from __future__ import annotations

from openmhsm.api.openapi_schemas import (
    BOOLEAN,
    INTEGER,
    NULLABLE_STRING,
    STRING,
    UNIX_TIME,
    array,
    obj,
    ref,
)
from openmhsm.types import JSON

_TEXT: JSON = {"type": "string", "maxLength": 1024}
_ACTIONS: JSON = array({"type": "string", "minLength": 1, "maxLength": 1024}, maxItems=100)
_URI: JSON = {"type": "string", "minLength": 1, "maxLength": 2048}

_RBAC: dict[str, JSON] = {
    "Permission": obj(
        {
            "actions": _ACTIONS,
            "notActions": _ACTIONS,
            "dataActions": _ACTIONS,
            "notDataActions": _ACTIONS,
        }
    ),
    "RoleDefinitionProperties": obj(
        {
            "roleName": _TEXT,
            "description": _TEXT,
            "type": {"type": "string", "enum": ["AKVBuiltInRole", "CustomRole"]},
            "permissions": array(ref("Permission"), maxItems=100),
            "assignableScopes": _ACTIONS,
        }
    ),
    "RoleDefinition": obj(
        {
            "id": STRING,
            "name": STRING,
            "type": {"type": "string", "enum": ["Microsoft.Authorization/roleDefinitions"]},
            "properties": ref("RoleDefinitionProperties"),
        },
        "id",
        "name",
        "type",
        "properties",
    ),
    "RoleDefinitionCreateParameters": obj(
        {"properties": ref("RoleDefinitionProperties")}, "properties"
    ),
    "RoleDefinitionListResult": obj(
        {"value": array(ref("RoleDefinition")), "nextLink": NULLABLE_STRING}, "value"
    ),
    "RoleAssignment": obj(
        {
            "id": STRING,
            "name": STRING,
            "type": {"type": "string", "enum": ["Microsoft.Authorization/roleAssignments"]},
            "properties": obj(
                {"scope": STRING, "roleDefinitionId": STRING, "principalId": STRING},
                "scope",
                "roleDefinitionId",
                "principalId",
            ),
        },
        "id",
        "name",
        "type",
        "properties",
    ),
    "RoleAssignmentCreateParameters": obj(
        {
            "properties": obj(
                {"roleDefinitionId": STRING, "principalId": STRING},
                "roleDefinitionId",
                "principalId",
            )
        },
        "properties",
    ),
    "RoleAssignmentListResult": obj(
        {"value": array(ref("RoleAssignment")), "nextLink": NULLABLE_STRING}, "value"
    ),
}

_BACKUP: dict[str, JSON] = {
    "SASTokenParameter": obj(
        {"storageResourceUri": _URI, "token": _URI, "useManagedIdentity": BOOLEAN},
        "storageResourceUri",
    ),
    "RestoreOperationParameters": obj(
        {"sasTokenParameters": ref("SASTokenParameter"), "folderToRestore": _URI},
        "sasTokenParameters",
        "folderToRestore",
    ),
    "SelectiveKeyRestoreOperationParameters": obj(
        {"sasTokenParameters": ref("SASTokenParameter"), "folder": _URI},
        "sasTokenParameters",
        "folder",
    ),
    "JobStatus": obj(
        {
            "status": {"type": "string", "enum": ["InProgress", "Succeeded", "Failed"]},
            "statusDetails": NULLABLE_STRING,
            # Key Vault's error object itself (not wrapped in "error"), or null.
            "error": obj(
                {
                    "code": STRING,
                    "message": STRING,
                    "innererror": {"type": "object", "nullable": True},
                },
                "code",
                "message",
                nullable=True,
            ),
            "startTime": UNIX_TIME,
            "endTime": {**UNIX_TIME, "nullable": True},
            "jobId": STRING,
            "azureStorageBlobContainerUri": NULLABLE_STRING,
            "progress": obj(
                {
                    "phase": NULLABLE_STRING,
                    "done": INTEGER,
                    "total": {"type": "integer", "nullable": True},
                }
            ),
        },
        "status",
        "jobId",
        "startTime",
    ),
    "JobListResult": obj(
        {"value": array({"allOf": [ref("JobStatus"), obj({"kind": STRING}, "kind")]})}, "value"
    ),
}

_SETTINGS: dict[str, JSON] = {
    "Setting": obj(
        {"name": STRING, "value": STRING, "type": {"type": "string", "enum": ["boolean"]}},
        "name",
        "value",
    ),
    "SettingsListResult": obj({"settings": array(ref("Setting"))}, "settings"),
    "UpdateSettingRequest": obj({"value": STRING}, "value"),
}

_SECURITY_DOMAIN: dict[str, JSON] = {
    "CertificateInfo": obj(
        {
            "certificates": array(
                obj(
                    {
                        "kty": STRING,
                        "alg": STRING,
                        "kid": STRING,
                        "key_ops": array(STRING),
                        "n": STRING,
                        "e": STRING,
                        "x5c": array(STRING, minItems=1),
                        "x5t": STRING,
                        "x5t#S256": STRING,
                    },
                    "x5c",
                ),
                minItems=3,
                maxItems=10,
            ),
            "required": {"type": "integer", "minimum": 2, "maximum": 10},
        },
        "certificates",
        "required",
    ),
    "SecurityDomainObject": obj({"value": STRING}, "value"),
    "TransferKey": obj(
        {
            "key_format": {"type": "string", "enum": ["jwk"]},
            "transfer_key": {"type": "string", "description": "A JWK as JSON text."},
        },
        "transfer_key",
    ),
    "SecurityDomainOperationStatus": obj(
        {
            "status": {"type": "string", "enum": ["InProgress", "Success", "Failed"]},
            "status_details": STRING,
        },
        "status",
    ),
}

_OPENMHSM: dict[str, JSON] = {
    "Principal": obj(
        {
            "client_id": STRING,
            "object_id": STRING,
            "name": STRING,
            "kind": {"type": "string", "enum": ["service", "managed"]},
        },
        "client_id",
        "object_id",
        "name",
        "kind",
    ),
    "PrincipalWithSecret": {
        "allOf": [
            ref("Principal"),
            obj({"client_secret": STRING, "identity_header": STRING}, "client_secret"),
        ]
    },
    "PrincipalCreateParameters": obj(
        {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "kind": {"type": "string", "enum": ["service", "managed"]},
        },
        "name",
    ),
    "PrincipalListResult": obj({"value": array(ref("Principal"))}, "value"),
    "Ping": obj({"partition": INTEGER}, "partition"),
    "Dashboard": {
        "type": "object",
        "description": "What the answering partition knows of the pool, for the /ui page.",
    },
}

_PUBLIC: dict[str, JSON] = {
    "Health": obj({"status": STRING, "partition": INTEGER}, "status", "partition"),
    "Readiness": obj(
        {
            "status": STRING,
            "state": {
                "type": "string",
                "enum": ["NotActivated", "Recovery", "Active", "Restoring"],
            },
            "partition": INTEGER,
        },
        "status",
        "state",
        "partition",
    ),
    "OpenIdConfiguration": obj(
        {
            "issuer": STRING,
            "authorization_endpoint": STRING,
            "token_endpoint": STRING,
            "jwks_uri": STRING,
        },
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
    ),
    "JsonWebKeySet": obj({"keys": array({"type": "object"})}, "keys"),
    "ClientCredentialsRequest": obj(
        {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": STRING,
            "client_secret": STRING,
            "scope": STRING,
        },
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
    ),
    "TokenResponse": obj(
        {
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": INTEGER,
            "ext_expires_in": INTEGER,
            "access_token": STRING,
        },
        "token_type",
        "expires_in",
        "access_token",
    ),
    "ManagedIdentityTokenResponse": obj(
        {
            "access_token": STRING,
            "expires_on": {"type": "string", "pattern": "^[0-9]+$"},
            "resource": STRING,
            "token_type": STRING,
            "client_id": STRING,
        },
        "access_token",
        "expires_on",
    ),
    "OpenApiDocument": obj({"openapi": STRING, "info": {"type": "object"}}, "openapi", "paths"),
}

ADMIN_SCHEMAS: dict[str, JSON] = {
    **_RBAC,
    **_BACKUP,
    **_SETTINGS,
    **_SECURITY_DOMAIN,
    **_OPENMHSM,
    **_PUBLIC,
}
