"""The supervisor of a three-partition pool: starts the etcd members and the partitions, probes
them every second, heals what died with no operator step, rolls maintenance restarts, and keeps
`pool.json` and `supervisor.json` current."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
from openmhsm.cluster.join import partition_common_name
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.plan import ClusterPlan, local_host
from openmhsm.cluster.tls import issue_certificate
from openmhsm.config import PoolConfig
from openmhsm.region.steward import RegionSteward

log = logging.getLogger(__name__)

TICK = 0.25
PROBE_EVERY = 1.0
PROBE_FAILURES = 3
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
HISTORY = 50


class PartitionProcess:
    """One partition child process and what the supervisor knows of its health."""

    def __init__(self, n: int) -> None:
        self.id = n
        self.proc: subprocess.Popen[bytes] | None = None
        self.failures = 0
        self.ready = False
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(
        self,
        data: DataDir,
        config: PoolConfig,
        plan: ClusterPlan,
        on_change: Callable[[Supervisor], None],
    ) -> None:
        self.data = data
        self.config = config
        self.plan = plan
        self.on_change = on_change
        host = local_host(config.bind)
        self.host = host
        self.etcd = LocalEtcdCluster(
            data.etcd, ports=plan.etcd_ports, token=plan.etcd_token, host=host
        )
        self.partitions = [PartitionProcess(p.id) for p in plan.partitions]
        self.region = RegionSteward(
            data, config, plan.storage_url(host), self.record, lambda: self.on_change(self)
        )
        self.events: list[dict[str, Any]] = []
        self.maintenance: dict[str, Any] = {"state": "idle"}
        self._stopping = False
        self._maintain_requested = False
        tls = ssl.create_default_context(cafile=str(data.ca_cert))
        self._probe = httpx.AsyncClient(verify=tls, timeout=2.0)

    # --- state ----------------------------------------------------------------------------

    def partition_url(self, n: int) -> str:
        return f"https://{self.host}:{self.plan.partition(n).port}"

    def record(self, what: str, **details: Any) -> None:
        event = {"time": time.time(), "event": what, **details}
        log.warning("%s %s", what, details)
        self.events = [*self.events[-(HISTORY - 1) :], event]
        self.save_state()

    def save_state(self) -> None:
        write_json_atomic(
            self.data.supervisor_state,
            {
                "pid": os.getpid(),
                "events": self.events,
                "maintenance": self.maintenance,
                "partitions": [
                    {"id": p.id, "pid": p.pid, "ready": p.ready} for p in self.partitions
                ],
                "etcd": [
                    {"name": m.name, "pid": m.pid, "running": m.running()}
                    for m in self.etcd.members()
                ],
            },
        )

    # --- partitions -----------------------------------------------------------------------

    def _issue_partition_cert(self, n: int) -> None:
        cert, key = self.data.partition_cert(n), self.data.partition_key(n)
        if cert.exists() and key.exists():
            return
        self.data.partition(n).mkdir(parents=True, exist_ok=True, mode=0o700)
        issue_certificate(
            self.data.ca_cert,
            self.data.ca_key,
            cert,
            key,
            names=[partition_common_name(self.config.name, n), self.host],
            server=True,
            client=True,
        )

    def spawn_partition(self, part: PartitionProcess) -> None:
        self._issue_partition_cert(part.id)
        self.data.logs.mkdir(parents=True, exist_ok=True)
        with (self.data.logs / f"partition-{part.id}.log").open("ab") as out:
            part.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "openmhsm.cli.main",
                    "partition",
                    "--data-dir",
                    str(self.data.root),
                    "--id",
                    str(part.id),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        part.ready = False
        part.failures = 0
        part.started_at = time.monotonic()
        self.on_change(self)
        self.save_state()

    async def probe(self, part: PartitionProcess) -> bool:
        try:
            response = await self._probe.get(f"{self.partition_url(part.id)}/readyz")
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, part: PartitionProcess, timeout: float = START_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and part.alive():
            if await self.probe(part):
                part.ready = True
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop_partition(self, part: PartitionProcess, sig: int = signal.SIGTERM) -> None:
        """Signal the partition and wait for it without blocking the event loop (SIGTERM lets it
        drain in-flight requests; SIGKILL after STOP_TIMEOUT)."""
        proc = part.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.etcd.start()
        await self.etcd.wait_healthy(timeout=START_TIMEOUT)
        # Before the partitions: an extended region's records must be in place, and an old
        # primary must learn that its peer took over before it takes a write.
        await self.region.start()
        for part in self.partitions:
            self.spawn_partition(part)
        ready = await asyncio.gather(*(self.wait_ready(p) for p in self.partitions))
        if not all(ready):
            raise RuntimeError("partitions did not become ready; see the logs folder")
        self.record("pool started")

    async def run(self) -> None:
        """Heal until asked to stop (SIGINT/SIGTERM); SIGUSR1 asks for rolling maintenance."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self.request_maintenance)
        loop.add_signal_handler(signal.SIGUSR2, self.region.request_promotion)
        next_probe = 0.0
        while not stop.is_set():
            await self.heal_dead()
            if self._maintain_requested:
                self._maintain_requested = False
                await self.maintain()
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + PROBE_EVERY
                await self.probe_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)

    def request_maintenance(self) -> None:
        self._maintain_requested = True
        self.maintenance = {"state": "requested", "requested": time.time()}
        self.save_state()

    async def heal_dead(self) -> None:
        for part in self.partitions:
            if not part.alive() and not self._stopping:
                code = part.proc.returncode if part.proc is not None else None
                started = time.monotonic()
                self.spawn_partition(part)
                ok = await self.wait_ready(part)
                self.record(
                    "partition healed" if ok else "partition restart failed",
                    partition=part.id,
                    exit_code=code,
                    seconds=round(time.monotonic() - started, 3),
                )
        for member in self.etcd.members():
            if member.running() or self._stopping:
                continue
            started = time.monotonic()
            if (member.data_dir / "member").is_dir():
                self.etcd.restart(member.name)
                what = "etcd member restarted"
            else:
                await self.etcd.replace(member.name)
                what = "etcd member replaced"
            self.on_change(self)
            self.record(what, member=member.name, seconds=round(time.monotonic() - started, 3))

    async def probe_all(self) -> None:
        for part in self.partitions:
            if not part.alive() or time.monotonic() - part.started_at < 2 * PROBE_EVERY:
                continue
            if await self.probe(part):
                part.failures, part.ready = 0, True
                continue
            part.failures += 1
            if part.failures >= PROBE_FAILURES:
                self.record("partition unresponsive; restarting", partition=part.id)
                await self.stop_partition(part, signal.SIGKILL)

    async def maintain(self) -> None:
        """Rolling restart, one partition at a time: never fewer than two serving."""
        self.maintenance = {"state": "running", "started": time.time()}
        self.save_state()
        for part in self.partitions:
            others = [p for p in self.partitions if p is not part]
            while not all([await self.probe(p) for p in others]):
                await asyncio.sleep(0.2)
            await self.stop_partition(part)  # SIGTERM: drain in-flight requests, then exit
            self.spawn_partition(part)
            await self.wait_ready(part)
        self.maintenance = {**self.maintenance, "state": "done", "finished": time.time()}
        self.record("maintenance done")

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self.stop_partition(p) for p in self.partitions))
        await self._probe.aclose()
        await self.region.stop()
        await asyncio.to_thread(self.etcd.stop)
        self.on_change(self)


def admin_credentials(data: DataDir) -> dict[str, str] | None:
    if not data.admin.exists():
        return None
    saved: dict[str, str] = read_json(data.admin)
    return saved
