"""The pool's own Entra-ID-shaped token issuer, as Starlette routes (DESIGN §6, API.md §2.2, §2.3).

- `GET /{tenant}/v2.0/.well-known/openid-configuration` and `GET /{tenant}/discovery/v2.0/keys`:
  what MSAL reads before it asks for a token (`ClientSecretCredential` with `authority=` the pool
  URL and `disable_instance_discovery=True`).
- `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant.
- `GET /msi/token`: the App-Service managed-identity endpoint (`IDENTITY_ENDPOINT`), authenticated
  by `X-IDENTITY-HEADER` = `<client_id>.<secret>`.

Repeated failed secret checks back off (`auth/lockout.py`): such an attempt gets 429 with
`Retry-After`, which azure-core and MSAL honour, whether or not the client id exists.

These are OAuth endpoints, so every error body is OAuth-shaped (`error`, `error_description`), not
Key Vault's. The managed-identity endpoint adds App Service's `statusCode` and `message`, which MSAL
shows to the user. Nothing here echoes a secret or a token. Any principal kind may use either grant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm import errors
from openmhsm.auth.challenge import normalize_host
from openmhsm.auth.lockout import LockedOut, Lockout
from openmhsm.auth.tokens import ALGORITHM, TokenService
from openmhsm.services.principals import PrincipalStore, split_identity_header
from openmhsm.types import Principal

ADFS_TENANT = "adfs"
MAX_FORM_BYTES = 16 * 1024
TOKEN_LIFETIME = 3600
MSI_API_VERSION = "2019-08-01"
_DEFAULT_SUFFIX = "/.default"
_BEARER = "Bearer"  # the OAuth token type
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_INVALID_CLIENT_MESSAGE = (
    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
    "the client secret value, and that the client id names a principal of this pool."
)
_LOCKED_OUT_MESSAGE = (
    "AADSTS50053: Too many failed attempts to authenticate this client from this address. "
    "Try again in {} seconds."
)

Endpoint = Callable[[Request], Awaitable[Response]]


class _OAuthError(Exception):
    """An OAuth error response: status, `error` code and a description safe to show."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        code: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.code = status, error, description, code
        self.retry_after = retry_after


def _error_response(exc: _OAuthError, *, app_service: bool = False) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.error, "error_description": exc.description}
    if exc.code is not None:
        body["error_codes"] = [exc.code]
    if app_service:
        body |= {"statusCode": exc.status, "message": exc.description}
    headers = dict(_NO_STORE)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _oauth_endpoint(handler: Endpoint, *, app_service: bool = False) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _OAuthError as exc:
            return _error_response(exc, app_service=app_service)

    return endpoint


def _base_url(request: Request) -> str:
    """`<scheme>://<Host header>` as the client addressed us."""
    try:
        host = normalize_host(request.headers.get("host", ""))
    except errors.BadRequest:
        raise _OAuthError(400, "invalid_request", "The Host header is not valid.") from None
    return f"{request.url.scheme}://{host}"


def resource_of_scope(scope: str) -> str:
    """`https://x.example:8443/.default` → `https://x.example:8443`; an extra trailing `/` is
    dropped (`https://r//.default` and `https://r/` name `https://r`, as with Entra ID)."""
    if scope.endswith(_DEFAULT_SUFFIX):
        scope = scope[: -len(_DEFAULT_SUFFIX)]
    return scope.rstrip("/")


