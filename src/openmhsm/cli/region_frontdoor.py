"""`mhsm region frontdoor-config`: an HAProxy configuration for one front door over a pool and its
extended region (DESIGN §8), for clients that cannot carry the routing policy of
`openmhsm.client`.

The front door serves the API on one port. Its backends are the partitions' own ports: the
primary region's as normal servers, the extended region's as `backup` servers, used when no
primary partition passes its health check (`GET /readyz` over TLS, every second). A connection
that fails marks its server down at once and the request goes to another server, so a region
that dies costs clients a few refused attempts, not the health checks' detection time. Reads and
crypto then go on in the extended region; writes are the primary's (the extended region forwards
them while it can).

TLS is terminated at the front door rather than passed through (`mode tcp`). Clients keep their
connections to HAProxy, and HAProxy picks a live partition for each request: when a region
dies, a client's keep-alive connection survives and its next request simply goes elsewhere,
where with passthrough every connection to a dead partition breaks under the client (and
azure-core sends no POST again on its own). Termination also lets HAProxy check backends at the
HTTP level, and gives clients one certificate for the front door's own address, from the pool's
CA, which they trust already. The price: HAProxy holds a key issued here from the primary's CA
(so this command runs where that CA's key is) and sees plaintext, which keeps it inside the
pool's trust boundary, on the pool's host. It verifies each backend against the regions' CAs.
HAProxy passes the client's `Host` on, so the challenge names the front door and tokens are
issued for it; every region accepts those on any port.

Files written: `tls/frontdoor.pem` (certificate and key, mode 0600) and
`tls/frontdoor-backends.pem` (both regions' CAs) in the primary's data dir, and the
configuration on stdout or in `--out`. Run it with `haproxy -f FILE`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.cluster.plan import ClusterPlan, local_host
from openmhsm.cluster.tls import issue_certificate
from openmhsm.config import PoolConfig

FRONTDOOR_PEM = "frontdoor.pem"
BACKENDS_CA = "frontdoor-backends.pem"
HEALTH_PATH = "/readyz"
CHECK_INTERVAL = "1s"
VERIFY_NAME = "localhost"  # every server certificate of a pool lists it (config.LOCAL_NAMES)


class FrontDoorError(Exception):
    """The front door cannot be configured for these data dirs (the message says why)."""


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    host: str
    port: int
    backup: bool


@dataclass(frozen=True, slots=True)
class FrontDoor:
    """What the HAProxy configuration says; `haproxy_config` renders it."""

    pool: str
    url: str  # what clients call
    bind: str
    port: int
    certificate: Path  # the front door's certificate and key, one PEM file
    backends_ca: Path  # the CAs the backends' certificates chain to
    check_host: str  # the Host header of health checks
    backends: tuple[Backend, ...]
    made_by: str = "mhsm region frontdoor-config"  # the command named in the header


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `frontdoor-config` to the `mhsm region` actions."""
    front = actions.add_parser(
        "frontdoor-config",
        help="print an HAProxy configuration: one port over both regions, with health checks",
    )
    front.add_argument("--primary", required=True, type=Path, help="the primary pool's data dir")
    front.add_argument(
        "--extended", required=True, type=Path, help="the extended region's data dir"
    )
    front.add_argument("--port", required=True, type=int, help="the front door's HTTPS port")
    front.add_argument("--out", type=Path, help="write the configuration here (default: stdout)")
    front.set_defaults(run=run_frontdoor_config)


def run_frontdoor_config(args: argparse.Namespace) -> int:
    primary, extended = DataDir(args.primary.resolve()), DataDir(args.extended.resolve())
    try:
        door = prepare_front_door(primary, extended, args.port)
    except FrontDoorError as exc:
        print(f"mhsm region frontdoor-config: {exc}", file=sys.stderr)
        return 1
    text = haproxy_config(door)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    print(
        f"front door for pool '{door.pool}': {door.url}, trusting {primary.ca_cert}; "
        f"run it with `haproxy -f {args.out or 'FILE'}`",
        file=sys.stderr,
    )
    return 0


def _config(data: DataDir, role: str) -> tuple[PoolConfig, ClusterPlan]:
    if not data.config.exists() or not data.cluster.exists():
        raise FrontDoorError(f"no three-partition pool in {data.root} (the {role})")
    return PoolConfig.from_json(read_json(data.config)), ClusterPlan.from_json(
        read_json(data.cluster)
    )


