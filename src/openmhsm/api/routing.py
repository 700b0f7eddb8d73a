"""Routing by shape: Starlette's `Router`, trying only the routes that can match a path.

Starlette tries every route in order, and the data plane has about a hundred: matching was a
third of a small request's time (issue 9). A path parameter never spans a '/' here (no `:path`
convertor), so a route can match only a path with as many '/' as its template and, unless its
first segment is a parameter, the same first segment. The routes of one shape keep their order,
so the first full match, and the 405 of a partial one, are what Starlette's loop would find.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

Shape = tuple[str, int]
ANY_FIRST = "{"  # the first segment is a path parameter


def shape_of(path: str) -> Shape:
    """The first segment and the number of '/' of a request path or a route template."""
    first = path.split("/", 2)[1] if path.count("/") else ""
    return (ANY_FIRST if first.startswith("{") else first, path.count("/"))


class IndexedRouter(Router):
    """A Router over `Route`s without `:path` parameters, looked up by shape."""

    def __init__(self, routes: Sequence[BaseRoute], default: ASGIApp) -> None:
        super().__init__(routes=list(routes), redirect_slashes=False, default=default)
        self._shapes: dict[Shape, list[BaseRoute]] = {}
        self._any_first: dict[int, list[BaseRoute]] = {}
        for route in routes:
            if not isinstance(route, Route) or ":path}" in route.path:
                raise ValueError(f"cannot index {route!r}: only Routes without :path")
            shape = shape_of(route.path)
            if shape[0] == ANY_FIRST:
                self._any_first.setdefault(shape[1], []).append(route)
        for route in routes:
            assert isinstance(route, Route)
            shape = shape_of(route.path)
            if shape[0] != ANY_FIRST and shape not in self._shapes:
                self._shapes[shape] = [
                    r
                    for r in routes
                    if shape_of(r.path) in (shape, (ANY_FIRST, shape[1]))  # type: ignore[attr-defined]
                ]

    def candidates(self, path: str) -> list[BaseRoute]:
        shape = shape_of(path)
        found = self._shapes.get(shape)
        return found if found is not None else self._any_first.get(shape[1], [])

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        scope.setdefault("router", self)
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        if partial is not None:  # the path matches, the method does not: 405
            scope["route"] = partial[0]
            scope.update(partial[1])
            await partial[0].handle(scope, receive, send)
            return
        await self.default(scope, receive, send)
