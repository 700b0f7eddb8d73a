"""The ports a pool's processes use, chosen once at creation and kept in `cluster.json`, so a
restarted pool (or a healed process) comes back where its peers expect it.

A pool on one host (`mhsm up`) names no hosts: every process is at the supervisor's local
address. A pool across hosts (`mhsm deploy init`) gives each partition and each etcd member its
host's address; an entry without one still means the local host, so older files load as before.
"""

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


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PartitionPorts:
    id: int
    port: int
    join_port: int
    host: str = ""  # "": the local host (a one-host pool)

    def address(self, local: str) -> str:
        """Where this partition listens and is reached: its host, else `local`."""
        return self.host or local


@dataclass(frozen=True)
class ClusterPlan:
    partitions: tuple[PartitionPorts, ...]
    etcd_ports: tuple[tuple[int, int], ...]
    etcd_token: str
    etcd_hosts: tuple[str, ...] = ()  # one per member in a pool across hosts; () on one host

    @property
    def multi_host(self) -> bool:
        """Whether the plan places processes on hosts of their own (`mhsm deploy init`)."""
        return bool(self.etcd_hosts) or any(p.host for p in self.partitions)

    def etcd_host(self, n: int, local: str) -> str:
        """Member `n`'s address: its host, else `local`."""
        return (self.etcd_hosts[n] if n < len(self.etcd_hosts) else "") or local

    def etcd_endpoints(self, host: str) -> list[str]:
        """Every member's client `host:port`; `host` stands for members with no host of their
        own."""
        return [
            _netloc(self.etcd_host(n, host), client)
            for n, (client, _) in enumerate(self.etcd_ports)
        ]

    def storage_url(self, host: str) -> str:
        return "etcd://" + ",".join(self.etcd_endpoints(host))

    def partition(self, n: int) -> PartitionPorts:
        return self.partitions[n]

    def peers(self, n: int, host: str) -> tuple[tuple[str, int], ...]:
        """The other partitions' join endpoints (`host` for those with no host of their own)."""
        return tuple((p.address(host), p.join_port) for p in self.partitions if p.id != n)

    def neighbours(self, n: int, host: str) -> tuple[PartitionPorts, ...]:
        """The partitions on partition `n`'s host, `n` included."""
        here = self.partition(n).address(host)
        return tuple(p for p in self.partitions if p.address(host) == here)

    def to_json(self) -> dict[str, Any]:
        etcd: dict[str, Any] = {
            "ports": [list(pair) for pair in self.etcd_ports],
            "token": self.etcd_token,
        }
        if self.etcd_hosts:
            etcd["hosts"] = list(self.etcd_hosts)
        return {
            "v": 1,
            "partitions": [
                {"id": p.id, "port": p.port, "join_port": p.join_port}
                | ({"host": p.host} if p.host else {})
                for p in self.partitions
            ],
            "etcd": etcd,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ClusterPlan:
        """Raises KeyError, TypeError or ValueError for a malformed plan."""
        ports = tuple((int(c), int(p)) for c, p in obj["etcd"]["ports"])
        hosts = tuple(str(h) for h in obj["etcd"].get("hosts", ()))
        if hosts and len(hosts) != len(ports):
            raise ValueError(f"{len(hosts)} etcd hosts for {len(ports)} etcd members")
        return cls(
            partitions=tuple(
                PartitionPorts(
                    int(p["id"]), int(p["port"]), int(p["join_port"]), str(p.get("host", ""))
                )
                for p in obj["partitions"]
            ),
            etcd_ports=ports,
            etcd_token=str(obj["etcd"]["token"]),
            etcd_hosts=hosts,
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
