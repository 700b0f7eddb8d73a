"""`/keys/{name}/backup` and `/keys/restore`: single-key backup blobs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import models, wire
from openmhsm.api.context import ApiContext


class KeyBackupApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/keys/restore", self.restore, methods=["POST"]),
            Route("/keys/{name}/backup", self.backup, methods=["POST"]),
        ]

    async def backup(self, request: Request) -> Response:
        blob = await self.ctx.backups.backup(request.path_params["name"])
        return JSONResponse({"value": wire.b64(blob)})

    async def restore(self, request: Request) -> Response:
        body = await wire.json_body(request)
        kv = await self.ctx.backups.restore(wire.b64_field(body, "value"))
        return JSONResponse(models.key_bundle(wire.base_url(request), kv, self.ctx.deletion))
