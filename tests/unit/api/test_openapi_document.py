"""`GET /openapi.json`: the document covers exactly the routes the pool serves, is served without a
token, and is well formed (every `$ref` resolves, operation ids are unique, schemathesis loads
every operation)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest
import schemathesis
from starlette.routing import Route

from openmhsm.api import health, openapi
from openmhsm.api.app import data_plane_routes
from openmhsm.api.context import ApiContext
from openmhsm.api.metrics import RequestMetrics, metrics_routes
from openmhsm.api.middleware import API_VERSION
from openmhsm.api.openapi_operations import PATH_PARAMETERS
from openmhsm.api.openapi_schemas import API_VERSIONS
from openmhsm.api.ui import static_routes
from openmhsm.auth.identity import identity_routes

METHODS = ("get", "put", "post", "patch", "delete")
Operation = tuple[str, str]  # (METHOD, path template)


def _full_context() -> ApiContext:
    """A context with every optional service present, so `data_plane_routes` lists every route.
    Building the routes only keeps references to the services: stand-ins do."""
    stand_in: Any = SimpleNamespace()
    domain: Any = SimpleNamespace(cached_state=lambda: "Active")
    return ApiContext(
        keys=stand_in,
        deleted=stand_in,
        ops=stand_in,
        backups=stand_in,
        principals=stand_in,
        tokens=stand_in,
        deletion=stand_in,
        tenant_id="t",
        audience_ok=lambda audience: True,
        security_domain=domain,
        rbac=stand_in,
        settings=stand_in,
        jobs=stand_in,
        release=stand_in,
    )


def _operations(routes: list[Any]) -> set[Operation]:
    out = set()
    for route in routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                out.add((method, route.path))
    return out


def _public_operations() -> set[Operation]:
    stand_in: Any = SimpleNamespace()
    return _operations(
        [
            *health.routes(lambda: "Active", 0),
            *identity_routes(stand_in, stand_in, "t", lambda audience: True),
            *metrics_routes(RequestMetrics(), 0),
            *openapi.routes(),
            *static_routes(),
        ]
    )


def _documented() -> set[Operation]:
    return {
        (method.upper(), path)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in METHODS
    }


def _all_operations() -> Iterator[dict[str, Any]]:
    for item in openapi.document()["paths"].values():
        for method in METHODS:
            if method in item:
                yield item[method]


def test_every_data_plane_route_is_documented() -> None:
    missing = _operations(data_plane_routes(_full_context())) - _documented()
    assert not missing, sorted(missing)


def test_every_documented_operation_is_served() -> None:
    served = _operations(data_plane_routes(_full_context())) | _public_operations()
    extra = _documented() - served
    assert not extra, sorted(extra)


def test_public_routes_are_documented_without_a_token() -> None:
    for method, path in _public_operations():
        operation = openapi.document()["paths"][path][method.lower()]
        assert operation["security"] == [], (method, path)
    data_plane = _operations(data_plane_routes(_full_context()))
    for method, path in data_plane:
        assert "security" not in openapi.document()["paths"][path][method.lower()]
    assert openapi.document()["security"] == [{"bearer": []}]


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for operation in _all_operations()]
    assert len(ids) == len(set(ids))


def test_path_parameters_match_the_templates() -> None:
    for path, item in openapi.document()["paths"].items():
        names = re.findall(r"\{([a-z_]+)\}", path)
        declared = [p["name"] for p in item.get("parameters", []) if p["in"] == "path"]
        assert declared == names, path
        assert set(names) <= set(PATH_PARAMETERS)


def test_every_documented_api_version_is_accepted() -> None:
    assert all(API_VERSION.fullmatch(version) for version in API_VERSIONS)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves_and_every_schema_is_valid() -> None:
    doc = openapi.document()
    for ref in set(_refs(doc)):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft4Validator.check_schema(schema)


def test_schemathesis_loads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    results = list(schema.get_all_operations())
    errors = [result.err() for result in results if not hasattr(result, "ok")]
    assert not errors, errors[:3]
    for result in results:  # every request strategy builds
        result.ok().as_strategy()
    assert len(results) == len(_documented())


def test_the_document_is_served_without_a_token(api: Any) -> None:
    response = api.send_anonymous("GET", "/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.document()
    assert response.json()["openapi"].startswith("3.0")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_document_takes_only_get(api: Any, method: str) -> None:
    response = api.send_anonymous(method, "/openapi.json")
    assert response.status_code == 405


def test_the_document_is_built_once() -> None:
    assert openapi.document() is openapi.document()
    assert cast(dict[str, Any], openapi.document())["paths"]
