"""Fixtures for the integration tests; the pool helpers live in `dev_pool.py` (a module name of
its own: `from conftest import ...` would clash with tests/unit/conftest.py in one process)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from dev_pool import DevPool, start_pool
from keys_support import raw_client, sdk_key_client


@pytest.fixture(scope="module")
def dev_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    """One dev pool per test module (modules are spread over workers whole)."""
    pool = start_pool(tmp_path_factory.mktemp("pool"))
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def key_client(dev_pool: DevPool) -> Iterator[KeyClient]:
    """The admin's KeyClient, closed (and its connections released) with the module."""
    with sdk_key_client(dev_pool) as client:
        yield client


@pytest.fixture(scope="module")
def credential(dev_pool: DevPool) -> Iterator[ClientSecretCredential]:
    with dev_pool.credential() as cred:
        yield cred


@pytest.fixture(scope="module")
def http(dev_pool: DevPool) -> Iterator[httpx.Client]:
    """Raw HTTPS with the admin's bearer token."""
    with raw_client(dev_pool) as client:
        yield client
