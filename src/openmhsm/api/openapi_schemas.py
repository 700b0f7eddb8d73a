"""The `components` of the OpenAPI document (`api/openapi.py`): Key Vault's JSON shapes as the
pool reads and writes them (API.md §1.2, §1.4, §3, §4), the shared parameters and the error
responses. Data only; `ref` names one of them.

Request schemas describe what the pool accepts (so a schema-driven client, or a fuzzer, sends
requests that reach the services); response schemas describe what it answers, with every
documented field typed and the others allowed, as the Azure SDKs tolerate.
"""

from __future__ import annotations

from typing import Any

from openmhsm.types import JSON

# Every one matches middleware.API_VERSION (a unit test checks it); the first is the SDKs'.
API_VERSIONS = ["2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01"]

KTY = ["RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM"]
CURVES = ["P-256", "P-256K", "P-384", "P-521"]
KEY_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"]
KEY_SIZES = [128, 192, 256, 2048, 3072, 4096]  # oct 128/192/256, RSA 2048/3072/4096
RSA_CIPHER = ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"]
AES_KW = ["A128KW", "A192KW", "A256KW", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"]
ENCRYPTION_ALGORITHMS = [
    *RSA_CIPHER,
    *(f"A{bits}{mode}" for mode in ("GCM", "CBC", "CBCPAD") for bits in (128, 192, 256)),
    *AES_KW,
]
WRAP_ALGORITHMS = [*RSA_CIPHER, *AES_KW]
SIGNATURE_ALGORITHMS = [
    *(f"{family}{bits}" for family in ("PS", "RS", "HS") for bits in (256, 384, 512)),
    "RSNULL",
    "ES256",
    "ES256K",
    "ES384",
    "ES512",
]
RELEASE_ENC = ["CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"]
RECOVERY_LEVELS = [
    "Purgeable",
    "Recoverable+Purgeable",
    "Recoverable",
    "Recoverable+ProtectedSubscription",
    "CustomizedRecoverable+Purgeable",
    "CustomizedRecoverable",
    "CustomizedRecoverable+ProtectedSubscription",
]
KEY_NAME_PATTERN = "^[0-9a-zA-Z-]{1,127}$"
GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ISO_DURATION_PATTERN = r"^P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$"


def ref(name: str) -> JSON:
    """A `$ref` to a schema of `components.schemas`."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], *required: str, **extra: Any) -> JSON:
    schema: JSON = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: JSON, **extra: Any) -> JSON:
    return {"type": "array", "items": items, **extra}


STRING: JSON = {"type": "string"}
BOOLEAN: JSON = {"type": "boolean"}
INTEGER: JSON = {"type": "integer"}
NULLABLE_STRING: JSON = {"type": "string", "nullable": True}
UNIX_TIME: JSON = {"type": "integer", "minimum": 0, "description": "Seconds since the epoch."}
B64URL: JSON = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "description": "base64url"}


_JWK_BINARY = ("n", "e", "d", "dp", "dq", "qi", "p", "q", "k", "key_hsm", "x", "y")

_KEY_SCHEMAS: dict[str, JSON] = {
    "JsonWebKey": obj(
        {
            "kid": STRING,
            "kty": {"type": "string", "enum": KTY},
            "key_ops": array(STRING),
            "crv": STRING,
            **{name: B64URL for name in _JWK_BINARY},
        },
    ),
    "KeyAttributes": obj(
        {
            "enabled": BOOLEAN,
            "nbf": UNIX_TIME,
            "exp": UNIX_TIME,
            "created": UNIX_TIME,
            "updated": UNIX_TIME,
            "recoverableDays": INTEGER,
            "recoveryLevel": {"type": "string", "enum": RECOVERY_LEVELS},
            "exportable": BOOLEAN,
            "hsmPlatform": STRING,
            "attestation": obj(
                {
                    "certificatePemFile": STRING,
                    "privateKeyAttestation": STRING,
                    "publicKeyAttestation": STRING,
                    "version": STRING,
                }
            ),
        }
    ),
    "KeyRequestAttributes": obj(
        {
            "enabled": BOOLEAN,
            "nbf": {**UNIX_TIME, "maximum": 253402300799},
            "exp": {**UNIX_TIME, "maximum": 253402300799},
            "exportable": BOOLEAN,
        }
    ),
    "Tags": {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": 256},
        "maxProperties": 15,
    },
    "KeyReleasePolicy": obj(
        {"contentType": STRING, "immutable": BOOLEAN, "data": B64URL},
    ),
    "KeyBundle": obj(
        {
            "key": ref("JsonWebKey"),
            "attributes": ref("KeyAttributes"),
            "tags": ref("Tags"),
            "managed": BOOLEAN,
            "release_policy": ref("KeyReleasePolicy"),
        },
        "key",
        "attributes",
    ),
    "DeletedKeyBundle": {
        "allOf": [
            ref("KeyBundle"),
            obj(
                {"recoveryId": STRING, "deletedDate": UNIX_TIME, "scheduledPurgeDate": UNIX_TIME},
                "recoveryId",
                "deletedDate",
                "scheduledPurgeDate",
            ),
        ]
    },
    "KeyItem": obj(
        {
            "kid": STRING,
            "attributes": ref("KeyAttributes"),
            "tags": ref("Tags"),
            "managed": BOOLEAN,
        },
        "kid",
        "attributes",
    ),
    "DeletedKeyItem": {
        "allOf": [
            ref("KeyItem"),
            obj(
                {"recoveryId": STRING, "deletedDate": UNIX_TIME, "scheduledPurgeDate": UNIX_TIME},
                "recoveryId",
                "deletedDate",
                "scheduledPurgeDate",
            ),
        ]
    },
    "KeyListResult": obj({"value": array(ref("KeyItem")), "nextLink": NULLABLE_STRING}, "value"),
    "DeletedKeyListResult": obj(
        {"value": array(ref("DeletedKeyItem")), "nextLink": NULLABLE_STRING}, "value"
    ),
    "KeyCreateParameters": obj(
        {
            "kty": {"type": "string", "enum": KTY},
            "key_size": {"type": "integer", "enum": KEY_SIZES},
            "public_exponent": {"type": "integer", "enum": [3, 65537]},
            "crv": {"type": "string", "enum": CURVES},
            "key_ops": array({"type": "string", "enum": KEY_OPS}),
            "attributes": ref("KeyRequestAttributes"),
            "tags": ref("Tags"),
            "release_policy": ref("KeyReleasePolicy"),
        },
        "kty",
    ),
    "KeyImportParameters": obj(
        {
            "key": ref("JsonWebKey"),
            "Hsm": BOOLEAN,
            "attributes": ref("KeyRequestAttributes"),
            "tags": ref("Tags"),
            "release_policy": ref("KeyReleasePolicy"),
        },
        "key",
    ),
    "KeyUpdateParameters": obj(
        {
            "key_ops": array({"type": "string", "enum": KEY_OPS}),
            "attributes": ref("KeyRequestAttributes"),
            "tags": ref("Tags"),
            "release_policy": ref("KeyReleasePolicy"),
        }
    ),
    "LifetimeAction": obj(
        {
            "trigger": obj(
                {
                    "timeAfterCreate": {"type": "string", "pattern": ISO_DURATION_PATTERN},
                    "timeBeforeExpiry": {"type": "string", "pattern": ISO_DURATION_PATTERN},
                }
            ),
            "action": obj({"type": {"type": "string", "enum": ["Rotate", "Notify"]}}),
        }
    ),
    "KeyRotationPolicy": obj(
        {
            "id": STRING,
            "lifetimeActions": array(ref("LifetimeAction")),
            "attributes": obj(
                {
                    "expiryTime": {"type": "string", "pattern": ISO_DURATION_PATTERN},
                    "created": UNIX_TIME,
                    "updated": UNIX_TIME,
                }
            ),
        }
    ),
}

_OPERATION_SCHEMAS: dict[str, JSON] = {
    "KeyOperationsParameters": obj(
        {
            "alg": {"type": "string", "enum": ENCRYPTION_ALGORITHMS},
            "value": B64URL,
            "iv": B64URL,
            "aad": B64URL,
            "tag": B64URL,
        },
        "alg",
        "value",
    ),
    "KeyWrapParameters": obj(
        {"alg": {"type": "string", "enum": WRAP_ALGORITHMS}, "value": B64URL}, "alg", "value"
    ),
    "KeySignParameters": obj(
        {"alg": {"type": "string", "enum": SIGNATURE_ALGORITHMS}, "value": B64URL},
        "alg",
        "value",
    ),
    "KeyVerifyParameters": obj(
        {
            "alg": {"type": "string", "enum": SIGNATURE_ALGORITHMS},
            "digest": B64URL,
            "value": B64URL,
        },
        "alg",
        "digest",
        "value",
    ),
    "KeyOperationResult": obj(
        {"kid": STRING, "value": B64URL, "iv": B64URL, "tag": B64URL, "aad": B64URL},
        "kid",
        "value",
    ),
    "KeyVerifyResult": obj({"value": BOOLEAN}, "value"),
    "KeyReleaseParameters": obj(
        {
            "target": {"type": "string", "minLength": 1},
            "nonce": {"type": "string", "maxLength": 256},
            "enc": {"type": "string", "enum": RELEASE_ENC},
        },
        "target",
    ),
    "ValueResult": obj({"value": STRING}, "value"),
    "BackupKeyResult": obj({"value": B64URL}, "value"),
    "KeyRestoreParameters": obj({"value": B64URL}, "value"),
    "GetRandomBytesRequest": obj({"count": {"type": "integer", "minimum": 1, "maximum": 128}}),
    "RandomBytes": obj({"value": B64URL}, "value"),
}

_ERROR_SCHEMAS: dict[str, JSON] = {
    "InnerError": obj({"code": STRING, "innererror": ref("InnerError")}, "code"),
    "Error": obj(
        {
            "error": obj(
                {"code": STRING, "message": STRING, "innererror": ref("InnerError")},
                "code",
                "message",
            )
        },
        "error",
    ),
    "OAuthError": obj(
        {
            "error": STRING,
            "error_description": STRING,
            "error_codes": array(INTEGER),
            "statusCode": INTEGER,
            "message": STRING,
        },
        "error",
        "error_description",
    ),
}


def _merged(*groups: dict[str, JSON]) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    for group in groups:
        out.update(group)
    return out


def schemas(*more: dict[str, JSON]) -> dict[str, JSON]:
    """Every schema of the document: these and the other path groups' (`more`)."""
    return _merged(_KEY_SCHEMAS, _OPERATION_SCHEMAS, _ERROR_SCHEMAS, *more)
