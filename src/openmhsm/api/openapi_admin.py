"""The administration and public routes of the OpenAPI document: RBAC at its three scopes
(API.md §3.1), full backup and restore (§3.2), settings (§3.3), the security domain (§4.1),
OpenMHSM's own `/openmhsm/...` routes, then the routes served without a token (health, metrics,
this document, and the token issuer of `auth/identity.py`, whose errors are OAuth-shaped)."""

from __future__ import annotations

from openmhsm.api.openapi_operations import (
    OAUTH_ERRORS,
    PAGED,
    Route,
    Routes,
    header_parameter,
    public_operation,
    query_parameter,
    route,
)

_AUTHORIZATION = "/providers/Microsoft.Authorization"
_RBAC_SCOPES = (("", ""), ("/keys", "AtKeys"), ("/keys/{name}", "AtKey"))
_LISTED = (*PAGED, "Filter")


def _rbac_routes() -> Routes:
    rows: Routes = []
    for scope, suffix in _RBAC_SCOPES:
        definitions = f"{scope}{_AUTHORIZATION}/roleDefinitions"
        assignments = f"{scope}{_AUTHORIZATION}/roleAssignments"
        one_definition = f"{definitions}/{{definition}}"
        one_assignment = f"{assignments}/{{assignment}}"
        rows += [
            route(
                "GET", definitions, f"ListRoleDefinitions{suffix}", "rbac", 200,
                "RoleDefinitionListResult", query=_LISTED,
            ),
            route("GET", one_definition, f"GetRoleDefinition{suffix}", "rbac", 200,
                  "RoleDefinition"),
            route(
                "PUT", one_definition, f"SetRoleDefinition{suffix}", "rbac", 201,
                "RoleDefinition", body="RoleDefinitionCreateParameters",
            ),
            route("DELETE", one_definition, f"DeleteRoleDefinition{suffix}", "rbac", 200,
                  "RoleDefinition"),
            route(
                "GET", assignments, f"ListRoleAssignments{suffix}", "rbac", 200,
                "RoleAssignmentListResult", query=_LISTED,
            ),
            route("GET", one_assignment, f"GetRoleAssignment{suffix}", "rbac", 200,
                  "RoleAssignment"),
            route(
                "PUT", one_assignment, f"CreateRoleAssignment{suffix}", "rbac", 201,
                "RoleAssignment", body="RoleAssignmentCreateParameters",
            ),
            route("DELETE", one_assignment, f"DeleteRoleAssignment{suffix}", "rbac", 200,
                  "RoleAssignment"),
        ]  # fmt: skip
    return rows


def _job(method: str, template: str, operation_id: str, body: str) -> Route:
    return route(method, template, operation_id, "backup", 202, "JobStatus", body=body,
                 accepted=True)  # fmt: skip


def _status(template: str, operation_id: str, tag: str, schema: str) -> Route:
    """A status URL: polled as given, with no api-version (API.md §3.2, §4.1)."""
    return route("GET", template, operation_id, tag, 200, schema, api_version="OptionalApiVersion")


