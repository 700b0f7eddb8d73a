"""Small disks for disk-full faults: a size-limited tmpfs mounted where a process keeps its files,
filled until writes fail with ENOSPC, and freed again. Needs root (`mount`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

FILLER = ".disk-full-filler"


def mount_tmpfs(path: Path, size: int) -> str:
    """Mount a tmpfs of `size` bytes at `path`; the reason it cannot be done, or ''."""
    if os.geteuid() != 0:
        return "disk full needs root (mount -t tmpfs)"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return "" if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def unmount(path: Path) -> None:
    """Unmount `path`; lazily if a process still has files open on it (it keeps them until it
    exits, and the memory goes then)."""
    done = subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError), path.open("ab", buffering=0) as f:
        while f.write(b"\0"):  # the last bytes of a partly free block
            pass


@contextlib.contextmanager
def moved_onto_tmpfs(directory: Path, size: int) -> Iterator[str]:
    """Put `directory`'s files on a tmpfs of `size` bytes mounted over it, before any process
    opens them; yields '' or the reason it cannot be done. Unmounted afterwards."""
    staging = directory.with_name(directory.name + ".staging")
    shutil.copytree(directory, staging, symlinks=True)
    reason = "not mounted"
    try:
        reason = mount_tmpfs(directory, size)
        if not reason:
            shutil.copytree(staging, directory, symlinks=True, dirs_exist_ok=True)
            directory.chmod(staging.stat().st_mode & 0o7777)
        yield reason
    finally:
        if not reason:
            unmount(directory)
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def full(directory: Path) -> Iterator[Path]:
    """The file system under `directory` filled for the block, then freed."""
    filler = directory / FILLER
    try:
        fill(filler)
        yield filler
    finally:
        filler.unlink(missing_ok=True)
