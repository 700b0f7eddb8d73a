"""Fixtures for the integration tests; the pool helpers live in `dev_pool.py` (a module name of
its own: `from dev_pool import ...` would clash with tests/unit/conftest.py in one process)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from azure.keyvault.keys import KeyClient
from dev_pool import DevPool, start_pool


@pytest.fixture(scope="module")
def dev_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    """One dev pool per test module (modules are spread over workers whole)."""
    pool = start_pool(tmp_path_factory.mktemp("pool"))
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def key_client(dev_pool: DevPool) -> KeyClient:
    return dev_pool.key_client()


@pytest.fixture(scope="module")
def http(dev_pool: DevPool) -> Iterator[httpx.Client]:
    with dev_pool.http() as client:
        yield client
