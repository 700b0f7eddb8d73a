"""Soft-deleted pools: the marker a deleted pool's data dir holds, and the machine-wide registry
of deleted pools (a Managed HSM's name stays taken while the HSM is soft-deleted).

The marker is the truth about one data dir; the registry only indexes markers, so an entry whose
data dir no longer holds the same marker (recovered, purged, or removed by hand) is stale and
ignored. Writes go marker first on delete and marker last on purge, so an interrupted command
leaves at worst a stale entry, never a half-purged pool that looks alive."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.config import DeletionPolicy, check_clock_offset

DAY = 86_400
MARKER = "deleted.json"
REGISTRY = "deleted-pools.json"
CLOCK_OFFSET_VARIABLE = "MHSM_CLOCK_OFFSET"


class PoolBusy(Exception):
    """Another process holds the data dir's lock: the pool is running or starting."""


@dataclass(frozen=True, slots=True)
class DeletedPool:
    """A soft-deleted pool: where it lives and when it was deleted and will be purged (Unix
    seconds)."""

    name: str
    data_dir: str
    deleted: int
    scheduled_purge: int
    purge_protection: bool

    @classmethod
    def new(cls, name: str, data: DataDir, policy: DeletionPolicy, now: float) -> DeletedPool:
        deleted = int(now)
        return cls(
            name=name,
            data_dir=str(data.root),
            deleted=deleted,
            scheduled_purge=deleted + policy.retention_days * DAY,
            purge_protection=policy.purge_protection,
        )

    def due(self, now: float) -> bool:
        """Whether the retention period has ended (the pool is purged automatically)."""
        return now >= self.scheduled_purge

    def recoverable(self, now: float) -> bool:
        return not self.due(now)

    def purgeable(self, now: float) -> bool:
        """Purge protection holds until the retention period ends; without it, purge any time."""
        return not self.purge_protection or self.due(now)

    def summary(self) -> dict[str, Any]:
        """What `mhsm pool delete` prints, dates in ISO 8601 UTC."""
        return {
            "name": self.name,
            "deletedDate": iso_date(self.deleted),
            "scheduledPurgeDate": iso_date(self.scheduled_purge),
            "purgeProtection": self.purge_protection,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DeletedPool:
        return cls(
            name=str(obj["name"]),
            data_dir=str(obj["data_dir"]),
            deleted=int(obj["deleted"]),
            scheduled_purge=int(obj["scheduled_purge"]),
            purge_protection=bool(obj["purge_protection"]),
        )


def iso_date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def state_dir(environ: Mapping[str, str]) -> Path:
    """Where machine-wide state lives: $MHSM_STATE_DIR, else $XDG_STATE_HOME/openmhsm, else
    ~/.local/state/openmhsm (a relative XDG_STATE_HOME is ignored, as the XDG spec says)."""
    if environ.get("MHSM_STATE_DIR"):
        return Path(environ["MHSM_STATE_DIR"])
    xdg = environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "openmhsm"


def clock_offset(environ: Mapping[str, str], fallback: float) -> float:
    """$MHSM_CLOCK_OFFSET in seconds if set, else `fallback` (the pool's configured offset).
    Raises ValueError if the variable is not a number."""
    text = environ.get(CLOCK_OFFSET_VARIABLE, "").strip()
    if not text:
        return fallback
    try:
        return check_clock_offset(float(text))
    except ValueError:
        raise ValueError(
            f"{CLOCK_OFFSET_VARIABLE} must be a finite number of seconds, not {text!r}"
        ) from None


# --- the marker in the data dir --------------------------------------------------------------


def marker_path(data: DataDir) -> Path:
    return data.root / MARKER


def read_marker(data: DataDir) -> DeletedPool | None:
    """The pool's deletion record, or None if the pool is not deleted."""
    try:
        return DeletedPool.from_json(read_json(marker_path(data)))
    except FileNotFoundError:
        return None


def write_marker(data: DataDir, entry: DeletedPool) -> None:
    write_json_atomic(marker_path(data), entry.to_json())


def is_current(entry: DeletedPool) -> bool:
    """Whether the entry's data dir still holds this very deletion."""
    return read_marker(DataDir(Path(entry.data_dir))) == entry


@contextmanager
def locked(data: DataDir, wait: float = 0.0) -> Iterator[None]:
    """Hold the data dir's lock (the one `mhsm up` holds while the pool runs), trying for up to
    `wait` seconds. Raises PoolBusy if another process keeps it."""
    deadline = time.monotonic() + wait
    with (data.root / ".lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PoolBusy(str(data.root)) from None
                time.sleep(0.02)
        yield


# What `mhsm up` makes in a data dir; anything else there (the dir may be shared) is not ours.
POOL_ENTRIES = frozenset(
    {"config.json", "pool.json", "admin.json", "tls", "logs", "audit", "cluster.json",
     "supervisor.json", "etcd", "partitions", "security-domain", ".lock"}
)  # fmt: skip


def is_pool_entry(name: str) -> bool:
    """Whether `name` in a data dir is one of the pool's own entries (its SQLite files and
    the temporary files of atomic writes included)."""
    if name in POOL_ENTRIES or name.startswith("store.db"):
        return True
    return name.startswith(".") and name[1:].split(".json.", 1)[0] + ".json" in POOL_ENTRIES


def purge_data_dir(data: DataDir) -> list[Path]:
    """Delete the pool's own entries in a deleted pool's data dir (the dir itself stays, and so
    does anything else in it, returned), the marker last so that an interrupted purge leaves a
    pool that is still deleted and can be purged again. Symbolic links are removed, never
    followed."""
    marker = marker_path(data)
    left: list[Path] = []
    for path in data.root.iterdir():
        if path == marker:
            continue
        if not is_pool_entry(path.name):
            left.append(path)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    marker.unlink(missing_ok=True)
    return left


# --- the machine-wide registry ---------------------------------------------------------------


class DeletedPoolRegistry:
    """`deleted-pools.json` in the state dir (0600, the dir 0700): every deleted pool, by data
    dir. Changes hold an exclusive lock on a lock file beside it; reads need none (the file is
    replaced atomically)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / REGISTRY
        self._lock_path = folder / f".{REGISTRY}.lock"

    def read(self) -> list[DeletedPool]:
        """Every entry, stale ones included; [] if no pool was ever deleted here."""
        try:
            doc = read_json(self.path)
        except FileNotFoundError:
            return []
        return [DeletedPool.from_json(e) for e in doc.get("pools", [])]

    def entries(self) -> list[DeletedPool]:
        """The pools that are deleted now (stale entries left out), oldest deletion first."""
        return sorted((e for e in self.read() if is_current(e)), key=lambda e: e.deleted)

    @contextmanager
    def editing(self) -> Iterator[list[DeletedPool]]:
        """Yield the entries under the lock; what the caller leaves in the list is saved."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            before = self.read()
            entries = list(before)
            yield entries
            if entries != before:
                write_json_atomic(self.path, {"v": 1, "pools": [e.to_json() for e in entries]})

    def record(self, entry: DeletedPool) -> None:
        """Add a deleted pool, replacing any older entry for its data dir."""
        with self.editing() as entries:
            entries[:] = [e for e in entries if e.data_dir != entry.data_dir] + [entry]

    def forget(self, data_dir: str) -> None:
        if not self.path.exists():
            return
        with self.editing() as entries:
            entries[:] = [e for e in entries if e.data_dir != data_dir]

    def holding_name(self, name: str, now: float) -> DeletedPool | None:
        """The deleted pool, still within its retention, that keeps `name` taken, if any."""
        return next((e for e in self.entries() if e.name == name and not e.due(now)), None)

    def sweep(self, now: float) -> list[DeletedPool]:
        """Purge every deleted pool whose retention has ended, and drop stale entries; return the
        pools purged. A pool whose data dir is locked waits for the next sweep."""
        if not any(e.due(now) for e in self.read()):
            return []
        purged: list[DeletedPool] = []
        with self.editing() as entries:
            for entry in [e for e in entries if e.due(now)]:
                data = DataDir(Path(entry.data_dir))
                if not is_current(entry):
                    entries.remove(entry)
                    continue
                try:
                    with locked(data):
                        purge_data_dir(data)
                except PoolBusy:
                    continue
                entries.remove(entry)
                purged.append(entry)
        return purged
