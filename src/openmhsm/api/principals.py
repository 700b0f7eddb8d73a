"""`/openmhsm/principals` path group: OpenMHSM's own administration of the pool's principals.

This is **not part of Azure's API** (Entra ID, not Managed HSM, owns identities there); no Azure
SDK calls it. `mhsm principal ...` does, through the Key Vault SDK pipeline so that TLS, the
challenge and the token are the SDK's. Like every data-plane call it needs `api-version` and a
token, and it answers errors in Key Vault's shape.

- GET `/openmhsm/principals` → 200 `{"value": [principal]}`, never a secret.
- POST `/openmhsm/principals` `{"name", "kind": "service" | "managed"}` → 201 the principal with
  its `client_secret` (and, for a managed identity, its `identity_header`).
- DELETE `/openmhsm/principals/{client_id}` → 200 the deleted principal.
- POST `/openmhsm/principals/{client_id}/reset-secret` → 200 the principal with its new
  `client_secret` (and `identity_header`).

A principal is `{"client_id", "object_id", "name", "kind"}`. A secret is returned once, with
`Cache-Control: no-store`; the pool keeps only its scrypt hash. A caller cannot delete itself
(that would lock the caller out with no way back through this API).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.errors import BadParameter, NotFound
from openmhsm.services.principals import PrincipalStore, identity_header
from openmhsm.types import JSON, Principal

PATH = "/openmhsm/principals"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def principal_json(principal: Principal) -> JSON:
    return {
        "client_id": principal.client_id,
        "object_id": principal.object_id,
        "name": principal.name,
        "kind": principal.kind,
    }


def _with_secret(principal: Principal, secret: str, status: int = 200) -> JSONResponse:
    body = principal_json(principal) | {"client_secret": secret}
    if principal.kind == "managed":
        body["identity_header"] = identity_header(principal.client_id, secret)
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def _not_found() -> NotFound:
    return NotFound("There is no principal with this client id.", inner_code="PrincipalNotFound")


class PrincipalsApi:
    def __init__(self, principals: PrincipalStore) -> None:
        self.principals = principals

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PATH, self.list_principals, methods=["GET"]),
            Route(PATH, self.create, methods=["POST"]),
            Route(PATH + "/{client_id}", self.delete, methods=["DELETE"]),
            Route(PATH + "/{client_id}/reset-secret", self.reset_secret, methods=["POST"]),
        ]

    async def list_principals(self, request: Request) -> Response:
        principals = await self.principals.list()
        return JSONResponse({"value": [principal_json(p) for p in principals]})

    async def create(self, request: Request) -> Response:
        body = await wire.json_body(request)
        name, kind = body.get("name"), body.get("kind", "service")
        if not isinstance(name, str) or not isinstance(kind, str):
            raise BadParameter("The 'name' and 'kind' fields must be strings.")
        principal, secret = await self.principals.create(name, kind)
        return _with_secret(principal, secret, status=201)

    async def delete(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]
        principal = await self.principals.get(client_id)
        if principal is None:
            raise _not_found()
        caller = request.scope.get("state", {}).get("principal")
        if isinstance(caller, Principal) and caller.client_id == principal.client_id:
            raise BadParameter("A principal cannot delete itself.")
        if not await self.principals.delete(client_id):
            raise _not_found()
        return JSONResponse(principal_json(principal))

    async def reset_secret(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]
        principal = await self.principals.get(client_id)
        if principal is None:
            raise _not_found()
        secret = await self.principals.reset_secret(client_id)
        return _with_secret(principal, secret)
