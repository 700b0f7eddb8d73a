"""The request policies, each one small ASGI callable, applied in the order `app.py` lists them:
request id → errors → api-version → activation gate → authenticate (or 401 challenge) →
authorize → route."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmhsm.api.errors import error_body, error_response
from openmhsm.auth.authorize import Decider, authorize
from openmhsm.auth.challenge import bearer_token, challenge_header
from openmhsm.auth.external import TrustedIssuers, unverified_issuer
from openmhsm.auth.tokens import TokenService
from openmhsm.errors import (
    BadParameter,
    MethodNotAllowed,
    MhsmError,
    NotActivated,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from openmhsm.types import Principal

API_VERSION = re.compile(r"^(7\.[0-6](-preview(\.\d+)?)?|2016-10-01|2025-07-01(-preview)?)$")
# A message, not a password.
MISSING_TOKEN = "AKV10000: Request is missing a Bearer or PoP token."  # noqa: S105  # nosec B105


class RequestId:
    """Gives each request an id (`x-ms-request-id`) and echoes the client's own id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        client_id = Headers(scope=scope).get("x-ms-client-request-id")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-ms-request-id"] = request_id
                if client_id and len(client_id) <= 128:
                    headers["x-ms-client-request-id"] = client_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class KeyVaultErrors:
    """Turns any exception raised below into Key Vault's error JSON (unknown ones: 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, HTTPException):
                exc = _http_error(exc)
            await error_response(exc)(scope, receive, send)


def _http_error(exc: HTTPException) -> MhsmError:
    if exc.status_code == 405:
        return MethodNotAllowed("The HTTP method is not allowed on this path.")
    return NotFound("The requested path was not found.")


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The router's default: no route matched."""
    raise NotFound("The requested path was not found.")


class ApiVersionCheck:
    """Every data-plane call names a known api-version (LRO status URLs are polled without)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].endswith("/pending"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            versions = query.get("api-version")
            if not versions:
                raise BadParameter(
                    "The api-version query parameter is required.",
                    inner_code="MissingApiVersionParameter",
                )
            if not API_VERSION.fullmatch(versions[0]):
                raise BadParameter(
                    f"The specified version ({versions[0][:20]}) is not recognized.",
                    inner_code="InvalidApiVersionParameter",
                )
        await self.app(scope, receive, send)


class ActivationGate:
    """Before the security domain is active, only security-domain calls are served."""

    def __init__(self, app: ASGIApp, state: Callable[[], Awaitable[str]]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].startswith("/securitydomain"):
            state = await self.state()
            if state != "Active":
                raise NotActivated(
                    "This Managed HSM is not activated: download its security domain first, "
                    f"or upload one to a pool in recovery mode (state: {state}).",
                    inner_code=state,
                )
        await self.app(scope, receive, send)


class RestoreGate:
    """While a full restore replaces the pool's contents, only its status can be asked."""

    def __init__(self, app: ASGIApp, restoring: Callable[[], Awaitable[str | None]]) -> None:
        self.app = app
        self.restoring = restoring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        polling = path.startswith(("/restore/", "/backup/")) and path.endswith("/pending")
        job = None if polling else await self.restoring()
        if job is not None:
            raise ServiceUnavailable(
                f"The pool is being restored from a full backup (job {job}); try again when "
                "the restore completes.",
                inner_code="RestoreInProgress",
            )
        await self.app(scope, receive, send)


class Authenticate:
    """Bearer tokens of this pool, or of a trusted external issuer; anything else gets the 401
    challenge before the body is read, as the Azure SDK's challenge policy needs (API §2.1)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenService,
        tenant_id: str,
        audience_ok: Callable[[str], bool],
        external: TrustedIssuers | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.tenant_id = tenant_id
        self.audience_ok = audience_ok
        self.external = external

    def _validate(self, token: str) -> Principal:
        if self.external is not None:
            issuer = unverified_issuer(token)
            if issuer is not None and issuer != self.tokens.issuer and self.external.trusts(issuer):
                return self.external.validate(token, self.audience_ok)
        return self.tokens.validate(token, self.audience_ok)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        token = bearer_token(headers.get("authorization"))
        host = headers.get("host", "")
        try:
            if token is None:
                raise Unauthorized(MISSING_TOKEN)
            principal = self._validate(token)
        except Unauthorized as exc:
            challenge = challenge_header(host, f"https://{host}", self.tenant_id)
            response = JSONResponse(
                error_body("Unauthorized", exc.message),
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class Authorize:
    """Every data-plane operation needs its one data action at the request's scope
    (`auth/authorize.py`), decided from memory before the body is read. The request is matched
    against `routes` as the router will match it (the first route whose method and path match);
    a path no route serves falls through to the router's 404/405. Without a decider (unit
    fixtures) every principal is allowed."""

    def __init__(
        self, app: ASGIApp, routes: Sequence[BaseRoute] = (), decider: Decider | None = None
    ) -> None:
        self.app = app
        self.decider = decider
        # Path parameters never span a '/', so only routes with the request's method, first
        # segment and number of segments can match it: trying those few keeps this cheap.
        self.candidates: dict[tuple[str, str, int], list[Route]] = {}
        for route in routes:
            if isinstance(route, Route):
                key = (route.path.split("/", 2)[1], route.path.count("/"))
                for method in route.methods or ():
                    self.candidates.setdefault((method, *key), []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.decider is not None:
            path, method = scope["path"], scope["method"]
            key = (method, path.split("/", 2)[1], path.count("/"))
            for route in self.candidates.get(key, ()):
                match = route.path_regex.match(path)
                if match is not None:
                    principal = scope["state"]["principal"]
                    await authorize(self.decider, principal, method, route.path, match.groupdict())
                    break
        await self.app(scope, receive, send)


Policy = Callable[[ASGIApp], ASGIApp]
