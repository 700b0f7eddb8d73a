"""`mhsm up`, `mhsm down`, `mhsm env`: start, stop and use a local pool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from openmhsm.auth.challenge import resource_for_host
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.partition import Partition
from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.config import PoolConfig
from openmhsm.services.principals import identity_header

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="start a local pool")
    up.add_argument("--data-dir", required=True, type=Path)
    up.add_argument("--port", type=int, default=None, help="HTTPS port (default 8443)")
    up.add_argument("--hostname", action="append", default=None,
                    help="a DNS name the pool is reached by (repeatable)")
    up.add_argument("--bind", default=None, help="address to listen on (default 127.0.0.1)")
    up.add_argument("--name", default=None, help="pool name (default: local)")
    up.add_argument("--dev", action="store_true",
                    help="embedded mode: one partition on SQLite")
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--retention-days", type=int, default=None)
    up.add_argument("--purge-protection", action="store_true")
    up.set_defaults(run=run_up)

    down = commands.add_parser("down", help="stop a pool started with `mhsm up`")
    down.add_argument("--data-dir", required=True, type=Path)
    down.set_defaults(run=run_down)

    env = commands.add_parser("env", help="print the variables that make an unmodified app work")
    env.add_argument("--data-dir", required=True, type=Path)
    env.set_defaults(run=run_env)


def _config(data: DataDir, args: argparse.Namespace) -> PoolConfig:
    """The saved pool config with this start's flags applied, or a new one."""
    if data.config.exists():
        saved: dict[str, Any] = read_json(data.config)
    else:
        saved = {"name": args.name or "local", "tenant_id": str(uuid.uuid4()), "port": 8443,
                 "storage": f"sqlite:///{data.sqlite.resolve()}"}
        if args.retention_days is not None:
            saved["retention_days"] = args.retention_days
        saved["purge_protection"] = bool(args.purge_protection)
    if args.port is not None:
        saved["port"] = args.port
    if args.hostname is not None:
        saved["hostnames"] = args.hostname
    if args.bind is not None:
        saved["bind"] = args.bind
    if args.purge_protection:
        saved["purge_protection"] = True  # irreversible once set
    config = PoolConfig.from_json(saved)
    write_json_atomic(data.config, config.to_json())
    return config


def pool_document(data: DataDir, config: PoolConfig, partition: Partition, pid: int | None
                  ) -> dict[str, Any]:
    """The `pool.json` contract (DESIGN §9)."""
    admin = partition.admin
    assert admin is not None
    host = config.host
    host_port = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    return {
        "name": config.name,
        "url": config.url,
        "ca_cert": str(data.ca_cert.resolve()),
        "tenant_id": config.tenant_id,
        "authority": config.url,
        "resource": resource_for_host(host_port),
        "identity_endpoint": f"{config.url}/msi/token",
        "admin": {"client_id": admin.client_id, "client_secret": admin.client_secret},
        "mode": "dev",
        "pid": pid,
        "partitions": [{"id": partition.partition_id, "pid": pid, "url": config.url}],
        "etcd": [],
    }


def run_up(args: argparse.Namespace) -> int:
    if not args.dev:
        print("mhsm up: only --dev (one partition on SQLite) is available in this version; "
              "the three-partition etcd pool is not built yet.", file=sys.stderr)
        return 2
    if args.detach:
        return _detach(args)
    data = DataDir(args.data_dir.resolve())
    data.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = (data.root / ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"mhsm up: a pool is already running on {data.root}", file=sys.stderr)
        return 1
    config = _config(data, args)
    ensure_pool_ca(data.tls)
    issue_certificate(data.ca_cert, data.ca_key, data.server_cert, data.server_key,
                      names=config.names, server=True)
    partition = Partition(data, config)

    async def ready() -> None:
        write_json_atomic(data.pool_json, pool_document(data, config, partition, os.getpid()))
        print(f"OpenMHSM dev pool '{config.name}' serving at {config.url}", flush=True)
        print(f"  pool.json: {data.pool_json}", flush=True)
        print("  DEV MODE: one partition on SQLite; the domain root is sealed locally under "
              f"{data.partition(0)}", flush=True)

    try:
        asyncio.run(partition.serve(ready))
    finally:
        if partition.admin is not None:
            write_json_atomic(data.pool_json, pool_document(data, config, partition, None))
        lock.close()
    return 0


def _detach(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    data.logs.mkdir(parents=True, exist_ok=True)
    argv = _argv_of(args)
    previous = data.pool_json.stat().st_mtime_ns if data.pool_json.exists() else 0
    log = (data.logs / "mhsm.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "openmhsm.cli.main", *argv],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"mhsm up: the pool exited ({proc.returncode}); see {data.logs / 'mhsm.log'}",
                  file=sys.stderr)
            return 1
        if data.pool_json.exists() and data.pool_json.stat().st_mtime_ns != previous:
            doc = read_json(data.pool_json)
            if doc.get("pid") == proc.pid:
                print(f"OpenMHSM pool serving at {doc['url']} (pid {proc.pid})")
                return 0
        time.sleep(0.05)
    proc.terminate()
    print("mhsm up: the pool did not start in time", file=sys.stderr)
    return 1


def _argv_of(args: argparse.Namespace) -> list[str]:
    argv = ["up", "--dev", "--data-dir", str(args.data_dir)]
    for flag in ("port", "bind", "name", "retention_days"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for host in args.hostname or []:
        argv += ["--hostname", host]
    if args.purge_protection:
        argv.append("--purge-protection")
    return argv


def _is_ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"openmhsm" in cmdline or b"mhsm" in cmdline


def run_down(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    if not data.pool_json.exists():
        print(f"mhsm down: no pool.json in {data.root}", file=sys.stderr)
        return 1
    pid = read_json(data.pool_json).get("pid")
    if not isinstance(pid, int) or not _is_ours(pid):
        print("mhsm down: the pool is not running")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _is_ours(pid):
        time.sleep(0.05)
    if _is_ours(pid):
        print(f"mhsm down: pid {pid} did not stop in {STOP_TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    print("pool stopped")
    return 0


def env_lines(doc: dict[str, Any]) -> list[str]:
    admin = doc["admin"]
    values = {
        "MHSM_URL": doc["url"],
        "REQUESTS_CA_BUNDLE": doc["ca_cert"],
        "SSL_CERT_FILE": doc["ca_cert"],
        "IDENTITY_ENDPOINT": doc["identity_endpoint"],
        "IDENTITY_HEADER": identity_header(admin["client_id"], admin["client_secret"]),
        # `adfs` is how azure-identity names a self-hosted issuer: no instance discovery at
        # login.microsoftonline.com, and no tenant mismatch with the challenge (DESIGN §9).
        "AZURE_TENANT_ID": "adfs",
        "AZURE_CLIENT_ID": admin["client_id"],
        "AZURE_CLIENT_SECRET": admin["client_secret"],
        "AZURE_AUTHORITY_HOST": doc["authority"],
    }
    return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]


def run_env(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    if not data.pool_json.exists():
        print(f"mhsm env: no pool.json in {data.root}; run `mhsm up` first", file=sys.stderr)
        return 1
    print("\n".join(env_lines(read_json(data.pool_json))))
    return 0
