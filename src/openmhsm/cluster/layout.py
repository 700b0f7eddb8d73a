"""Where a pool keeps its files under its data directory, and the files' atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def pool_json(self) -> Path:
        return self.root / "pool.json"

    @property
    def admin(self) -> Path:
        return self.root / "admin.json"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls / "ca.key"

    @property
    def join_ca(self) -> Path:
        """In an extended region: the primary's CA, which issued the partition certificates."""
        return self.tls / "join-ca.pem"

    @property
    def region_state(self) -> Path:
        """In an extended region: the replication lag as the supervisor last saw it."""
        return self.root / "region.json"

    @property
    def server_cert(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server.key"

    @property
    def sqlite(self) -> Path:
        return self.root / "store.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def audit(self) -> Path:
        """One audit log per partition: `partition-<n>.jsonl`, rotated by size."""
        return self.root / "audit"

    @property
    def cluster(self) -> Path:
        """Ports and etcd endpoints chosen by the supervisor (pool mode)."""
        return self.root / "cluster.json"

    @property
    def supervisor_state(self) -> Path:
        """Heals, maintenance and health as the supervisor last saw them."""
        return self.root / "supervisor.json"

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    def partition_cert(self, n: int) -> Path:
        return self.partition(n) / "partition.pem"

    def partition_key(self, n: int) -> Path:
        return self.partition(n) / "partition.key"

    def partition(self, n: int) -> Path:
        return self.root / "partitions" / str(n)

    def sealed(self, n: int) -> Path:
        return self.partition(n) / "sealed"

    def seal_key(self, n: int) -> Path:
        return self.partition(n) / "seal.key"


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with path.open() as f:
        return json.load(f)
