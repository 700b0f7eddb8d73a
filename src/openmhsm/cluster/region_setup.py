"""Preparing an extended region's data dir from its primary's on the same machine (DESIGN §8).

The extended region is a pool of its own (its own etcd, ports, CA and server certificate) under
the primary's name and tenant. Its partition certificates are issued by the *primary's* CA, whose
certificate it keeps as `tls/join-ca.pem`: that is what lets its partitions fetch the domain
secrets from the primary's over the join protocol's mutual TLS. Nothing secret is copied but the
bootstrap administrator's credentials, which the replicated principal store already knows."""

from __future__ import annotations

import dataclasses
import shutil

from openmhsm.cluster.join import partition_common_name
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.plan import PARTITIONS, ClusterPlan, local_host
from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.config import PoolConfig, RegionConfig


class RegionSetupError(Exception):
    """The primary cannot be extended to this data dir (the message says why)."""


def region_of(primary: PoolConfig, plan: ClusterPlan) -> RegionConfig:
    """How an extended region reaches `primary`, whose ports are `plan`."""
    host = local_host(primary.bind)
    return RegionConfig(
        primary_url=primary.url,
        primary_etcd=tuple(plan.etcd_endpoints(host)),
        primary_join=tuple((host, p.join_port) for p in plan.partitions),
    )


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


def prepare_extended(primary: DataDir, extended: DataDir, port: int) -> PoolConfig:
    """Write the extended region's config, certificates and admin file into `extended`; return
    its config. Raises RegionSetupError (nothing written) if `extended` already holds a pool."""
    config = check_primary(primary)
    if extended.config.exists():
        raise RegionSetupError(f"{extended.root} already holds a pool")
    plan = ClusterPlan.from_json(read_json(primary.cluster))
    own = extended_config(config, region_of(config, plan), port)
    extended.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_pool_ca(extended.tls)
    shutil.copyfile(primary.ca_cert, extended.join_ca)
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
