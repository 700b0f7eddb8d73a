"""Preparing an extended region's data dir from its primary's on the same machine (DESIGN §8).

The extended region is a pool of its own (its own etcd, ports and server certificate) under the
primary's name and tenant, and under the primary's CA: one pool, one CA, so a client trusts
either region, each region verifies the other when it forwards a write, and the partition
certificates let the new region's partitions fetch the domain secrets from the primary's over
the join protocol's mutual TLS (`tls/join-ca.pem` names that CA for the join). Besides the CA
key, only the bootstrap administrator's credentials are copied, which the replicated principal
store already knows; the domain secrets never are.

Each region's link (`region/link.py`) names the other: `link_primary` stores the primary's
before the extended region starts, so the primary already trusts the new region's tokens
when the first write is forwarded to it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from openmhsm.cluster.join import partition_common_name
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.plan import PARTITIONS, ClusterPlan, load_or_create_plan, local_host
from openmhsm.cluster.tls import issue_certificate
from openmhsm.config import PoolConfig, RegionConfig
from openmhsm.region.link import LINK, Peer, RegionLink, read_link, write_link
from openmhsm.storage.registry import open_storage


class RegionSetupError(Exception):
    """The primary cannot be extended to this data dir (the message says why)."""


def peer_of(config: PoolConfig, plan: ClusterPlan) -> Peer:
    """How the other region reaches the pool of `config`, whose ports are `plan`."""
    host = local_host(config.bind)
    return Peer(
        url=config.url,
        etcd=tuple(plan.etcd_endpoints(host)),
        join=tuple((host, p.join_port) for p in plan.partitions),
    )


def region_of(primary: PoolConfig, plan: ClusterPlan, failover_after: float) -> RegionConfig:
    """How an extended region reaches `primary`, whose ports are `plan`."""
    peer = peer_of(primary, plan)
    return RegionConfig(primary_url=peer.url, primary_etcd=peer.etcd, primary_join=peer.join,
                        failover_after=failover_after)  # fmt: skip


def extended_config(primary: PoolConfig, region: RegionConfig, port: int) -> PoolConfig:
    """The extended region's config: the primary's name, tenant and policies on its own port."""
    return dataclasses.replace(primary, port=port, storage="etcd", mode="pool", region=region)


def check_primary(primary: DataDir) -> PoolConfig:
    """The primary's config. Raises RegionSetupError unless `primary` is a three-partition
    pool (not itself an extended region) with its CA key here."""
    if not primary.config.exists() or not primary.cluster.exists():
        raise RegionSetupError(f"{primary.root} holds no three-partition pool")
    config = PoolConfig.from_json(read_json(primary.config))
    if config.mode != "pool":
        raise RegionSetupError("only a three-partition pool (not --dev) can be extended")
    if config.region is not None:
        raise RegionSetupError(f"{primary.root} is itself an extended region")
    if not primary.ca_key.exists():
        raise RegionSetupError(f"the primary's CA key {primary.ca_key} is not on this machine")
    return config


def prepare_extended(
    primary: DataDir, extended: DataDir, port: int, failover_after: float = 30.0
) -> PoolConfig:
    """Write the extended region's config, ports, certificates and admin file into `extended`;
    return its config. Raises RegionSetupError (nothing written) if `extended` already holds a
    pool."""
    config = check_primary(primary)
    if extended.config.exists():
        raise RegionSetupError(f"{extended.root} already holds a pool")
    plan = ClusterPlan.from_json(read_json(primary.cluster))
    own = extended_config(config, region_of(config, plan, failover_after), port)
    extended.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    extended.tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    _copy_private(primary.ca_key, extended.ca_key)
    shutil.copyfile(primary.ca_cert, extended.ca_cert)  # last: its presence means "CA complete"
    shutil.copyfile(primary.ca_cert, extended.join_ca)
    load_or_create_plan(extended, own.bind)
    host = local_host(own.bind)
    for n in range(PARTITIONS):
        extended.partition(n).mkdir(parents=True, exist_ok=True, mode=0o700)
        issue_certificate(
            primary.ca_cert,
            primary.ca_key,
            extended.partition_cert(n),
            extended.partition_key(n),
            names=[partition_common_name(own.name, n), host],
            server=True,
            client=True,
        )
    if primary.admin.exists():
        write_json_atomic(extended.admin, read_json(primary.admin))
    write_json_atomic(extended.config, own.to_json())  # last: its presence means "prepared"
    return own


def _copy_private(source: Path, target: Path) -> None:
    target.write_bytes(b"")
    target.chmod(0o600)
    target.write_bytes(source.read_bytes())


async def link_primary(primary: DataDir, extended: DataDir) -> RegionLink:
    """Store the primary's region link, naming the prepared `extended` region as its peer, at
    the term the primary has (1 for a first extension). Raises StorageUnavailable."""
    config = PoolConfig.from_json(read_json(primary.config))
    plan = ClusterPlan.from_json(read_json(primary.cluster))
    own = PoolConfig.from_json(read_json(extended.config))
    peer = peer_of(own, ClusterPlan.from_json(read_json(extended.cluster)))
    prefix = f"/{config.name}/"
    storage = open_storage(plan.storage_url(local_host(config.bind)))
    try:
        current = await read_link(storage, prefix)
        term = 1 if current is None else current.term
        after = own.region.failover_after if own.region else 30.0
        link = RegionLink(role="primary", term=term, url=config.url, peer=peer,
                          failover_after=after)  # fmt: skip
        await write_link(storage, prefix, link)
        return link
    finally:
        await storage.close()


async def unlink_peer(extended: DataDir) -> bool:
    """Remove the link of the region that `extended` follows, if it still names `extended` as
    its peer (so the primary stops trusting the removed region's tokens). Returns whether it
    did. Raises StorageUnavailable."""
    own = PoolConfig.from_json(read_json(extended.config))
    if own.region is None:
        return False
    prefix = f"/{own.name}/"
    storage = open_storage(own.region.primary_storage)
    try:
        link = await read_link(storage, prefix)
        if link is None or link.peer.url != own.url:
            return False
        await storage.delete_if(prefix + LINK)
        return True
    finally:
        await storage.close()
