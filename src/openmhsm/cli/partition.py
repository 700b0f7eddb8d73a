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
    host = local_host(config.bind)
    ports = plan.partition(args.id)
    settings = PartitionSettings(
        partition_id=args.id,
        storage=plan.storage_url(host),
        own_port=ports.port,
        pool_port=config.port,
        join_port=ports.join_port,
        # An extended region's partitions join from their peers or from the primary's.
        peers=plan.peers(args.id, host) + (config.region.primary_join if config.region else ()),
        bootstrap_admin=args.id == 0 and config.region is None,  # its admin is the primary's
        pool_ports=tuple(p.port for p in plan.partitions),
    )

    async def ready() -> None:
        logging.getLogger(__name__).info("partition %d ready", args.id)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(Partition(data, config, settings).serve(ready))
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: its TLS and sockets are C, asyncio's are Python, and a
    partition spends most of a small request in them (issue 9)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
