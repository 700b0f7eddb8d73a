"""`mhsm deploy init`: the files of a pool across three hosts (docs/deploy-three-hosts.md).

The per-host files, the pool CA and `pool.json` come from `cluster.deploy`; the front door's
HAProxy configuration is the one `mhsm region frontdoor-config` renders (TLS terminated at the
front door, `/readyz` checks, a refused connection tried on another partition), over the three
hosts' partitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openmhsm.cli.region_frontdoor import Backend, FrontDoor, haproxy_config
from openmhsm.cluster.deploy import (
    ALL_ADDRESSES,
    BACKENDS_CA,
    FRONTDOOR_PEM,
    HOST_INDEX,
    Deployment,
    DeploySpec,
    write_deployment,
)
from openmhsm.cluster.deploy_units import DeployError

HAPROXY_CFG = "haproxy.cfg"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser("deploy", help="make the files of a pool across three hosts")
    sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")
    init = sub.add_parser(
        "init", help="write each host's files, the HAProxy front door and pool.json"
    )
    init.add_argument(
        "--host", action="append", required=True, metavar="IP", help="a host's address (3 times)"
    )
    init.add_argument(
        "--hostname",
        action="append",
        required=True,
        help="a DNS name of the pool (repeatable; the first is its URL's host)",
    )
    init.add_argument("--out", required=True, type=Path, help="a new folder for the files")
    init.add_argument("--name", default="pool", help="pool name (default: pool)")
    init.add_argument("--port", type=int, default=8443, help="the front door's port (8443)")
    init.add_argument("--partition-port", type=int, default=8444)
    init.add_argument("--join-port", type=int, default=8445)
    init.add_argument("--etcd-client-port", type=int, default=2379)
    init.add_argument("--etcd-peer-port", type=int, default=2380)
    init.add_argument(
        "--install-dir",
        default="/var/lib/openmhsm",
        help=f"where each host keeps its files ({HOST_INDEX} becomes the host's index)",
    )
    init.add_argument("--mhsm", default="/opt/openmhsm/bin/mhsm", help="mhsm on the hosts")
    init.add_argument("--etcd", default="/usr/bin/etcd", help="etcd on the hosts")
    init.add_argument(
        "--haproxy-dir",
        default="/etc/haproxy/openmhsm",
        help="where the front door's certificate and CA go on its host",
    )
    init.add_argument(
        "--frontdoor-bind",
        default=ALL_ADDRESSES,
        help="the address HAProxy listens on (default: all)",
    )
    init.set_defaults(run=run_init)


def spec_of(args: argparse.Namespace) -> DeploySpec:
    return DeploySpec(
        hosts=tuple(args.host),
        hostnames=tuple(args.hostname),
        name=args.name,
        port=args.port,
        partition_port=args.partition_port,
        join_port=args.join_port,
        etcd_client_port=args.etcd_client_port,
        etcd_peer_port=args.etcd_peer_port,
        install_dir=args.install_dir,
        mhsm=args.mhsm,
        etcd=args.etcd,
        haproxy_dir=args.haproxy_dir,
        frontdoor_bind=args.frontdoor_bind,
    )


def front_door(deployment: Deployment) -> FrontDoor:
    """The front door over the deployment's partitions, naming its files where they go on the
    front door's host."""
    spec = deployment.spec
    config = spec.pool_config()
    return FrontDoor(
        pool=spec.name,
        url=config.url,
        bind=spec.frontdoor_bind,
        port=spec.port,
        certificate=Path(spec.haproxy_dir) / FRONTDOOR_PEM,
        backends_ca=Path(spec.haproxy_dir) / BACKENDS_CA,
        check_host=config.host,
        backends=tuple(
            Backend(f"host-{i}", host, spec.partition_port, backup=False)
            for i, host in enumerate(spec.hosts)
        ),
        made_by="mhsm deploy init",
    )


def run_init(args: argparse.Namespace) -> int:
    try:
        deployment = write_deployment(spec_of(args), args.out)
    except DeployError as exc:
        print(f"mhsm deploy init: {exc}", file=sys.stderr)
        return 2
    cfg = deployment.root / HAPROXY_CFG
    cfg.write_text(haproxy_config(front_door(deployment)))
    cfg.chmod(0o644)
    spec = deployment.spec
    print(f"pool '{spec.name}' for {', '.join(spec.hosts)} in {deployment.root}:")
    for i, host in enumerate(spec.hosts):
        print(f"  host-{i}/  -> {host}:{spec.install(i)}")
    print(f"  haproxy.cfg, haproxy/ -> the front door ({spec.haproxy_dir})")
    print("  pool.json, tls/ca.key -> stay here (the CA key issues every certificate)")
    print(f"then activate it: mhsm security-domain download --data-dir {deployment.root} ...")
    return 0
