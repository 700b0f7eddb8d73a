"""`pool.json`: the contract between `mhsm up` and every client (DESIGN §9), written atomically
with mode 0600 whenever a process id changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openmhsm.auth.challenge import resource_for_host
from openmhsm.cluster.layout import DataDir, write_json_atomic
from openmhsm.config import PoolConfig


def pool_document(
    data: DataDir,
    config: PoolConfig,
    admin: Mapping[str, str],
    pid: int | None,
    partitions: Sequence[Mapping[str, Any]],
    etcd: Sequence[Mapping[str, Any]] = (),
    regions: Sequence[str] = (),
) -> dict[str, Any]:
    host = config.host
    host_port = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    return {
        "name": config.name,
        "url": config.url,
        "ca_cert": str(data.ca_cert.resolve()),
        "tenant_id": config.tenant_id,
        "authority": config.url,
        "resource": resource_for_host(host_port),
        "identity_endpoint": f"{config.url}/msi/token",
        "admin": {"client_id": admin["client_id"], "client_secret": admin["client_secret"]},
        "mode": config.mode,
        "pid": pid,
        "partitions": [dict(p) for p in partitions],
        "etcd": [dict(m) for m in etcd],
        **({"regions": list(regions)} if regions else {}),
    }


def write_pool_document(data: DataDir, document: Mapping[str, Any]) -> None:
    write_json_atomic(data.pool_json, dict(document))
