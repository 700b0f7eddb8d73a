"""`/keys/{name}` DELETE and the `/deletedkeys` path group: soft-delete, recover, purge."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import models, wire
from openmhsm.api.context import ApiContext


class DeletedKeysApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/keys/{name}", self.delete, methods=["DELETE"]),
            Route("/deletedkeys", self.list_deleted, methods=["GET"]),
            Route("/deletedkeys/{name}", self.get, methods=["GET"]),
            Route("/deletedkeys/{name}", self.purge, methods=["DELETE"]),
            Route("/deletedkeys/{name}/recover", self.recover, methods=["POST"]),
        ]

    async def delete(self, request: Request) -> Response:
        deleted = await self.ctx.deleted.delete(request.path_params["name"])
        base = wire.base_url(request)
        return JSONResponse(models.deleted_key_bundle(base, deleted, self.ctx.deletion))

    async def get(self, request: Request) -> Response:
        deleted = await self.ctx.deleted.get(request.path_params["name"])
        base = wire.base_url(request)
        return JSONResponse(models.deleted_key_bundle(base, deleted, self.ctx.deletion))

    async def list_deleted(self, request: Request) -> Response:
        result = self.ctx.deleted.list(wire.skip_token(request), wire.max_results(request))
        base = wire.base_url(request)
        items = [models.deleted_key_item(base, d, self.ctx.deletion) for d in result.items]
        return JSONResponse(wire.page(request, items, result.continue_after))

    async def recover(self, request: Request) -> Response:
        deleted = await self.ctx.deleted.recover(request.path_params["name"])
        base = wire.base_url(request)
        return JSONResponse(models.key_bundle(base, deleted.current_version(), self.ctx.deletion))

    async def purge(self, request: Request) -> Response:
        await self.ctx.deleted.purge(request.path_params["name"])
        return Response(status_code=204)