ADMIN_ROUTES: Routes = [
    *_rbac_routes(),
    _job("POST", "/backup", "FullBackup", "SASTokenParameter"),
    _job("POST", "/prebackup", "PreFullBackup", "SASTokenParameter"),
    _job("PUT", "/restore", "FullRestoreOperation", "RestoreOperationParameters"),
    _job("PUT", "/prerestore", "PreFullRestoreOperation", "RestoreOperationParameters"),
    _job("PUT", "/keys/{name}/restore", "SelectiveKeyRestoreOperation",
         "SelectiveKeyRestoreOperationParameters"),
    _status("/backup/{job}/pending", "FullBackupStatus", "backup", "JobStatus"),
    _status("/restore/{job}/pending", "RestoreStatus", "backup", "JobStatus"),
    route("GET", "/openmhsm/jobs", "ListJobs", "openmhsm", 200, "JobListResult",
          query=("JobKind",)),
    route("GET", "/openmhsm/ping", "Ping", "openmhsm", 200, "Ping"),
    route("GET", "/openmhsm/dashboard", "Dashboard", "openmhsm", 200, "Dashboard"),
    route(
        "POST", "/securitydomain/download", "SecurityDomainDownload", "securitydomain", 202,
        "SecurityDomainObject", body="CertificateInfo", accepted=True,
    ),
    _status("/securitydomain/download/pending", "SecurityDomainDownloadStatus",
            "securitydomain", "SecurityDomainOperationStatus"),
    route("GET", "/securitydomain/upload", "SecurityDomainTransferKey", "securitydomain", 200,
          "TransferKey"),
    route(
        "POST", "/securitydomain/upload", "SecurityDomainUpload", "securitydomain", 202,
        "SecurityDomainOperationStatus", body="SecurityDomainObject", accepted=True,
    ),
    _status("/securitydomain/upload/pending", "SecurityDomainUploadStatus", "securitydomain",
            "SecurityDomainOperationStatus"),
    route("GET", "/settings", "GetSettings", "settings", 200, "SettingsListResult"),
    route("GET", "/settings/{name}", "GetSetting", "settings", 200, "Setting"),
    route("PATCH", "/settings/{name}", "UpdateSetting", "settings", 200, "Setting",
          body="UpdateSettingRequest"),
    route("GET", "/openmhsm/principals", "ListPrincipals", "openmhsm", 200,
          "PrincipalListResult"),
    route("POST", "/openmhsm/principals", "CreatePrincipal", "openmhsm", 201,
          "PrincipalWithSecret", body="PrincipalCreateParameters"),
    route("DELETE", "/openmhsm/principals/{client_id}", "DeletePrincipal", "openmhsm", 200,
          "Principal"),
    route("POST", "/openmhsm/principals/{client_id}/reset-secret", "ResetPrincipalSecret",
          "openmhsm", 200, "PrincipalWithSecret"),
]  # fmt: skip

_MSI_QUERY = [
    query_parameter("api-version", {"type": "string", "enum": ["2019-08-01"]}, required=True),
    query_parameter("resource", {"type": "string"}, required=True),
    query_parameter("client_id", {"type": "string"}),
    query_parameter("object_id", {"type": "string"}),
    query_parameter("mi_res_id", {"type": "string"}),
    header_parameter("X-IDENTITY-HEADER", {"type": "string"}, required=True),
]

PUBLIC_ROUTES: Routes = [
    ("/healthz", "GET", public_operation("Healthz", "Health")),
    ("/readyz", "GET", public_operation("Readyz", "Readiness")),
    ("/metrics", "GET", public_operation("Metrics", None, media="text/plain")),
    ("/openapi.json", "GET", public_operation("OpenApiDocument", "OpenApiDocument")),
    ("/ui", "GET", public_operation("DashboardPage", None, media="text/html")),
    ("/ui/", "GET", public_operation("DashboardPageSlash", None, media="text/html")),
    ("/ui/index.html", "GET", public_operation("DashboardIndex", None, media="text/html")),
    ("/ui/app.js", "GET", public_operation("DashboardScript", None, media="text/javascript")),
    ("/ui/style.css", "GET", public_operation("DashboardStyle", None, media="text/css")),
    (
        "/{tenant}/v2.0/.well-known/openid-configuration",
        "GET",
        public_operation("OpenIdConfiguration", "OpenIdConfiguration", errors=OAUTH_ERRORS),
    ),
    (
        "/adfs/.well-known/openid-configuration",
        "GET",
        public_operation("OpenIdConfigurationAdfs", "OpenIdConfiguration", errors=OAUTH_ERRORS),
    ),
    (
        "/{tenant}/discovery/v2.0/keys",
        "GET",
        public_operation("TokenSigningKeys", "JsonWebKeySet", errors=OAUTH_ERRORS),
    ),
    (
        "/{tenant}/oauth2/v2.0/token",
        "POST",
        public_operation(
            "ClientCredentialsToken", "TokenResponse", errors=OAUTH_ERRORS,
            form="ClientCredentialsRequest",
        ),
    ),
    (
        "/msi/token",
        "GET",
        public_operation(
            "ManagedIdentityToken", "ManagedIdentityTokenResponse", errors=OAUTH_ERRORS,
            parameters=_MSI_QUERY,
        ),
    ),
]  # fmt: skip
