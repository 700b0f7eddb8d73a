"""`mhsm partition`: one partition process of a pool; the supervisor runs it, not people."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.cluster.partition import Partition, PartitionSettings
from openmhsm.cluster.plan import ClusterPlan, local_host
from openmhsm.config import PoolConfig


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    part = commands.add_parser("partition")  # no help=: not listed in `mhsm --help`
    part.add_argument("--data-dir", required=True, type=Path)
    part.add_argument("--id", required=True, type=int)
    part.set_defaults(run=run_partition)


def run_partition(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = DataDir(args.data_dir.resolve())
    config = PoolConfig.from_json(read_json(data.config))
    plan = ClusterPlan.from_json(read_json(data.cluster))
    settings = partition_settings(config, plan, args.id)

    async def ready() -> None:
        logging.getLogger(__name__).info("partition %d ready", args.id)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(Partition(data, config, settings).serve(ready))
    return 0


def partition_settings(config: PoolConfig, plan: ClusterPlan, n: int) -> PartitionSettings:
    """Partition `n`'s endpoints from the plan: its storage is every etcd member's client URL,
    its peers the other partitions' join ports, each at its own host or at this host's address.

    On one host the partitions share the pool port (SO_REUSEPORT). Across hosts a load balancer
    owns the pool port (`mhsm deploy init`), so a partition serves its own port only."""
    host = local_host(config.bind)
    ports = plan.partition(n)
    return PartitionSettings(
        partition_id=n,
        storage=plan.storage_url(host),
        own_port=ports.port,
        pool_port=None if plan.multi_host else config.port,
        join_port=ports.join_port,
        # An extended region's partitions join from their peers or from the primary's.
        peers=plan.peers(n, host) + (config.region.primary_join if config.region else ()),
        bootstrap_admin=n == 0 and config.region is None,  # its admin is the primary's
        # The partitions on this host (their count decides whether RSA goes to threads).
        pool_ports=tuple(p.port for p in plan.neighbours(n, host)),
    )


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: its TLS and sockets are C, asyncio's are Python, and a
    partition spends most of a small request in them (issue 9)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
