"""`/rng`: random bytes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.services.rng import random_bytes


async def get_random_bytes(request: Request) -> Response:
    body = await wire.json_body(request)
    return JSONResponse({"value": wire.b64(random_bytes(body.get("count")))})


def routes() -> list[BaseRoute]:
    return [Route("/rng", get_random_bytes, methods=["POST"])]
