"""open_storage: URLs to backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openmhsm.storage.memory import MemoryStorage
from openmhsm.storage.registry import open_storage
from openmhsm.storage.sqlite import SqliteStorage


def test_memory_url() -> None:
    storage = open_storage("memory://")
    assert isinstance(storage, MemoryStorage)
    asyncio.run(storage.close())


def test_sqlite_url(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite://{tmp_path}/pool.db")
    assert isinstance(storage, SqliteStorage)
    assert storage.path == tmp_path / "pool.db"
    asyncio.run(storage.close())


@pytest.mark.parametrize(
    "url", ["sqlite://relative.db", "sqlite://host/abs.db", "sqlite:///a.db?x=1", "memory://x"]
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_storage(url)


@pytest.mark.parametrize("url", ["redis://x", "nothing"])
def test_unknown_backend(url: str) -> None:
    with pytest.raises(ValueError, match="unknown storage backend"):
        open_storage(url)
