"""A real three-partition pool for integration tests: `mhsm up` (pool mode, real etcd) in a temp
dir on a free port, the `mhsm` CLI against it, and a clean stop that leaves no process behind.

Stopping takes a while (the supervisor drains each partition in turn), and killing the `mhsm up`
process outright would orphan its partitions, so `stop()` waits for it, then checks by PID that
every partition and etcd member it ever listed is gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd  # type: ignore[import-untyped]
from azure.identity import ClientSecretCredential
from dev_pool import DevPool

START_TIMEOUT = 90.0
STOP_TIMEOUT = 90.0


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def mhsm(*args: str, timeout: float = 180.0) -> CliResult:
    """Run the `mhsm` command line in a child process."""
    done = subprocess.run(
        [sys.executable, "-m", "openmhsm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@dataclass
class PoolProcess(DevPool):
    """One `mhsm up` process in pool mode; `doc` is its pool.json as last read."""

    seen_pids: set[int] = field(default_factory=set)

    def start(self) -> PoolProcess:
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openmhsm.cli.main", "up", "--data-dir", str(self.data_dir),
             "--port", str(self.port), *self.extra_args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self.wait_for(lambda doc: doc.get("pid") == self.pid, START_TIMEOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def reload(self) -> dict[str, Any]:
        """Read pool.json again (keeping the last good copy while it is being replaced)."""
        try:
            doc: dict[str, Any] = json.loads((self.data_dir / "pool.json").read_text())
        except (OSError, ValueError):
            return self.doc
        self.doc = doc
        self.seen_pids.update(pid for pid in child_pids(doc) if pid)
        return doc

    def wait_for(self, condition: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mhsm up exited: {self.log_text()}")
            doc = self.reload()
            if doc and condition(doc) and len(doc["partitions"]) == 3:
                return doc
            time.sleep(0.1)
        raise RuntimeError(f"pool.json never satisfied the condition: {self.doc}")

    def credential_at(self, authority: str) -> ClientSecretCredential:
        """The admin's credential with its tokens issued at `authority`: a partition's own URL
        for a token to that partition (each accepts its own port and the pool port only)."""
        admin = self.doc["admin"]
        return ClientSecretCredential(
            self.doc["tenant_id"],
            admin["client_id"],
            admin["client_secret"],
            authority=authority,
            disable_instance_discovery=True,
            connection_verify=self.ca,
        )

    def partition_pids(self) -> dict[int, int]:
        return {p["id"]: p["pid"] for p in self.reload()["partitions"]}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM the `mhsm up` process and wait; then make sure (by PID) that no partition or
        etcd member of this pool outlived it."""
        assert self.proc is not None
        self.reload()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        leftovers = kill_leftovers(self.seen_pids, str(self.data_dir.resolve()))
        assert not leftovers, f"processes outlived the pool: {leftovers}"
        return self.proc.returncode


def child_pids(doc: dict[str, Any]) -> list[int | None]:
    return [p.get("pid") for p in doc.get("partitions", [])] + [
        m.get("pid") for m in doc.get("etcd", [])
    ]


def kill_leftovers(pids: Iterable[int], marker: str, grace: float = 5.0) -> list[int]:
    """SIGKILL each pid still running a command line that mentions `marker` (so a reused pid of
    an unrelated process is left alone) after `grace` seconds; the pids that were killed."""
    deadline = time.monotonic() + grace
    alive = [pid for pid in pids if runs(pid, marker)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if runs(pid, marker)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def runs(pid: int, marker: str) -> bool:
    """Whether `pid` is a live (not zombie) process whose command line contains `marker`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return marker.encode() in cmdline and "State:\tZ" not in status


def etcd_leaders(members: list[dict[str, Any]]) -> list[str | None]:
    """Each etcd member's answer (members as in pool.json): the name of the leader it reports,
    or None if it did not serve a linearizable read within two seconds."""

    async def ask(member: dict[str, Any]) -> str | None:
        host, port = member["client_url"].split("//")[1].rsplit(":", 1)
        try:
            async with aetcd.Client(host=host.strip("[]"), port=int(port), timeout=2) as client:
                await client.get(b"health")
                status = await client.status()
        except (aetcd.ClientError, OSError, TimeoutError):
            return None
        return None if status.leader is None else str(status.leader.name)

    async def ask_all() -> list[str | None]:
        return list(await asyncio.gather(*(ask(m) for m in members)))

    return asyncio.run(ask_all())
