"""A pool across three hosts, made on an administrator's machine (`mhsm deploy init`).

Each host runs one etcd member and one partition under systemd; a TCP load balancer (HAProxy)
owns the pool's address. This module writes, under one output folder:

- `host-<i>/`: everything host `i` needs, copied as is to its install dir: the partition's data
  dir (`config.json`, `cluster.json` with every process's host, `tls/` with the pool CA's
  certificate and this host's server certificate, `partitions/<i>/` with its partition
  certificate), `etcd.conf.yml`, and the units `openmhsm-etcd.service` and
  `openmhsm-partition.service`; host 0 also holds `admin.json`, the bootstrap administrator
  its partition creates on first start.
- `tls/ca.pem` and `tls/ca.key`: the pool CA. Its key stays on this machine: every certificate
  a host needs is issued here, and no partition of a deployed pool issues one.
- `haproxy/`: the front door's certificate and key, and the CA its backends chain to.
- `pool.json` (DESIGN §9): the clients' contract, with the administrator's credentials.

Secret files are 0600 and folders 0700. The pool starts NotActivated, as Azure's does: an
administrator activates it by downloading the security domain to wrapping keys they hold.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openmhsm.cluster import deploy_units as units
from openmhsm.cluster.deploy_units import DeployError, EtcdMemberSpec, checked_path
from openmhsm.cluster.join import partition_common_name
from openmhsm.cluster.layout import DataDir, write_json_atomic
from openmhsm.cluster.plan import ClusterPlan, PartitionPorts
from openmhsm.cluster.pool_file import pool_document, write_pool_document
from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.config import PoolConfig

HOSTS = 3
HOST_INDEX = "{i}"  # in --install-dir: replaced by the host's index
FRONTDOOR_PEM = "frontdoor.pem"
BACKENDS_CA = "backends-ca.pem"
# The front door serves clients on every address unless told otherwise.
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104  # nosec B104
_POOL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """What `mhsm deploy init` was asked for."""

    hosts: tuple[str, ...]  # one IP address per host
    hostnames: tuple[str, ...]  # the pool's names; the first is its URL's host
    name: str = "pool"
    port: int = 8443  # the front door's port: the pool's URL
    partition_port: int = 8444
    join_port: int = 8445
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    install_dir: str = "/var/lib/openmhsm"  # on each host; HOST_INDEX is replaced
    mhsm: str = "/usr/local/bin/mhsm"
    etcd: str = "/usr/bin/etcd"
    haproxy_dir: str = "/etc/haproxy/openmhsm"  # where the front door's files go on its host
    frontdoor_bind: str = ALL_ADDRESSES
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = field(default_factory=lambda: f"openmhsm-{uuid.uuid4().hex}")

    def check(self) -> None:
        """Raises DeployError if the hosts, names, ports or paths cannot make a pool."""
        if len(self.hosts) != HOSTS:
            raise DeployError(f"a pool spans exactly {HOSTS} hosts, not {len(self.hosts)}")
        for host in self.hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise DeployError(f"--host {host!r} is not an IP address") from None
        if len(set(self.hosts)) != HOSTS:
            raise DeployError("the hosts must be distinct")
        if not self.hostnames:
            raise DeployError("the pool needs a --hostname")
        if not _POOL_NAME.fullmatch(self.name):
            raise DeployError(f"pool name {self.name!r}: lower-case letters, digits and -")
        ports = [self.port, self.partition_port, self.join_port]
        ports += [self.etcd_client_port, self.etcd_peer_port]
        if not all(0 < p < 65536 for p in ports):
            raise DeployError("ports must be 1 to 65535")
        if len(set(ports[1:])) != len(ports) - 1:
            raise DeployError("the partition, join and etcd ports must differ")
        for i in range(HOSTS):
            checked_path(self.install(i), "the install dir")
        checked_path(self.mhsm, "the mhsm binary")
        checked_path(self.etcd, "the etcd binary")
        checked_path(self.haproxy_dir, "the HAProxy dir")

    def install(self, i: int) -> str:
        """Host `i`'s install dir (its partition's data dir)."""
        return self.install_dir.replace(HOST_INDEX, str(i)).rstrip("/") or "/"

    def plan(self) -> ClusterPlan:
        return ClusterPlan(
            partitions=tuple(
                PartitionPorts(i, self.partition_port, self.join_port, host)
                for i, host in enumerate(self.hosts)
            ),
            etcd_ports=((self.etcd_client_port, self.etcd_peer_port),) * HOSTS,
            etcd_token=self.token,
            etcd_hosts=self.hosts,
        )

    def members(self) -> tuple[EtcdMemberSpec, ...]:
        return tuple(
            EtcdMemberSpec(f"etcd{i}", host, self.etcd_client_port, self.etcd_peer_port)
            for i, host in enumerate(self.hosts)
        )

    def pool_config(self, host: str | None = None) -> PoolConfig:
        """The pool's config as the clients see it, or (with `host`) as host `host` runs it:
        bound to its own address. A host's config names every host's address too, so a token
        for one partition's own URL is good on all (as on one host, where they share names)."""
        return PoolConfig(
            name=self.name,
            tenant_id=self.tenant_id,
            port=self.port,
            bind=host or self.frontdoor_bind,
            hostnames=tuple(dict.fromkeys((*self.hostnames, *(self.hosts if host else ())))),
            storage="etcd",
            mode="pool",
            activation="manual",  # NotActivated until a security-domain download
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """What `write_deployment` wrote."""

    root: Path
    spec: DeploySpec

    def host_dir(self, i: int) -> Path:
        return self.root / f"host-{i}"

    @property
    def pool_json(self) -> Path:
        return self.root / "pool.json"

    @property
    def ca_cert(self) -> Path:
        return DataDir(self.root).ca_cert

    @property
    def frontdoor_pem(self) -> Path:
        return self.root / "haproxy" / FRONTDOOR_PEM

    @property
    def backends_ca(self) -> Path:
        return self.root / "haproxy" / BACKENDS_CA


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _write(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def write_deployment(spec: DeploySpec, out: Path) -> Deployment:
    """Write every file of the deployment under `out` (which must be empty or absent).

    Raises DeployError for a spec that cannot make a pool or an `out` that holds files."""
    spec.check()
    if out.exists() and any(out.iterdir()):
        raise DeployError(f"{out} is not empty; choose a new folder")
    _mkdir(out)
    deployment = Deployment(out.resolve(), spec)
    admin = DataDir(deployment.root)
    ca_cert, ca_key = ensure_pool_ca(admin.tls)
    credentials = {
        "client_id": str(uuid.uuid4()),
        "client_secret": secrets.token_urlsafe(32),
        "object_id": str(uuid.uuid4()),
    }
    for i in range(HOSTS):
        _write_host(deployment, i, ca_cert, ca_key, credentials)
    _write_front_door(deployment, ca_cert, ca_key)
    config = spec.pool_config()
    partitions = [
        {"id": i, "host": host, "url": f"https://{_netloc(host, spec.partition_port)}"}
        for i, host in enumerate(spec.hosts)
    ]
    members = [{"name": m.name, "client_url": m.client_url} for m in spec.members()]
    doc = pool_document(admin, config, credentials, None, partitions, members)
    doc["supervisor"] = "systemd"  # no `mhsm up` process: `mhsm status` asks the hosts only
    write_pool_document(admin, doc)
    return deployment


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_host(
    deployment: Deployment, i: int, ca_cert: Path, ca_key: Path, admin: dict[str, str]
) -> None:
    spec = deployment.spec
    host = spec.hosts[i]
    folder = deployment.host_dir(i)
    data = DataDir(folder)
    _mkdir(folder)
    _mkdir(data.tls)
    _mkdir(data.partition(i).parent)
    _mkdir(data.partition(i))
    config = spec.pool_config(host)
    write_json_atomic(data.config, config.to_json())
    write_json_atomic(data.cluster, spec.plan().to_json())
    if i == 0:  # partition 0 creates this principal on its first start
        write_json_atomic(data.admin, {**admin, "preset": True})
    _write(data.ca_cert, ca_cert.read_text(), 0o644)
    names = (*spec.pool_config().names, host)  # the pool's names and this host's address
    issue_certificate(ca_cert, ca_key, data.server_cert, data.server_key, names=names, server=True)
    issue_certificate(
        ca_cert,
        ca_key,
        data.partition_cert(i),
        data.partition_key(i),
        names=[partition_common_name(spec.name, i), host],
        server=True,
        client=True,
    )
    install = spec.install(i)
    members = spec.members()
    etcd_yml = units.etcd_config(members[i], members, spec.token, f"{install}/etcd")
    _write(folder / units.ETCD_CONFIG, etcd_yml, 0o644)
    etcd_unit = units.etcd_unit(spec.name, members[i].name, spec.etcd, f"{install}/etcd.conf.yml")
    _write(folder / units.ETCD_UNIT, etcd_unit, 0o644)
    partition = units.partition_unit(spec.name, i, spec.mhsm, install)
    _write(folder / units.PARTITION_UNIT, partition, 0o644)


def _write_front_door(deployment: Deployment, ca_cert: Path, ca_key: Path) -> None:
    """The front door's certificate for the pool's names, as HAProxy wants it (certificate,
    then key, in one 0600 file), and the CA its backends chain to."""
    folder = deployment.frontdoor_pem.parent
    _mkdir(folder)
    names: Sequence[str] = deployment.spec.pool_config().names
    cert, key = folder / ".frontdoor.crt", folder / ".frontdoor.key"
    try:
        issue_certificate(ca_cert, ca_key, cert, key, names=names, server=True)
        pem = cert.read_text() + key.read_text()
    finally:
        cert.unlink(missing_ok=True)
        key.unlink(missing_ok=True)
    deployment.frontdoor_pem.touch(mode=0o600)
    _write(deployment.frontdoor_pem, pem, 0o600)
    _write(deployment.backends_ca, ca_cert.read_text(), 0o644)
