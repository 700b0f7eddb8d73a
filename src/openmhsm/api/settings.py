"""`/settings` path group (API §3.3): list, get and update the pool's account settings.

The list is not paged (`{"settings": [...]}`), and a PATCH body is `{"value": "<string>"}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.services.settings import Setting, SettingsStore
from openmhsm.types import JSON


def setting_json(setting: Setting) -> JSON:
    return {"name": setting.name, "value": setting.value, "type": setting.type}


class SettingsApi:
    def __init__(self, settings: SettingsStore) -> None:
        self.settings = settings

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/settings", self.list_settings, methods=["GET"]),
            Route("/settings/{name}", self.get, methods=["GET"]),
            Route("/settings/{name}", self.update, methods=["PATCH"]),
        ]

    async def list_settings(self, request: Request) -> Response:
        settings = await self.settings.list()
        return JSONResponse({"settings": [setting_json(s) for s in settings]})

    async def get(self, request: Request) -> Response:
        setting = await self.settings.get(request.path_params["name"])
        return JSONResponse(setting_json(setting))

    async def update(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await wire.json_body(request)
        setting = await self.settings.update(name, body.get("value"))
        return JSONResponse(setting_json(setting))