def prepare_front_door(primary: DataDir, extended: DataDir, port: int) -> FrontDoor:
    """Check that `extended` is an extended region of `primary`, write the front door's
    certificate and the backends' CA bundle into the primary's `tls/`, and describe the front
    door. Raises FrontDoorError (nothing written) if the data dirs do not fit."""
    config, plan = _config(primary, "primary")
    region_config, region_plan = _config(extended, "extended region")
    if config.region is not None:
        raise FrontDoorError(f"{primary.root} is itself an extended region")
    if region_config.region is None or region_config.region.primary_url != config.url:
        raise FrontDoorError(f"{extended.root} is not an extended region of {config.url}")
    if not primary.ca_key.exists():
        raise FrontDoorError(f"the primary's CA key {primary.ca_key} is not on this machine")
    if not 0 < port < 65536:
        raise FrontDoorError(f"{port} is not a TCP port")
    if "'" in str(primary.root):
        raise FrontDoorError("HAProxy cannot name a file under a path with a single quote")
    certificate = primary.tls / FRONTDOOR_PEM
    _issue_front_door_certificate(primary, config, certificate)
    backends_ca = primary.tls / BACKENDS_CA
    cas = dict.fromkeys([primary.ca_cert.read_bytes(), extended.ca_cert.read_bytes()])
    backends_ca.write_bytes(b"".join(cas))  # one CA if the regions share it
    backends = [
        Backend(f"{role}-{p.id}", local_host(c.bind), p.port, backup=role == "extended")
        for role, c, pl in (("primary", config, plan), ("extended", region_config, region_plan))
        for p in pl.partitions
    ]
    return FrontDoor(
        pool=config.name,
        url=dataclasses.replace(config, port=port).url,
        bind=config.bind,
        port=port,
        certificate=certificate,
        backends_ca=backends_ca,
        check_host=config.host,
        backends=tuple(backends),
    )


def _issue_front_door_certificate(primary: DataDir, config: PoolConfig, out: Path) -> None:
    """A server certificate for every name of the pool, from its CA, as HAProxy wants it: one
    PEM file with the certificate and then the key (mode 0600)."""
    with tempfile.TemporaryDirectory(dir=primary.tls) as scratch:
        cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        issue_certificate(
            primary.ca_cert, primary.ca_key, cert, key, names=config.names, server=True
        )
        tmp = out.with_name(f".{out.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.read_bytes() + key.read_bytes())
        os.replace(tmp, out)


def _word(path: Path) -> str:
    """`path` as one HAProxy word: quoted (single quotes: no `$` expansion) if need be."""
    text = str(path)
    return text if all(c.isalnum() or c in "/._-+@:" for c in text) else f"'{text}'"


def _address(host: str, port: int) -> str:
    return f"{host}:{port}"  # HAProxy takes the port after the last colon, IPv6 included


def haproxy_config(door: FrontDoor) -> str:
    """The HAProxy (2.4 or later) configuration text for `door`."""
    lines = [f"# OpenMHSM front door for pool '{door.pool}', made by `{door.made_by}`."]
    if any(b.backup for b in door.backends):
        lines += [
            "# Primary partitions serve; the extended region's are backups, used when no primary",
            "# partition passes its health check.",
        ]
    lines += [
        "global",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "    ssl-default-server-options ssl-min-ver TLSv1.2",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout check 2s",
        "    # A refused connection is tried again on another server: it never reached one.",
        "    retries 6",
        "    option redispatch 1",
        "    retry-on conn-failure",
        "",
        "frontend mhsm",
        f"    bind {_address(door.bind, door.port)} ssl crt {_word(door.certificate)} "
        "alpn http/1.1",
        "    default_backend partitions",
        "",
        "backend partitions",
        "    balance roundrobin",
        "    option allbackups",
        "    option httpchk",
        f"    http-check send meth GET uri {HEALTH_PATH} ver HTTP/1.1 hdr Host {door.check_host}",
        "    http-check expect status 200",
        f"    default-server ssl verify required ca-file {_word(door.backends_ca)} "
        f"verifyhost {VERIFY_NAME} check inter {CHECK_INTERVAL} fall 2 rise 2 "
        "observe layer4 error-limit 1 on-error mark-down",
    ]
    for backend in door.backends:
        backup = " backup" if backend.backup else ""
        lines.append(f"    server {backend.name} {_address(backend.host, backend.port)}{backup}")
    return "\n".join(lines) + "\n"
