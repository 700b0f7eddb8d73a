"""The audit policy: one audit record per HTTP request, whatever answered it (a route, the 401
challenge, the activation gate, RBAC's 403, the token endpoints, the 404 default).

It sits just inside `RequestId` and reads, once the response is sent, what the policies below it
left in the scope: the principal `Authenticate` set and the route Starlette matched. It keeps the
path but never the query string (skip tokens, the managed-identity `resource`), and it reads
nothing of the request: no headers, no body. From an error response it keeps only the error code
(Key Vault's `error.code`, or OAuth's `error`), never the message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmhsm.api.metrics import operation_of
from openmhsm.services.audit import AuditLog, AuditRecord
from openmhsm.types import Principal

_MAX_ERROR_BODY = 8192  # error bodies are small; anything longer is not parsed


class AuditPolicy:
    """Writes an `AuditRecord` to `audit` for every HTTP request, after its response."""

    def __init__(
        self, app: ASGIApp, audit: AuditLog, partition: int, routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.audit = audit
        self.partition = partition
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = time.time()
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering
        error_body: list[bytes] | None = None

        async def audited_send(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = int(message["status"])
                error_body = [] if status >= 400 else None
            elif (
                message["type"] == "http.response.body"
                and error_body is not None
                and sum(map(len, error_body)) < _MAX_ERROR_BODY
            ):
                error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        finally:
            state = scope.get("state") or {}
            principal = state.get("principal")
            error_code = None
            if status >= 400:
                error_code = _error_code(b"".join(error_body or ())) or (
                    "InternalError" if status >= 500 else None
                )
            self.audit.write(
                AuditRecord(
                    time=received,
                    request_id=str(state.get("request_id", "")),
                    operation=operation_of(scope, self.routes),
                    resource=str(scope.get("path", "")),
                    status=status,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    partition=self.partition,
                    client=_client(scope),
                    principal=_principal(principal),
                    issuer=_issuer(principal),
                    error_code=error_code,
                )
            )


def _principal(principal: object) -> dict[str, str] | None:
    if not isinstance(principal, Principal):
        return None
    return {
        "object_id": principal.object_id,
        "client_id": principal.client_id,
        "name": principal.name,
    }


def _issuer(principal: object) -> str | None:
    return principal.issuer or None if isinstance(principal, Principal) else None


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _error_code(body: bytes) -> str | None:
    """`error.code` of a Key Vault error body, or `error` of an OAuth one; codes are short
    identifiers, so anything else (or anything long) is not kept."""
    if not body or len(body) > _MAX_ERROR_BODY:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else error
    if isinstance(code, str) and 0 < len(code) <= 64 and code.isidentifier():
        return code
    return None
