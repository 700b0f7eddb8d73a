"""The audit log: one JSON object per line, one file per partition, rotated by size.

A partition writes `DIR/audit/partition-<n>.jsonl`; when a line would take it past `max_bytes`
it is renamed `.1` (the previous `.1` becomes `.2`, and so on) and a new file is started, so at
most `backups` rotated files are kept. This module is the only one that knows the format: the
writer here, and the readers the `mhsm audit` commands use.

Each line is written with one unbuffered `write()` on an `O_APPEND` file: a few microseconds of
page-cache copy, no fsync and no background task, so a line is on disk (in the page cache) before
its response has been sent, and a crash loses nothing that was answered. A failed write (a full
disk, say) is logged and counted but never fails the request it records.

Records hold only what `AuditRecord` names. Callers must not put secrets, tokens, key material,
request bodies or query strings in them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
_FILE = re.compile(r"partition-(\d+)\.jsonl(?:\.(\d+))?")
_MAX_RESOURCE = 1024
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)  # one, not one per line


def file_name(partition: int) -> str:
    return f"partition-{partition}.jsonl"


def utc_iso(seconds: float) -> str:
    """`2024-01-02T03:04:05.678Z`: ISO 8601 in UTC with milliseconds, which sorts as text."""
    whole = int(seconds // 1)
    millis = int((seconds - whole) * 1000)
    return f"{_utc_second(whole)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(whole: int) -> str:
    """Formatting a datetime costs as much as the rest of a record: reuse it within a second."""
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request as the audit log keeps it. `principal` is `{object_id, client_id, name}`
    and `issuer` the token's issuer, both only for an authenticated caller."""

    time: float
    request_id: str
    operation: str
    resource: str
    status: int
    latency_ms: float
    partition: int
    client: str | None = None
    principal: dict[str, str] | None = None
    issuer: str | None = None
    error_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": utc_iso(self.time),
            "request_id": self.request_id,
            "principal": self.principal,
            "issuer": self.issuer,
            "operation": self.operation,
            "resource": self.resource[:_MAX_RESOURCE],
            "status": self.status,
            "error_code": self.error_code,
            "latency_ms": round(self.latency_ms, 3),
            "partition": self.partition,
            "client": self.client,
        }
        return {k: v for k, v in out.items() if v is not None}


class AuditLog:
    """Appends records to one partition's audit file, rotating it by size."""

    def __init__(
        self,
        directory: Path,
        partition: int,
        *,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
    ) -> None:
        self.directory = directory
        self.partition = partition
        self.path = directory / file_name(partition)
        self.max_bytes = max_bytes
        self.backups = backups
        self.failed_writes = 0
        self._fd: int | None = None
        self._size = 0

    def write(self, record: AuditRecord) -> None:
        """Append one record as one line. Never raises for I/O errors (see the module doc)."""
        data = (_ENCODER.encode(record.to_json()) + "\n").encode("ascii")
        try:
            if self._fd is None:
                self._open()
            elif self._size + len(data) > self.max_bytes and self._size > 0:
                self._rotate()
            assert self._fd is not None
            self._size += os.write(self._fd, data)
        except OSError as exc:
            self.failed_writes += 1
            if self.failed_writes == 1 or self.failed_writes % 1000 == 0:
                log.error("audit log write failed (%d so far): %s", self.failed_writes, exc)
            self.close()  # reopen on the next write

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()


# --- reading ---------------------------------------------------------------------------------


def partition_files(directory: Path) -> dict[int, list[Path]]:
    """Each partition's audit files, oldest first (`.5` … `.1`, then the current file)."""
    found: dict[int, list[tuple[int, Path]]] = {}
    if directory.is_dir():
        for path in directory.iterdir():
            match = _FILE.fullmatch(path.name)
            if match is not None and path.is_file():
                generation = int(match.group(2) or 0)
                found.setdefault(int(match.group(1)), []).append((generation, path))
    return {n: [p for _, p in sorted(files, reverse=True)] for n, files in sorted(found.items())}


def parse_lines(text: str) -> Iterator[dict[str, Any]]:
    """The records of complete lines; a torn or foreign line is skipped."""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("time"), str):
            yield record


def read_records(directory: Path, *, newest: int | None = None) -> list[dict[str, Any]]:
    """Every partition's records merged by time (ties keep file order). With `newest`, only
    the last `newest` of them, reading rotated files only when the current ones hold too few."""
    merged: list[dict[str, Any]] = []
    for files in partition_files(directory).values():
        records: list[dict[str, Any]] = []
        for path in reversed(files):  # newest file first
            if newest is not None and len(records) >= newest:
                break
            records[:0] = parse_lines(_read_text(path))
        merged.extend(records)
    merged.sort(key=lambda record: record["time"])
    return merged if newest is None else merged[-newest:] if newest > 0 else []


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:  # rotated away between listing and reading
        return ""


class Follower:
    """New records as partitions append them, following each file across rotations."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[Path, TextIO] = {}
        self._partial: dict[Path, str] = {}

    def start_at_end(self) -> None:
        """Skip what is already written: only later records will be returned."""
        for path in self._current_paths():
            handle = path.open("r", encoding="utf-8", errors="replace")
            handle.seek(0, os.SEEK_END)
            self._files[path] = handle

    def poll(self) -> list[dict[str, Any]]:
        """Records appended since the last poll, merged by time."""
        records: list[dict[str, Any]] = []
        for path in self._current_paths():
            handle = self._files.get(path)
            if handle is not None and _replaced(path, handle):
                records.extend(self._drain(path, handle))  # the rest of the rotated file
                handle.close()
                handle = None
                self._partial.pop(path, None)
            if handle is None:
                try:
                    handle = path.open("r", encoding="utf-8", errors="replace")
                except FileNotFoundError:
                    continue
                self._files[path] = handle
            records.extend(self._drain(path, handle))
        records.sort(key=lambda record: record["time"])
        return records

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def _current_paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.iterdir() if _FILE.fullmatch(p.name) and p.suffix == ".jsonl"
        )

    def _drain(self, path: Path, handle: TextIO) -> list[dict[str, Any]]:
        text = self._partial.pop(path, "") + handle.read()
        complete, _, rest = text.rpartition("\n")
        if rest:
            self._partial[path] = rest  # a line still being written
        return list(parse_lines(complete))


def _replaced(path: Path, handle: TextIO) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
