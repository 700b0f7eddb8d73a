"""A directory as a backup container (`file:///abs/path/container`): a folder is a subdirectory,
an object a file in it, written whole through a temporary file."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from openmhsm.backup.targets import (
    CONTAINER_NOT_FOUND,
    MANIFEST,
    PROBE_PREFIX,
    TargetError,
    check_folder,
    check_name,
    check_prefix,
    folder_not_found,
    object_not_found,
    object_too_large,
)

T = TypeVar("T")


class DirectoryTarget:
    """A directory as the container: a folder is a subdirectory, an object a file in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.container_url = "file://" + quote(str(root))

    def __repr__(self) -> str:
        return f"DirectoryTarget({self.container_url!r})"

    def folder_url(self, folder: str) -> str:
        return f"{self.container_url}/{quote(check_folder(folder))}"

    async def check_writable(self) -> None:
        await _in_thread(self._probe, "The parent of the backup directory does not exist.")

    async def check_readable(self, folder: str) -> None:
        if not await self.exists(folder, MANIFEST):
            raise TargetError(folder_not_found(folder))

    async def exists(self, folder: str, name: str) -> bool:
        path = self._path(folder, name)
        return await _in_thread(path.is_file, CONTAINER_NOT_FOUND)

    async def write(self, folder: str, name: str, data: bytes) -> None:
        path = self._path(folder, name)
        await _in_thread(lambda: self._write(path, data), CONTAINER_NOT_FOUND)

    async def read(self, folder: str, name: str, max_bytes: int) -> bytes:
        path = self._path(folder, name)
        data = await _in_thread(
            lambda: _read_at_most(path, max_bytes + 1), object_not_found(folder, name)
        )
        if len(data) > max_bytes:
            raise TargetError(object_too_large(folder, name, max_bytes))
        return data

    async def list_folders(self, prefix: str = "mhsm-") -> list[str]:
        check_prefix(prefix)
        return await _in_thread(lambda: self._list(prefix), CONTAINER_NOT_FOUND)

    async def delete_folder(self, folder: str) -> None:
        path = self.root / check_folder(folder)
        await _in_thread(lambda: _remove_tree(path), CONTAINER_NOT_FOUND)

    def close(self) -> None:
        pass

    def _path(self, folder: str, name: str) -> Path:
        return self.root / check_folder(folder) / check_name(name)

    def _probe(self) -> None:
        self.root.mkdir(exist_ok=True)
        probe = self.root / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()

    def _write(self, path: Path, data: bytes) -> None:
        # The container may be new, its parent may not; a crash leaves no half-written object.
        self.root.mkdir(exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with partial.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def _list(self, prefix: str) -> list[str]:
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.name.startswith(prefix) and not entry.name.startswith(".") and entry.is_dir()
        )


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _read_at_most(path: Path, limit: int) -> bytes:
    with path.open("rb") as file:
        return file.read(limit)


async def _in_thread(fn: Callable[[], T], missing: str) -> T:
    """`fn()` in a worker thread, its OSErrors as TargetError (`missing` for a missing path)."""
    try:
        return await asyncio.to_thread(fn)
    except FileNotFoundError:
        raise TargetError(missing) from None
    except PermissionError:
        raise TargetError("Access to the backup directory was denied.") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TargetError(f"The backup directory could not be used: {reason}.") from None
