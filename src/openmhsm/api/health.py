"""`/healthz` (alive) and `/readyz` (can serve, with the pool's state)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


def routes(state: Callable[[], str], partition_id: int) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "partition": partition_id})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready", "state": state(), "partition": partition_id})

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
