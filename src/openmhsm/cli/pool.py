"""`mhsm up`, `mhsm down`, `mhsm env`: start, stop and use a local pool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from openmhsm.cli.activation import activate_locally, grant_development_roles
from openmhsm.cli.pool_lifecycle import start_refusal
from openmhsm.cli.pool_options import add_up_arguments, argv_of, config_of
from openmhsm.cli.status import is_mhsm_process
from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.cluster.partition import Partition, PartitionSettings
from openmhsm.cluster.plan import load_or_create_plan
from openmhsm.cluster.pool_file import pool_document, write_pool_document
from openmhsm.cluster.supervisor import Supervisor, admin_credentials
from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.config import PoolConfig
from openmhsm.services.principals import identity_header

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="start a local pool")
    add_up_arguments(up)
    up.set_defaults(run=run_up)

    down = commands.add_parser("down", help="stop a pool started with `mhsm up`")
    down.add_argument("--data-dir", required=True, type=Path)
    down.set_defaults(run=run_down)

    env = commands.add_parser("env", help="print the variables that make an unmodified app work")
    env.add_argument("--data-dir", required=True, type=Path)
    env.set_defaults(run=run_env)


def _lock(data: DataDir) -> Any:
    """Hold the data dir's lock for the life of this process, or None if another holds it."""
    lock = (data.root / ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _prepare(args: argparse.Namespace) -> tuple[DataDir, PoolConfig, Any] | int:
    data = DataDir(args.data_dir.resolve())
    data.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock(data)
    if lock is None:
        print(f"mhsm up: a pool is already running on {data.root}", file=sys.stderr)
        return 1
    refusal = start_refusal(args, sweep=False)  # again under the lock: a delete may have won
    if refusal is not None:
        print(f"mhsm up: {refusal}", file=sys.stderr)
        lock.close()
        return 1
    config = config_of(data, args)
    if config.mode != ("dev" if args.dev else "pool"):
        print(
            f"mhsm up: {data.root} holds a {config.mode} pool; start it the same way "
            f"({'with' if config.mode == 'dev' else 'without'} --dev)",
            file=sys.stderr,
        )
        lock.close()
        return 2
    ensure_pool_ca(data.tls)
    issue_certificate(
        data.ca_cert,
        data.ca_key,
        data.server_cert,
        data.server_key,
        names=config.names,
        server=True,
    )
    return data, config, lock


def run_up(args: argparse.Namespace) -> int:
    refusal = start_refusal(args, sweep=True)  # a deleted pool, or a deleted pool's name
    if refusal is not None:
        print(f"mhsm up: {refusal}", file=sys.stderr)
        return 1
    if args.detach:
        return _detach(args)
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    data, config, lock = prepared
    try:
        return _run_dev(data, config) if args.dev else _run_pool(data, config)
    finally:
        lock.close()


def _run_dev(data: DataDir, config: PoolConfig) -> int:
    settings = PartitionSettings(partition_id=0, storage=config.storage, own_port=config.port)
    partition = Partition(data, config, settings)

    def document(pid: int | None) -> dict[str, Any]:
        admin = partition.admin
        assert admin is not None
        parts = [{"id": 0, "pid": pid, "url": config.url}]
        creds = {"client_id": admin.client_id, "client_secret": admin.client_secret}
        return pool_document(data, config, creds, pid, parts)

    async def ready() -> None:
        await asyncio.to_thread(_activate_if_needed, data, config, document(os.getpid()))
        write_pool_document(data, document(os.getpid()))
        print(f"OpenMHSM dev pool '{config.name}' serving at {config.url}", flush=True)
        print(f"  pool.json: {data.pool_json}", flush=True)
        print(
            "  DEV MODE: one partition on SQLite; the domain root is sealed locally under "
            f"{data.partition(0)}",
            flush=True,
        )

    try:
        asyncio.run(partition.serve(ready))
    finally:
        if partition.admin is not None:
            write_pool_document(data, document(None))
    return 0


def _run_pool(data: DataDir, config: PoolConfig) -> int:
    plan = load_or_create_plan(data, config.bind)
    if not shutil.which("etcd"):
        print(
            "mhsm up: etcd is not installed (Debian: apt-get install etcd-server)", file=sys.stderr
        )
        return 2

    def document(sup: Supervisor, pid: int | None) -> dict[str, Any]:
        admin = admin_credentials(data) or dict.fromkeys(("client_id", "client_secret"), "")
        parts = [
            {"id": p.id, "pid": p.pid if pid else None, "url": sup.partition_url(p.id)}
            for p in sup.partitions
        ]
        members = [
            {"name": m.name, "pid": m.pid if pid else None, "client_url": m.client_url}
            for m in sup.etcd.members()
        ]
        return pool_document(data, config, admin, pid, parts, members, sup.region.regions())

    started = False

    def on_change(sup: Supervisor) -> None:
        if started:
            write_pool_document(data, document(sup, os.getpid()))

    supervisor = Supervisor(data, config, plan, on_change)

    async def main() -> None:
        nonlocal started
        try:
            await supervisor.start()
            await asyncio.to_thread(
                _activate_if_needed, data, config, document(supervisor, os.getpid())
            )
            started = True
            on_change(supervisor)
            print(
                f"OpenMHSM pool '{config.name}' serving at {config.url} "
                f"(3 partitions, 3 etcd members)",
                flush=True,
            )
            print(f"  pool.json: {data.pool_json}", flush=True)
            await supervisor.run()
        finally:
            await supervisor.stop()
            if started:
                write_pool_document(data, document(supervisor, None))

    asyncio.run(main())
    return 0


def _activate_if_needed(data: DataDir, config: PoolConfig, doc: dict[str, Any]) -> None:
    """`mhsm up` without --no-activate or --recovery activates a new pool itself, loudly, and
    gives its bootstrap administrator Crypto Officer and Crypto User at `/` besides the Managed
    HSM Administrator role every pool's first administrator holds."""
    if config.region is not None:  # an extended region holds its primary's active domain
        return
    if config.activation != "auto" or (data.root / "security-domain" / "sd.json").exists():
        return
    folder = activate_locally(doc, data.root)
    grant_development_roles(doc, read_json(data.admin)["object_id"])
    print(
        f"SECURITY DOMAIN: this pool was activated with three wrapping keys made here, in "
        f"{folder} (quorum 2). Fine for development; for anything else start with "
        "--no-activate and download the security domain to keys you hold elsewhere.",
        flush=True,
    )


def _detach(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    data.logs.mkdir(parents=True, exist_ok=True)
    argv = argv_of(args)
    previous = data.pool_json.stat().st_mtime_ns if data.pool_json.exists() else 0
    log = (data.logs / "mhsm.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "openmhsm.cli.main", *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(
                f"mhsm up: the pool exited ({proc.returncode}); see {data.logs / 'mhsm.log'}",
                file=sys.stderr,
            )
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


def run_down(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    if not data.pool_json.exists():
        print(f"mhsm down: no pool.json in {data.root}", file=sys.stderr)
        return 1
    pid = read_json(data.pool_json).get("pid")
    if not isinstance(pid, int) or not is_mhsm_process(pid):
        print("mhsm down: the pool is not running")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and is_mhsm_process(pid):
        time.sleep(0.05)
    if is_mhsm_process(pid):
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
