"""`/keys` path group: create, import, get, update, list, versions, rotate, rotation policy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import models, wire
from openmhsm.api.context import ApiContext
from openmhsm.services.records import KeyVersion


class KeysApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/keys", self.list_keys, methods=["GET"]),
            Route("/keys/{name}/create", self.create, methods=["POST"]),
            Route("/keys/{name}/versions", self.list_versions, methods=["GET"]),
            Route("/keys/{name}/rotate", self.rotate, methods=["POST"]),
            Route("/keys/{name}/rotationpolicy", self.get_policy, methods=["GET"]),
            Route("/keys/{name}/rotationpolicy", self.set_policy, methods=["PUT"]),
            Route("/keys/{name}", self.import_key, methods=["PUT"]),
            Route("/keys/{name}/", self.get, methods=["GET"]),
            Route("/keys/{name}/", self.update, methods=["PATCH"]),
            Route("/keys/{name}/{version}", self.get, methods=["GET"]),
            Route("/keys/{name}/{version}", self.update, methods=["PATCH"]),
        ]

    def _bundle(self, request: Request, kv: KeyVersion) -> JSONResponse:
        return JSONResponse(models.key_bundle(wire.base_url(request), kv, self.ctx.deletion))

    async def create(self, request: Request) -> Response:
        body = await wire.json_body(request)
        kv = await self.ctx.keys.create(
            request.path_params["name"], body, wire.client_request_id(request)
        )
        return self._bundle(request, kv)

    async def import_key(self, request: Request) -> Response:
        body = await wire.json_body(request)
        kv = await self.ctx.keys.import_key(
            request.path_params["name"], body, wire.client_request_id(request)
        )
        return self._bundle(request, kv)

    async def get(self, request: Request) -> Response:
        kv = await self.ctx.keys.get(
            request.path_params["name"], request.path_params.get("version")
        )
        return self._bundle(request, kv)

    async def update(self, request: Request) -> Response:
        body = await wire.json_body(request)
        kv = await self.ctx.keys.update(
            request.path_params["name"], request.path_params.get("version"), body
        )
        return self._bundle(request, kv)

    async def list_keys(self, request: Request) -> Response:
        result = self.ctx.keys.list_keys(wire.skip_token(request), wire.max_results(request))
        base = wire.base_url(request)
        items = [
            models.key_item(base, kv, self.ctx.deletion, with_version=False) for kv in result.items
        ]
        return JSONResponse(wire.page(request, items, result.continue_after))

    async def list_versions(self, request: Request) -> Response:
        result = await self.ctx.keys.list_versions(
            request.path_params["name"], wire.skip_token(request), wire.max_results(request)
        )
        base = wire.base_url(request)
        items = [
            models.key_item(base, kv, self.ctx.deletion, with_version=True) for kv in result.items
        ]
        return JSONResponse(wire.page(request, items, result.continue_after))

    async def rotate(self, request: Request) -> Response:
        kv = await self.ctx.keys.rotate(
            request.path_params["name"], wire.client_request_id(request)
        )
        return self._bundle(request, kv)

    async def get_policy(self, request: Request) -> Response:
        name = request.path_params["name"]
        policy = await self.ctx.keys.get_rotation_policy(name)
        return JSONResponse(models.rotation_policy(wire.base_url(request), name, policy))

    async def set_policy(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await wire.json_body(request)
        policy = await self.ctx.keys.set_rotation_policy(name, body)
        return JSONResponse(models.rotation_policy(wire.base_url(request), name, policy))
