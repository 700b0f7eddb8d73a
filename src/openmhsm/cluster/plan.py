"""The ports a pool's processes use, chosen once at creation and kept in `cluster.json`, so a
restarted pool (or a healed process) comes back where its peers expect it."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Any

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic

PARTITIONS = 3
ETCD_MEMBERS = 3


def local_host(bind: str) -> str:
    """The address peers on this host reach a process bound to `bind` at."""
    # A comparison with the wildcard address, not a bind to it.
    wildcard = not bind or bind == "0.0.0.0"  # noqa: S104  # nosec B104
    return "127.0.0.1" if wildcard else "::1" if bind == "::" else bind


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports free right now (the kernel's choice; held open until all are
    picked so they differ)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class PartitionPorts:
    id: int
    port: int
    join_port: int


@dataclass(frozen=True)
class ClusterPlan:
    partitions: tuple[PartitionPorts, ...]
    etcd_ports: tuple[tuple[int, int], ...]
    etcd_token: str

    def etcd_endpoints(self, host: str) -> list[str]:
        return [f"{host}:{client}" for client, _ in self.etcd_ports]

    def storage_url(self, host: str) -> str:
        return "etcd://" + ",".join(self.etcd_endpoints(host))

    def partition(self, n: int) -> PartitionPorts:
        return self.partitions[n]

    def peers(self, n: int, host: str) -> tuple[tuple[str, int], ...]:
        return tuple((host, p.join_port) for p in self.partitions if p.id != n)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "partitions": [
                {"id": p.id, "port": p.port, "join_port": p.join_port} for p in self.partitions
            ],
            "etcd": {"ports": [list(pair) for pair in self.etcd_ports], "token": self.etcd_token},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ClusterPlan:
        return cls(
            partitions=tuple(
                PartitionPorts(int(p["id"]), int(p["port"]), int(p["join_port"]))
                for p in obj["partitions"]
            ),
            etcd_ports=tuple((int(c), int(p)) for c, p in obj["etcd"]["ports"]),
            etcd_token=str(obj["etcd"]["token"]),
        )


def load_or_create_plan(data: DataDir, host: str) -> ClusterPlan:
    if data.cluster.exists():
        return ClusterPlan.from_json(read_json(data.cluster))
    ports = free_ports(host, PARTITIONS * 2 + ETCD_MEMBERS * 2)
    plan = ClusterPlan(
        partitions=tuple(
            PartitionPorts(n, ports[2 * n], ports[2 * n + 1]) for n in range(PARTITIONS)
        ),
        etcd_ports=tuple(
            (ports[PARTITIONS * 2 + 2 * n], ports[PARTITIONS * 2 + 2 * n + 1])
            for n in range(ETCD_MEMBERS)
        ),
        etcd_token=f"openmhsm-{uuid.uuid4().hex}",
    )
    write_json_atomic(data.cluster, plan.to_json())
    return plan
