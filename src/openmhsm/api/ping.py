"""`/openmhsm/ping` path group: an authenticated call that does nothing else.

**Not part of Azure's API.** It goes through the whole chain a key operation takes (TLS, HTTP,
token, RBAC with `keys/read/action` at `/`, audit, metrics) and then only answers, so the
benchmarks can set the cost of a key operation against the cost of the stack (issue 9).

- GET `/openmhsm/ping?api-version=...` → 200 `{"partition": <id>}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

PATH = "/openmhsm/ping"


def routes(partition_id: int) -> list[BaseRoute]:
    body = JSONResponse({"partition": partition_id}).body

    async def ping(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return [Route(PATH, ping, methods=["GET"])]
