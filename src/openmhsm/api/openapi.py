"""`GET /openapi.json`: an OpenAPI 3.0 document of the pool's HTTP API (issue 10).

It covers every route of `app.data_plane_routes` (keys and crypto in `openapi_keys.py`, the
administration routes in `openapi_admin.py`) and the public ones (health, metrics, this document,
the token issuer), with Key Vault's JSON shapes (`openapi_schemas.py`,
`openapi_admin_schemas.py`). A unit test keeps it and the route table equal. It is built once and
served without a token: it describes the API and holds nothing of the pool's.
"""

from __future__ import annotations

import functools
import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from openmhsm.api.openapi_admin import ADMIN_ROUTES, PUBLIC_ROUTES
from openmhsm.api.openapi_admin_schemas import ADMIN_SCHEMAS
from openmhsm.api.openapi_keys import KEY_ROUTES
from openmhsm.api.openapi_operations import PARAMETERS, RESPONSES, paths
from openmhsm.api.openapi_schemas import schemas
from openmhsm.types import JSON

PATH = "/openapi.json"
OPENAPI_VERSION = "3.0.3"
API_DOC_VERSION = "2025-07-01"


@functools.cache
def document() -> JSON:
    """The whole document. Callers must not change it (it is shared)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "OpenMHSM",
            "version": API_DOC_VERSION,
            "description": "Azure Key Vault Managed HSM's data-plane REST API as an OpenMHSM "
            "pool serves it, with OpenMHSM's own /openmhsm routes and its token issuer.",
        },
        "security": [{"bearer": []}],
        "paths": paths([*KEY_ROUTES, *ADMIN_ROUTES, *PUBLIC_ROUTES]),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": PARAMETERS,
            "responses": RESPONSES,
            "schemas": schemas(ADMIN_SCHEMAS),
        },
    }


@functools.cache
def _encoded() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    return Response(_encoded(), media_type="application/json")


def routes() -> list[BaseRoute]:
    return [Route(PATH, openapi_json, methods=["GET"])]
