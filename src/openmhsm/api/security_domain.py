"""`/securitydomain/...`: download (activation), transfer key, upload, and their status URLs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.api.context import ApiContext


class SecurityDomainApi:
    def __init__(self, ctx: ApiContext) -> None:
        assert ctx.security_domain is not None
        self.domain = ctx.security_domain

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/securitydomain/download", self.download, methods=["POST"]),
            Route("/securitydomain/download/pending", self.download_status, methods=["GET"]),
            Route("/securitydomain/upload", self.transfer_key, methods=["GET"]),
            Route("/securitydomain/upload", self.upload, methods=["POST"]),
            Route("/securitydomain/upload/pending", self.upload_status, methods=["GET"]),
        ]

    @staticmethod
    def _accepted(request: Request, body: dict[str, object], status_path: str) -> Response:
        # The SDK's pollers need the status URL in this header (API §4.1).
        headers = {"Azure-AsyncOperation": f"{wire.base_url(request)}{status_path}"}
        return JSONResponse(body, status_code=202, headers=headers)

    async def download(self, request: Request) -> Response:
        body = await wire.json_body(request)
        text = await self.domain.download(body)
        return self._accepted(request, {"value": text}, "/securitydomain/download/pending")

    async def download_status(self, request: Request) -> Response:
        return JSONResponse(await self.domain.download_status())

    async def transfer_key(self, request: Request) -> Response:
        key = await self.domain.transfer_key()
        return JSONResponse({"key_format": "jwk", "transfer_key": key})

    async def upload(self, request: Request) -> Response:
        body = await wire.json_body(request)
        status = await self.domain.upload(body)
        return self._accepted(request, dict(status), "/securitydomain/upload/pending")

    async def upload_status(self, request: Request) -> Response:
        return JSONResponse(await self.domain.upload_status())
