"""`/keys/{name}/{version}/release` and `/keys/{name}/{version}/attestation` (with no version:
`/keys/{name}//release`, `/keys/{name}//attestation`): secure key release and key attestation.

A release answers `{"value": <JWS>}`, the JWS signed by the pool (`auth/attestation.py`) over
Managed HSM's payload: `{"request": {"api-version", "enc", "kid", "nonce"?}, "response": {"key":
<KeyBundle whose key has key_hsm>}}`. An attestation answers the KeyBundle with
`attributes.attestation`. Without a release service (a pool built without one) both answer 400
NotSupported.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import models, wire
from openmhsm.api.context import ApiContext
from openmhsm.errors import NotSupported
from openmhsm.services.release import KeyRelease
from openmhsm.types import JSON


class KeyReleaseApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/keys/{name}//release", self.release, methods=["POST"]),
            Route("/keys/{name}/{version}/release", self.release, methods=["POST"]),
            Route("/keys/{name}//attestation", self.attestation, methods=["GET"]),
            Route("/keys/{name}/{version}/attestation", self.attestation, methods=["GET"]),
        ]

    def _service(self) -> KeyRelease:
        if self.ctx.release is None:
            raise NotSupported(
                "Secure key release and key attestation are not enabled on this pool."
            )
        return self.ctx.release

    async def release(self, request: Request) -> Response:
        service = self._service()
        body = await wire.json_body(request)
        name, version = request.path_params["name"], request.path_params.get("version")
        released = await service.release(name, version, body)
        base = wire.base_url(request)
        bundle = models.key_bundle(base, released.kv, self.ctx.deletion)
        bundle["key"]["key_hsm"] = released.key_hsm
        asked: JSON = {
            "api-version": request.query_params.get("api-version"),
            "enc": released.enc,
            "kid": models.key_id(base, released.kv.name, version or None),
        }
        if released.nonce is not None:
            asked["nonce"] = released.nonce
        value = service.signer.sign({"request": asked, "response": {"key": bundle}})
        return JSONResponse({"value": value})

    async def attestation(self, request: Request) -> Response:
        service = self._service()
        kv = await self.ctx.keys.get(
            request.path_params["name"], request.path_params.get("version")
        )
        base = wire.base_url(request)
        bundle = models.key_bundle(base, kv, self.ctx.deletion)
        kid = models.key_id(base, kv.name, kv.version)
        bundle["attributes"]["attestation"] = service.attest(kv, kid)
        return JSONResponse(bundle)
