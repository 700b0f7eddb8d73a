"""`/keys/{name}/{version}/<operation>`: sign, verify, encrypt, decrypt, wrapkey, unwrapkey."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import models, wire
from openmhsm.api.context import ApiContext
from openmhsm.types import JSON

OPERATIONS = ("sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey")


class KeyOpsApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for op in OPERATIONS:
            handler = getattr(self, op)
            routes.append(Route(f"/keys/{{name}}/{{version}}/{op}", handler, methods=["POST"]))
            routes.append(Route(f"/keys/{{name}}//{op}", handler, methods=["POST"]))
        return routes

    @staticmethod
    async def _args(request: Request) -> tuple[str, str | None, JSON, str]:
        body = await wire.json_body(request)
        alg = wire.string_field(body, "alg")
        return request.path_params["name"], request.path_params.get("version"), body, alg

    @staticmethod
    def _result(
        request: Request, name: str, version: str, value: bytes, **extra: bytes | None
    ) -> Response:
        out: JSON = {
            "kid": models.key_id(wire.base_url(request), name, version),
            "value": wire.b64(value),
        }
        out.update({k: wire.b64(v) for k, v in extra.items() if v is not None})
        return JSONResponse(out)

    async def sign(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        digest = wire.b64_field(body, "value")
        kv, sig = await self.ctx.ops.sign(name, version, alg, digest)
        return self._result(request, kv.name, kv.version, sig)

    async def verify(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        digest = wire.b64_field(body, "digest")
        signature = wire.b64_field(body, "value")
        _, ok = await self.ctx.ops.verify(name, version, alg, digest, signature)
        return JSONResponse({"value": ok})

    async def encrypt(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        plaintext = wire.b64_field(body, "value")
        iv = wire.b64_optional(body, "iv")
        aad = wire.b64_optional(body, "aad")
        kv, result = await self.ctx.ops.encrypt(name, version, alg, plaintext, iv, aad)
        return self._result(
            request, kv.name, kv.version, result.ciphertext, iv=result.iv, tag=result.tag, aad=aad
        )

    async def decrypt(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        ciphertext = wire.b64_field(body, "value")
        iv = wire.b64_optional(body, "iv")
        aad = wire.b64_optional(body, "aad")
        tag = wire.b64_optional(body, "tag")
        kv, plain = await self.ctx.ops.decrypt(name, version, alg, ciphertext, iv, aad, tag)
        return self._result(request, kv.name, kv.version, plain)

    async def wrapkey(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        key = wire.b64_field(body, "value")
        kv, wrapped = await self.ctx.ops.wrap(name, version, alg, key)
        return self._result(request, kv.name, kv.version, wrapped)

    async def unwrapkey(self, request: Request) -> Response:
        name, version, body, alg = await self._args(request)
        wrapped = wire.b64_field(body, "value")
        kv, key = await self.ctx.ops.unwrap(name, version, alg, wrapped)
        return self._result(request, kv.name, kv.version, key)
