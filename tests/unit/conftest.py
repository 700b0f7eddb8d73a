"""Fixtures for the unit tests; the in-process stack lives in `unit_stack.py` (a module name of
its own: `from conftest import ...` would clash with tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from unit_stack import (
    ApiHarness,
    FakeClock,
    Stack,
    T,
    build_stack,
    open_api,
)

from openmhsm.config import DeletionPolicy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StackBody = Callable[[Stack], Awaitable[T]]


@pytest.fixture
def hsm(clock: FakeClock) -> Callable[..., Any]:
    """`hsm(body, deletion=..., load=...)`: run `await body(stack)` in a new loop, then close."""

    def run(body: StackBody[T], **options: Any) -> T:
        async def main() -> T:
            stack = await build_stack(clock=clock, **options)
            try:
                return await body(stack)
            finally:
                await stack.close()

        return asyncio.run(main())

    return run


@pytest.fixture
def make_api(clock: FakeClock) -> Iterator[Callable[..., ApiHarness]]:
    """`make_api(deletion=..., rbac=..., raise_server_exceptions=...)`: a new app and stack
    (`rbac=True`: roles enforced, the admin holding Managed HSM Administrator)."""
    with contextlib.ExitStack() as exits:

        def make(
            deletion: DeletionPolicy | None = None, *, rbac: bool = False, **client_options: Any
        ) -> ApiHarness:
            return exits.enter_context(open_api(clock, deletion, rbac=rbac, **client_options))

        yield make


@pytest.fixture
def api(make_api: Callable[..., ApiHarness]) -> ApiHarness:
    return make_api()


@pytest.fixture(scope="module")
def module_api() -> Iterator[ApiHarness]:
    """One app for a whole module (for large parametrized corpora); 5xx stay responses."""
    with open_api(FakeClock(), raise_server_exceptions=False) as harness:
        yield harness
