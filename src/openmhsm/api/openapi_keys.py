"""The key routes of the OpenAPI document (API.md §1.1): keys, crypto operations, release and
attestation, soft-delete, single-key backup, random bytes. One row per route of
`app.data_plane_routes`, with the same path template and method. `/keys/{name}/` and
`/keys/{name}//<op>` are the SDKs' spellings of "the latest version"."""

from __future__ import annotations

from openmhsm.api.key_ops import OPERATIONS
from openmhsm.api.openapi_operations import PAGED, Routes, route

_CRYPTO = {  # operation: (operationId, request, response)
    "sign": ("Sign", "KeySignParameters", "KeyOperationResult"),
    "verify": ("Verify", "KeyVerifyParameters", "KeyVerifyResult"),
    "encrypt": ("Encrypt", "KeyOperationsParameters", "KeyOperationResult"),
    "decrypt": ("Decrypt", "KeyOperationsParameters", "KeyOperationResult"),
    "wrapkey": ("WrapKey", "KeyWrapParameters", "KeyOperationResult"),
    "unwrapkey": ("UnwrapKey", "KeyWrapParameters", "KeyOperationResult"),
}


def _crypto_routes() -> Routes:
    rows: Routes = []
    for op in OPERATIONS:
        name, body, result = _CRYPTO[op]
        for template, operation_id in (
            (f"/keys/{{name}}/{{version}}/{op}", name),
            (f"/keys/{{name}}//{op}", f"{name}Latest"),
        ):
            rows.append(route("POST", template, operation_id, "crypto", 200, result, body=body))
    return rows


KEY_ROUTES: Routes = [
    route("GET", "/keys", "GetKeys", "keys", 200, "KeyListResult", query=PAGED),
    route(
        "POST", "/keys/{name}/create", "CreateKey", "keys", 200, "KeyBundle",
        body="KeyCreateParameters",
    ),
    route("PUT", "/keys/{name}", "ImportKey", "keys", 200, "KeyBundle", body="KeyImportParameters"),
    route("GET", "/keys/{name}/", "GetKeyLatest", "keys", 200, "KeyBundle"),
    route(
        "PATCH", "/keys/{name}/", "UpdateKeyLatest", "keys", 200, "KeyBundle",
        body="KeyUpdateParameters",
    ),
    route("GET", "/keys/{name}/{version}", "GetKey", "keys", 200, "KeyBundle"),
    route(
        "PATCH", "/keys/{name}/{version}", "UpdateKey", "keys", 200, "KeyBundle",
        body="KeyUpdateParameters",
    ),
    route(
        "GET", "/keys/{name}/versions", "GetKeyVersions", "keys", 200, "KeyListResult",
        query=PAGED,
    ),
    route("POST", "/keys/{name}/rotate", "RotateKey", "keys", 200, "KeyBundle"),
    route(
        "GET", "/keys/{name}/rotationpolicy", "GetKeyRotationPolicy", "keys", 200,
        "KeyRotationPolicy",
    ),
    route(
        "PUT", "/keys/{name}/rotationpolicy", "UpdateKeyRotationPolicy", "keys", 200,
        "KeyRotationPolicy", body="KeyRotationPolicy",
    ),
    *_crypto_routes(),
    route(
        "POST", "/keys/{name}//release", "ReleaseLatest", "release", 200, "ValueResult",
        body="KeyReleaseParameters",
    ),
    route(
        "POST", "/keys/{name}/{version}/release", "Release", "release", 200, "ValueResult",
        body="KeyReleaseParameters",
    ),
    route(
        "GET", "/keys/{name}//attestation", "GetKeyAttestationLatest", "release", 200,
        "KeyBundle",
    ),
    route(
        "GET", "/keys/{name}/{version}/attestation", "GetKeyAttestation", "release", 200,
        "KeyBundle",
    ),
    route("DELETE", "/keys/{name}", "DeleteKey", "deleted", 200, "DeletedKeyBundle"),
    route(
        "GET", "/deletedkeys", "GetDeletedKeys", "deleted", 200, "DeletedKeyListResult",
        query=PAGED,
    ),
    route("GET", "/deletedkeys/{name}", "GetDeletedKey", "deleted", 200, "DeletedKeyBundle"),
    route("DELETE", "/deletedkeys/{name}", "PurgeDeletedKey", "deleted", 204, None),
    route("POST", "/deletedkeys/{name}/recover", "RecoverDeletedKey", "deleted", 200, "KeyBundle"),
    route("POST", "/keys/{name}/backup", "BackupKey", "backup", 200, "BackupKeyResult"),
    route(
        "POST", "/keys/restore", "RestoreKey", "backup", 200, "KeyBundle",
        body="KeyRestoreParameters",
    ),
    route(
        "POST", "/rng", "GetRandomBytes", "rng", 200, "RandomBytes", body="GetRandomBytesRequest"
    ),
]  # fmt: skip
