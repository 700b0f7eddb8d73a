"""How the OpenAPI document's operations are written: one call per route, naming its success
status and body, its request body, its query parameters and the errors it can answer. Path
parameters are derived from the path template (`PATH_PARAMETERS`), so a route's entry cannot
disagree with its template."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from openmhsm.api.openapi_schemas import (
    API_VERSIONS,
    GUID_PATTERN,
    KEY_NAME_PATTERN,
    ref,
)
from openmhsm.types import JSON

JSON_MEDIA = "application/json"
Route = tuple[str, str, JSON]  # (path template, method, operation)
Routes = list[Route]

# Every error a data-plane call can answer (each with Key Vault's error body): a bad parameter,
# the 401 challenge, RBAC or activation, a missing object, a method the path does not take (a
# percent-encoded '/' in a parameter can land on another route), a conflict, a body over 1 MiB,
# throttling, and storage without quorum or a full restore in progress.
DATA_PLANE_ERRORS = (400, 401, 403, 404, 405, 409, 413, 429, 503)
OAUTH_ERRORS = (400, 401, 413, 429)  # 429: repeated failed secret checks back off

PATH_PARAMETERS: dict[str, JSON] = {
    "name": {"type": "string", "pattern": KEY_NAME_PATTERN},
    "version": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "definition": {"type": "string", "pattern": GUID_PATTERN},
    "assignment": {"type": "string", "minLength": 1, "maxLength": 64},
    "job": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "client_id": {"type": "string", "pattern": GUID_PATTERN},
    "tenant": {"type": "string", "minLength": 1, "maxLength": 64},
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

PARAMETERS: dict[str, JSON] = {
    "ApiVersion": {
        "name": "api-version",
        "in": "query",
        "required": True,
        "description": "Client API version.",
        "schema": {"type": "string", "enum": API_VERSIONS},
    },
    "OptionalApiVersion": {
        "name": "api-version",
        "in": "query",
        "required": False,
        "description": "Status URLs are polled without one (API.md §3.2).",
        "schema": {"type": "string", "enum": API_VERSIONS},
    },
    "MaxResults": {
        "name": "maxresults",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 25},
    },
    "SkipToken": {
        "name": "$skiptoken",
        "in": "query",
        "required": False,
        "description": "The opaque continuation of a nextLink.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
    },
    "Filter": {
        "name": "$filter",
        "in": "query",
        "required": False,
        "description": "atScope(), principalId eq '<id>', assignedTo('<id>') or "
        "roleName eq '<name>'.",
        "schema": {"type": "string", "maxLength": 1024},
    },
    "JobKind": {
        "name": "kind",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["backup", "restore"]},
    },
}
PAGED = ("MaxResults", "SkipToken")

_ASYNC_OPERATION: JSON = {
    "Azure-AsyncOperation": {
        "description": "The absolute status URL to poll.",
        "schema": {"type": "string"},
    }
}

RESPONSES: dict[str, JSON] = {
    "Error": {
        "description": "A Key Vault error.",
        "content": {JSON_MEDIA: {"schema": ref("Error")}},
    },
    "Challenge": {
        "description": "No valid bearer token: the authentication challenge.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {JSON_MEDIA: {"schema": ref("Error")}},
    },
    "OAuthError": {
        "description": "An OAuth error.",
        "content": {JSON_MEDIA: {"schema": ref("OAuthError")}},
    },
}


def path_parameters(template: str) -> list[JSON]:
    """The path parameters of a route template, in order."""
    return [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in _PLACEHOLDER.findall(template)
    ]


def _success(status: int, schema: str | None, media: str, headers: JSON | None) -> JSON:
    response: JSON = {"description": "Success."}
    if media != JSON_MEDIA:
        response["content"] = {media: {"schema": {"type": "string"}}}
    elif schema is not None:
        response["content"] = {media: {"schema": ref(schema)}}
    if headers:
        response["headers"] = headers
    return response


def operation(
    operation_id: str,
    tag: str,
    status: int,
    schema: str | None,
    *,
    body: str | None = None,
    query: Sequence[str] = (),
    api_version: str | None = "ApiVersion",
    accepted: bool = False,
) -> JSON:
    """A data-plane operation (bearer token; Key Vault errors). `body` names the JSON request
    schema; `query` names `PARAMETERS`; `accepted` adds the polling header of a 202."""
    parameters = [{"$ref": f"#/components/parameters/{p}"} for p in query]
    if api_version is not None:
        parameters.insert(0, {"$ref": f"#/components/parameters/{api_version}"})
    responses: JSON = {
        str(status): _success(status, schema, JSON_MEDIA, _ASYNC_OPERATION if accepted else None)
    }
    for code in DATA_PLANE_ERRORS:
        name = "Challenge" if code == 401 else "Error"
        responses[str(code)] = {"$ref": f"#/components/responses/{name}"}
    out: JSON = {
        "operationId": operation_id,
        "tags": [tag],
        "parameters": parameters,
        "responses": responses,
    }
    if body is not None:
        out["requestBody"] = {"required": True, "content": {JSON_MEDIA: {"schema": ref(body)}}}
    return out


def route(method: str, template: str, operation_id: str, tag: str, *args: Any, **kw: Any) -> Route:
    """One row of a path group: `operation(operation_id, tag, ...)` at (template, method)."""
    return template, method, operation(operation_id, tag, *args, **kw)


def public_operation(
    operation_id: str,
    schema: str | None,
    *,
    media: str = JSON_MEDIA,
    errors: Iterable[int] = (),
    form: str | None = None,
    parameters: Sequence[JSON] = (),
) -> JSON:
    """An operation without a token (`security: []`); its errors are OAuth-shaped. `schema`
    names the JSON body of its answer; a `media` other than JSON is text."""
    responses: JSON = {"200": _success(200, schema, media, None)}
    for code in errors:
        responses[str(code)] = {"$ref": "#/components/responses/OAuthError"}
    out: JSON = {
        "operationId": operation_id,
        "tags": ["public"],
        "security": [],
        "parameters": list(parameters),
        "responses": responses,
    }
    if form is not None:
        content = {"application/x-www-form-urlencoded": {"schema": ref(form)}}
        out["requestBody"] = {"required": True, "content": content}
    return out


def query_parameter(name: str, schema: JSON, *, required: bool = False) -> JSON:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def header_parameter(name: str, schema: JSON, *, required: bool = False) -> JSON:
    return {"name": name, "in": "header", "required": required, "schema": schema}


def paths(routes: Routes) -> dict[str, Any]:
    """`paths` of the document: each template with its path parameters and its operations."""
    out: dict[str, Any] = {}
    for template, method, op in routes:
        item = out.setdefault(template, {})
        if "parameters" not in item and path_parameters(template):
            item["parameters"] = path_parameters(template)
        if method.lower() in item:
            raise ValueError(f"{method} {template} is documented twice")
        item[method.lower()] = op
    return out
