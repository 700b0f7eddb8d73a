"""Storage URLs to backends: one line per backend.

- `memory://` — `MemoryStorage`, gone with the process (unit tests).
- `sqlite:///abs/path.db` — `SqliteStorage` on that file (embedded / dev mode).
- `etcd://host1:port1,host2:port2,host3:port3` — `EtcdStorage` on every member of a cluster.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from openmhsm.storage.base import Storage
from openmhsm.storage.etcd import EtcdStorage
from openmhsm.storage.memory import MemoryStorage
from openmhsm.storage.sqlite import SqliteStorage


def open_storage(url: str) -> Storage:
    """Open the backend named by `url`.

    Raises ValueError for an unknown scheme ("unknown storage backend") or a malformed URL, and
    StorageUnavailable when the backend cannot be opened.
    """
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"memory storage takes no location: {url!r}")
        return MemoryStorage()
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or parts.query:
            raise ValueError(f"expected sqlite:///absolute/path.db, got {url!r}")
        return SqliteStorage(path)
    if parts.scheme == "etcd":
        if parts.path or parts.query or parts.fragment or not parts.netloc:
            raise ValueError(f"expected etcd://host1:port1,host2:port2,..., got {url!r}")
        return EtcdStorage(parts.netloc.split(","))
    raise ValueError(f"unknown storage backend {parts.scheme or url!r} in {url!r}")
