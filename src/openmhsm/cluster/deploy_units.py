"""The text of the per-host files of a pool across hosts (`mhsm deploy init`): etcd's config file
for a three-member static cluster, and the systemd units that run the member and the partition.

systemd's `Restart=always` is the per-host heal: it does for a host what the supervisor of
`mhsm up` does on one host (restart a dead process on its own data). Values are checked, not
escaped: a path that systemd or YAML would read differently is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from openmhsm.cluster.etcd_cluster import MAX_REQUEST_BYTES, MAX_TXN_OPS

ETCD_UNIT = "openmhsm-etcd.service"
PARTITION_UNIT = "openmhsm-partition.service"
ETCD_CONFIG = "etcd.conf.yml"
SERVICE_USER = "openmhsm"
# Characters a path may hold: systemd would expand `%` and `$`, split on spaces, and read quotes
# and backslashes; YAML would read `:` followed by a space, `#` and quotes.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+@-]*")


class DeployError(ValueError):
    """The deployment cannot be made as asked (the message says why)."""


def checked_path(path: str, what: str) -> str:
    """`path` if it is absolute and safe to write unquoted into a unit and a YAML file.
    Raises DeployError."""
    if not _SAFE_PATH.fullmatch(path):
        raise DeployError(
            f"{what} {path!r} must be an absolute path of letters, digits and / . _ + @ -"
        )
    return path


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True, slots=True)
class EtcdMemberSpec:
    """One member of the static cluster: its name, host and ports."""

    name: str
    host: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return _url(self.host, self.client_port)

    @property
    def peer_url(self) -> str:
        return _url(self.host, self.peer_port)


def etcd_config(
    member: EtcdMemberSpec, members: Sequence[EtcdMemberSpec], token: str, data_dir: str
) -> str:
    """etcd's YAML config file (`etcd --config-file`) for `member` of a new static cluster.

    The same tuning as the members `mhsm up` runs (`LocalEtcdCluster`), across hosts: pre-vote
    (a member back from a cut link does not disrupt the leader), larger transactions (one key
    with all its versions restores in one), periodic compaction. Peer and client traffic is
    plain HTTP: etcd TLS between hosts is not configured here (docs/deploy-three-hosts.md)."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    settings: list[tuple[str, str]] = [
        ("name", member.name),
        ("data-dir", checked_path(data_dir, "the etcd data dir")),
        ("listen-client-urls", member.client_url),
        ("advertise-client-urls", member.client_url),
        ("listen-peer-urls", member.peer_url),
        ("initial-advertise-peer-urls", member.peer_url),
        ("initial-cluster", initial),
        ("initial-cluster-token", token),
        # "new" is read only on the first start; later starts use the member's own data.
        ("initial-cluster-state", "new"),
        ("heartbeat-interval", "100"),
        ("election-timeout", "1000"),
        ("pre-vote", "true"),
        ("quota-backend-bytes", str(1 << 30)),
        ("auto-compaction-mode", "periodic"),
        ("auto-compaction-retention", "1h"),
        ("max-txn-ops", str(MAX_TXN_OPS)),
        ("max-request-bytes", str(MAX_REQUEST_BYTES)),
        ("logger", "zap"),
        ("log-outputs", "[stderr]"),
    ]
    lines = [f"# etcd member {member.name} of an OpenMHSM pool, made by `mhsm deploy init`."]
    lines += [f"{key}: {value}" for key, value in settings]
    return "\n".join(lines) + "\n"


def _unit(description: str, after: Sequence[str], service: Sequence[str]) -> str:
    requires = " ".join(["network-online.target", *after])
    lines = [
        "# Made by `mhsm deploy init`. Restart=always restarts a dead process on its own data:",
        "# the per-host heal.",
        "[Unit]",
        f"Description={description}",
        f"After={requires}",
        f"Wants={requires}",
        "",
        "[Service]",
        f"User={SERVICE_USER}",
        f"Group={SERVICE_USER}",
        *service,
        "Restart=always",
        "RestartSec=1s",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=full",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def etcd_unit(pool: str, member: str, etcd_binary: str, config_file: str) -> str:
    """The unit of one etcd member: `etcd --config-file FILE`, ready (Type=notify) once the
    cluster has a leader."""
    binary = checked_path(etcd_binary, "the etcd binary")
    config = checked_path(config_file, "the etcd config file")
    return _unit(
        f"OpenMHSM pool {pool}: etcd member {member}",
        (),
        [
            "Type=notify",
            "TimeoutStartSec=300",  # the first start waits for a quorum of hosts
            f"ExecStart={binary} --config-file {config}",
            "LimitNOFILE=65536",
        ],
    )


def partition_unit(pool: str, n: int, mhsm_binary: str, data_dir: str) -> str:
    """The unit of partition `n`: `mhsm partition --data-dir DIR --id N`. SIGTERM drains its
    in-flight requests (up to ten seconds) before it exits."""
    binary = checked_path(mhsm_binary, "the mhsm binary")
    data = checked_path(data_dir, "the install dir")
    return _unit(
        f"OpenMHSM pool {pool}: partition {n}",
        (ETCD_UNIT,),
        [
            "Type=exec",
            f"ExecStart={binary} partition --data-dir {data} --id {n}",
            "Environment=PYTHONUNBUFFERED=1",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=30",
        ],
    )
