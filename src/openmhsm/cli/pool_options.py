"""The flags of `mhsm up`: declared, applied to the pool's saved config.json, and turned back
into a command line (for `--detach`, which starts the pool again in the background)."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.config import DEFAULT_POOL_NAME, PoolConfig


def add_up_arguments(up: argparse.ArgumentParser) -> None:
    """Every flag of `mhsm up`."""
    up.add_argument("--data-dir", required=True, type=Path)
    up.add_argument("--port", type=int, default=None, help="HTTPS port (default 8443)")
    up.add_argument(
        "--hostname",
        action="append",
        default=None,
        help="a DNS name the pool is reached by (repeatable)",
    )
    up.add_argument("--bind", default=None, help="address to listen on (default 127.0.0.1)")
    up.add_argument("--name", default=None, help="pool name (default: local)")
    up.add_argument(
        "--dev",
        action="store_true",
        help="embedded mode: one partition on SQLite (default: 3 partitions on etcd)",
    )
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--retention-days", type=int, default=None)
    up.add_argument("--purge-protection", action="store_true")
    up.add_argument(
        "--trusted-issuer",
        action="append",
        default=None,
        metavar="URL",
        help="accept tokens of this OpenID Connect issuer too (repeatable)",
    )
    up.add_argument(
        "--trusted-issuer-ca",
        default=None,
        metavar="FILE",
        help="CA bundle for reaching the trusted issuers (default: the system's)",
    )
    up.add_argument(
        "--backup-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="allow file:// backup targets only under DIR (repeatable; default: any directory)",
    )
    up.add_argument(
        "--attestation-issuer",
        action="append",
        default=None,
        metavar="URL",
        help="trust this attestation service's tokens for secure key release (repeatable)",
    )
    up.add_argument(
        "--clock-offset",
        type=float,
        default=None,
        metavar="SECONDS",
        help="shift the pool's clock by SECONDS (rotation, expiry and purge follow it)",
    )
    start = up.add_mutually_exclusive_group()
    start.add_argument(
        "--no-activate",
        action="store_true",
        help="stay NotActivated until an administrator downloads the security "
        "domain (Azure's behaviour)",
    )
    start.add_argument(
        "--recovery",
        action="store_true",
        help="start a new pool in recovery mode: it waits for a security-domain "
        "upload (disaster recovery)",
    )


def config_of(data: DataDir, args: argparse.Namespace) -> PoolConfig:
    """The saved pool config with this start's flags applied, or a new one."""
    if data.config.exists():
        saved: dict[str, Any] = read_json(data.config)
    else:
        saved = {
            "name": args.name or DEFAULT_POOL_NAME,
            "tenant_id": str(uuid.uuid4()),
            "port": 8443,
            "mode": "dev" if args.dev else "pool",
            "storage": f"sqlite:///{data.sqlite.resolve()}" if args.dev else "etcd",
        }
        if args.retention_days is not None:
            saved["retention_days"] = args.retention_days
        saved["purge_protection"] = bool(args.purge_protection)
        saved["activation"] = (
            "recovery" if args.recovery else "manual" if args.no_activate else "auto"
        )
    if args.port is not None:
        saved["port"] = args.port
    if args.hostname is not None:
        saved["hostnames"] = args.hostname
    if args.bind is not None:
        saved["bind"] = args.bind
    if args.trusted_issuer is not None:
        saved["trusted_issuers"] = args.trusted_issuer
    if args.trusted_issuer_ca is not None:
        saved["trusted_issuer_ca"] = str(Path(args.trusted_issuer_ca).resolve())
    if args.backup_dir is not None:
        saved["backup_dirs"] = [str(Path(d).resolve()) for d in args.backup_dir]
    if args.attestation_issuer is not None:
        saved["attestation_issuers"] = args.attestation_issuer
    if args.clock_offset is not None:
        saved["clock_offset"] = args.clock_offset
    if args.purge_protection:
        saved["purge_protection"] = True  # irreversible once set
    config = PoolConfig.from_json(saved)
    write_json_atomic(data.config, config.to_json())
    return config


def argv_of(args: argparse.Namespace) -> list[str]:
    argv = ["up", "--data-dir", str(args.data_dir)]
    if args.dev:
        argv.append("--dev")
    for flag in ("port", "bind", "name", "retention_days"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for host in args.hostname or []:
        argv += ["--hostname", host]
    for issuer in args.trusted_issuer or []:
        argv += ["--trusted-issuer", issuer]
    if args.trusted_issuer_ca:
        argv += ["--trusted-issuer-ca", args.trusted_issuer_ca]
    for directory in args.backup_dir or []:
        argv += ["--backup-dir", directory]
    for issuer in args.attestation_issuer or []:
        argv += ["--attestation-issuer", issuer]
    if args.clock_offset is not None:
        argv += ["--clock-offset", str(args.clock_offset)]
    if args.purge_protection:
        argv.append("--purge-protection")
    if args.no_activate:
        argv.append("--no-activate")
    if args.recovery:
        argv.append("--recovery")
    return argv
