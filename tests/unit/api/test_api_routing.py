"""Routing by shape finds what Starlette's loop over every route would find."""

from __future__ import annotations

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from openmhsm.api.routing import ANY_FIRST, IndexedRouter, shape_of


def endpoint(text: str) -> Route:
    async def answer(request: object) -> PlainTextResponse:
        return PlainTextResponse(text)

    return answer  # type: ignore[return-value]


def test_shapes() -> None:
    assert shape_of("/keys/k/") == ("keys", 3) == shape_of("/keys/{name}/")
    assert shape_of("/{tenant}/oauth2/v2.0/token") == (ANY_FIRST, 4)
    assert shape_of("/") == ("", 1)


def test_candidates_keep_the_order_and_the_parameter_first_routes() -> None:
    routes = [
        Route("/keys/{name}/create", endpoint("create"), methods=["POST"]),
        Route("/{tenant}/oauth2/token", endpoint("token"), methods=["POST"]),
        Route("/keys/{name}/{version}", endpoint("version"), methods=["GET"]),
        Route("/rng", endpoint("rng"), methods=["POST"]),
    ]
    router = IndexedRouter(routes, default=endpoint("default"))  # type: ignore[arg-type]
    assert [r.path for r in router.candidates("/keys/a/b")] == [  # type: ignore[attr-defined]
        "/keys/{name}/create", "/{tenant}/oauth2/token", "/keys/{name}/{version}"
    ]  # fmt: skip
    assert [r.path for r in router.candidates("/t/oauth2/token")] == [  # type: ignore[attr-defined]
        "/{tenant}/oauth2/token"
    ]
    assert router.candidates("/nothing/of/the/kind") == []


def test_only_plain_routes_are_indexed() -> None:
    with pytest.raises(ValueError, match="cannot index"):
        IndexedRouter([Route("/files/{rest:path}", endpoint("x"))], default=endpoint("d"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot index"):
        IndexedRouter([Mount("/m", routes=[])], default=endpoint("d"))  # type: ignore[arg-type]
