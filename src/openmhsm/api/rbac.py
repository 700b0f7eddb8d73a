"""`/{scope}/providers/Microsoft.Authorization/roleDefinitions|roleAssignments[/{name}]`: the
`KeyVaultAccessControlClient` contract (API §3.1) at scope `/`, `/keys` and `/keys/{name}`.

The SDK collapses the scope's slashes into the path (`/providers/…`, `/keys/providers/…`,
`/keys/k1/providers/…`). PUT answers 201 (the only status the SDK accepts), GET 200, DELETE 200
with the deleted object (the SDK parses it). Lists are paged with an absolute nextLink that keeps
the `$filter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.auth.roles import RoleDefinition
from openmhsm.services.rbac import RbacService, parse_filter
from openmhsm.services.rbac_index import RoleAssignment
from openmhsm.types import JSON

AUTHORIZATION = "/providers/Microsoft.Authorization"
SCOPES = ("", "/keys", "/keys/{name}")
T = TypeVar("T")


def definition_json(role: RoleDefinition) -> JSON:
    return {
        # The service sends the id without a leading slash (API §3.1).
        "id": f"Microsoft.KeyVault{AUTHORIZATION}/roleDefinitions/{role.name}",
        "name": role.name,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.role_name,
            "description": role.description,
            "type": role.role_type,
            "permissions": [
                {
                    "actions": list(p.actions),
                    "notActions": list(p.not_actions),
                    "dataActions": list(p.data_actions),
                    "notDataActions": list(p.not_data_actions),
                }
                for p in role.permissions
            ],
            "assignableScopes": list(role.assignable_scopes),
        },
    }


def assignment_json(assignment: RoleAssignment) -> JSON:
    prefix = "" if assignment.scope == "/" else assignment.scope
    return {
        "id": f"{prefix}{AUTHORIZATION}/roleAssignments/{assignment.name}",
        "name": assignment.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "scope": assignment.scope,
            "roleDefinitionId": (
                f"Microsoft.KeyVault{AUTHORIZATION}/roleDefinitions/{assignment.role_id}"
            ),
            "principalId": assignment.principal_id,
        },
    }


def _scope(request: Request) -> str:
    name = request.path_params.get("name")
    if name is not None:
        return f"/keys/{name}"
    return "/keys" if request.url.path.startswith("/keys/") else "/"


def _page(
    request: Request, items: Sequence[T], name_of: Callable[[T], str], render: Callable[[T], JSON]
) -> Response:
    """One page of `items` (sorted by name) after the `$skiptoken`, with an absolute nextLink
    that repeats the filter."""
    after = wire.skip_token(request)
    limit = wire.max_results(request)
    rest = [item for item in items if after is None or name_of(item) > after]
    more = name_of(rest[limit - 1]) if len(rest) > limit else None
    page = wire.page(request, [render(item) for item in rest[:limit]], more)
    query = request.query_params.get("$filter")
    if page["nextLink"] is not None and query is not None:
        page["nextLink"] += f"&$filter={quote(query, safe='')}"
    return JSONResponse(page)


class RbacApi:
    def __init__(self, rbac: RbacService) -> None:
        self.rbac = rbac

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for scope in SCOPES:
            definitions = f"{scope}{AUTHORIZATION}/roleDefinitions"
            assignments = f"{scope}{AUTHORIZATION}/roleAssignments"
            routes += [
                Route(definitions, self.list_definitions, methods=["GET"]),
                Route(f"{definitions}/{{definition}}", self.get_definition, methods=["GET"]),
                Route(f"{definitions}/{{definition}}", self.set_definition, methods=["PUT"]),
                Route(f"{definitions}/{{definition}}", self.delete_definition, methods=["DELETE"]),
                Route(assignments, self.list_assignments, methods=["GET"]),
                Route(f"{assignments}/{{assignment}}", self.get_assignment, methods=["GET"]),
                Route(f"{assignments}/{{assignment}}", self.create_assignment, methods=["PUT"]),
                Route(f"{assignments}/{{assignment}}", self.delete_assignment, methods=["DELETE"]),
            ]
        return routes

    async def list_definitions(self, request: Request) -> Response:
        query = parse_filter(request.query_params.get("$filter"))
        roles = self.rbac.list_definitions(query)
        return _page(request, roles, lambda role: role.name, definition_json)

    async def get_definition(self, request: Request) -> Response:
        role = self.rbac.get_definition(request.path_params["definition"])
        return JSONResponse(definition_json(role))

    async def set_definition(self, request: Request) -> Response:
        body = await wire.json_body(request)
        role = await self.rbac.set_definition(
            _scope(request), request.path_params["definition"], body
        )
        return JSONResponse(definition_json(role), status_code=201)

    async def delete_definition(self, request: Request) -> Response:
        role = await self.rbac.delete_definition(_scope(request), request.path_params["definition"])
        return JSONResponse(definition_json(role))

    async def list_assignments(self, request: Request) -> Response:
        query = parse_filter(request.query_params.get("$filter"))
        found = self.rbac.list_assignments(_scope(request), query)
        return _page(request, found, lambda a: a.name, assignment_json)

    async def get_assignment(self, request: Request) -> Response:
        found = self.rbac.get_assignment(_scope(request), request.path_params["assignment"])
        return JSONResponse(assignment_json(found))

    async def create_assignment(self, request: Request) -> Response:
        body = await wire.json_body(request)
        properties: Any = body.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        made = await self.rbac.create_assignment(
            _scope(request),
            request.path_params["assignment"],
            properties.get("principalId"),
            properties.get("roleDefinitionId"),
        )
        return JSONResponse(assignment_json(made), status_code=201)

    async def delete_assignment(self, request: Request) -> Response:
        gone = await self.rbac.delete_assignment(_scope(request), request.path_params["assignment"])
        return JSONResponse(assignment_json(gone))