async def _read_form(request: Request) -> dict[str, str]:
    """The form-urlencoded body, at most MAX_FORM_BYTES, each parameter at most once."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _OAuthError(400, "invalid_request", "The body must be form-urlencoded.", 900144)
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise _OAuthError(413, "invalid_request", "The request body is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _OAuthError(413, "invalid_request", "The request body is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise _OAuthError(400, "invalid_request", "The body is not a valid form.") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _OAuthError(400, "invalid_request", "A parameter is repeated.", 90015)
    return form


async def _backed_off(
    lockout: Lockout,
    request: Request,
    client_id: str,
    check: Callable[[], Awaitable[Principal | None]],
) -> Principal | None:
    """`check()` (a secret check for `client_id`) unless this client is backing off."""
    address = request.client.host if request.client is not None else None
    try:
        attempt = lockout.admit(client_id, address)
    except LockedOut as exc:
        raise _OAuthError(
            429,
            "invalid_client",
            _LOCKED_OUT_MESSAGE.format(exc.retry_after),
            50053,
            retry_after=exc.retry_after,
        ) from None
    with attempt:
        principal = await check()
        attempt.settle(principal is not None)
    return principal


def identity_routes(
    tokens: TokenService,
    principals: PrincipalStore,
    tenant_id: str,
    audience_ok: Callable[[str], bool],
    lockout: Lockout | None = None,
) -> list[BaseRoute]:
    """The token issuer's routes: OIDC discovery, JWKS, client credentials and managed identity.
    `lockout` holds the back-off state of failed secret checks (a new one if not given)."""
    backoff = lockout if lockout is not None else Lockout()

    def check_tenant(request: Request) -> str:
        """The tenant segment as addressed: the pool's tenant id, or `adfs`, the name
        azure-identity and MSAL give a self-hosted issuer (no instance discovery, no
        cross-tenant check), so that `EnvironmentCredential` works offline."""
        tenant = str(request.path_params.get("tenant", ADFS_TENANT)).lower()
        if tenant not in (tenant_id.lower(), ADFS_TENANT):
            raise _OAuthError(
                400,
                "invalid_tenant",
                "AADSTS90002: Tenant not found. This pool serves one tenant; check the tenant id.",
                90002,
            )
        return tenant

    def check_resource(resource: str) -> None:
        if not resource or not audience_ok(resource):
            raise _OAuthError(
                400,
                "invalid_resource",
                "AADSTS500011: The resource principal was not found in the tenant. The resource "
                "must be the one named in this pool's authentication challenge.",
                500011,
            )

    async def openid_configuration(request: Request) -> Response:
        base = f"{_base_url(request)}/{check_tenant(request)}"
        config = {
            "issuer": tokens.issuer,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "response_modes_supported": ["form_post"],
            "scopes_supported": [],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": ["iss", "aud", "sub", "oid", "appid", "tid", "iat", "nbf", "exp"],
            "request_uri_parameter_supported": False,
            "http_logout_supported": False,
            "frontchannel_logout_supported": False,
            "tenant_region_scope": None,
            "cloud_instance_name": "openmhsm",
            "cloud_graph_host_name": None,
            "msgraph_host": None,
            "rbac_url": None,
        }
        return JSONResponse(config)

    async def keys(request: Request) -> Response:
        check_tenant(request)
        return JSONResponse(tokens.jwks())

    async def token(request: Request) -> Response:
        check_tenant(request)
        form = await _read_form(request)
        if form.get("grant_type") != "client_credentials":
            raise _OAuthError(
                400,
                "unsupported_grant_type",
                "AADSTS70003: Only the client_credentials grant is supported.",
                70003,
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or not scopes[0].endswith(_DEFAULT_SUFFIX):
            raise _OAuthError(
                400,
                "invalid_scope",
                "AADSTS1002012: The scope must be a single '<resource>/.default'.",
                1002012,
            )
        resource = resource_of_scope(scopes[0])
        check_resource(resource)
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id or not secret:
            raise _OAuthError(
                401,
                "invalid_client",
                "AADSTS7000218: The request body must contain client_id and client_secret.",
                7000218,
            )
        principal = await _backed_off(
            backoff, request, client_id, lambda: principals.authenticate(client_id, secret)
        )
        if principal is None:
            raise _OAuthError(401, "invalid_client", _INVALID_CLIENT_MESSAGE, 7000215)
        access_token, _ = tokens.issue(
            principal=principal, audience=resource, tenant_id=tenant_id, lifetime=TOKEN_LIFETIME
        )
        body = {
            "token_type": _BEARER,
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": access_token,
        }
        return JSONResponse(body, headers=_NO_STORE)

    async def msi_token(request: Request) -> Response:
        query = request.query_params
        if query.get("api-version") != MSI_API_VERSION:
            raise _OAuthError(400, "invalid_request", f"The api-version must be {MSI_API_VERSION}.")
        header = request.headers.get("x-identity-header")
        if not header:
            raise _OAuthError(401, "invalid_client", "The X-IDENTITY-HEADER header is missing.")
        client_id, _ = split_identity_header(header)
        principal = await _backed_off(
            backoff, request, client_id, lambda: principals.authenticate_identity_header(header)
        )
        if principal is None:
            raise _OAuthError(401, "invalid_client", "The X-IDENTITY-HEADER header is not valid.")
        resource = resource_of_scope(query.get("resource", ""))
        check_resource(resource)
        if query.get("mi_res_id") is not None:
            raise _OAuthError(400, "invalid_request", "mi_res_id is not supported by this pool.")
        for name, expected in (
            ("client_id", principal.client_id),
            ("object_id", principal.object_id),
        ):
            given = query.get(name)
            if given is not None and given.lower() != expected.lower():
                raise _OAuthError(
                    400, "invalid_request", f"The {name} does not match the identity header."
                )
        access_token, expires_on = tokens.issue(
            principal=principal, audience=resource, tenant_id=tenant_id, lifetime=TOKEN_LIFETIME
        )
        body = {
            "access_token": access_token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": _BEARER,
            "client_id": principal.client_id,
        }
        return JSONResponse(body, headers=_NO_STORE)

    prefix = "/{tenant}"
    return [
        Route(
            f"{prefix}/v2.0/.well-known/openid-configuration",
            _oauth_endpoint(openid_configuration),
            methods=["GET"],
        ),
        Route(
            f"/{ADFS_TENANT}/.well-known/openid-configuration",
            _oauth_endpoint(openid_configuration),
            methods=["GET"],
        ),
        Route(f"{prefix}/discovery/v2.0/keys", _oauth_endpoint(keys), methods=["GET"]),
        Route(f"{prefix}/oauth2/v2.0/token", _oauth_endpoint(token), methods=["POST"]),
        Route("/msi/token", _oauth_endpoint(msi_token, app_service=True), methods=["GET"]),
    ]
