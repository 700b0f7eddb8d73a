"""The replicator between two real etcd clusters (one member each): 500 transactions at ~50/s on
the source, the replicator killed and restarted mid-stream, the target's etcd down for a few
seconds; the target must end byte-exact. Prints the replication lag (source write acknowledged →
visible in the target's watch) per phase: `pytest -s` shows it. No timed assertions."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
from openmhsm.region.replicator import CHECKPOINT, LOCAL_PREFIXES, parse_checkpoint
from openmhsm.storage.base import Delete, Put, Storage, TxnOp
from openmhsm.storage.registry import open_storage

pytestmark = pytest.mark.integration
PREFIX = "/pool1/"
WRITES = 500
RATE = 50.0  # source transactions per second
KILL_REPLICATOR, RESTART_REPLICATOR = 150, 200  # write indexes: 1 s without a replicator
STOP_TARGET, START_TARGET = 300, 450  # 3 s without the target's etcd
PHASES = (
    (0, "steady"),
    (KILL_REPLICATOR, "replicator killed"),
    (RESTART_REPLICATOR, "replicator restarted"),
    (STOP_TARGET, "target etcd down"),
    (START_TARGET, "target etcd back"),
)
CONVERGE_TIMEOUT = 60.0

# The replicator as its own process, so that it can be killed by PID mid-stream.
REPLICATOR = """
import asyncio, logging, sys
from openmhsm.region.replicator import Replicator
from openmhsm.storage.registry import open_storage

async def main():
    source, target = open_storage(sys.argv[1]), open_storage(sys.argv[2])
    await Replicator(source, target, sys.argv[3]).run()

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
asyncio.run(main())
"""


class ReplicatorProcess:
    def __init__(self, source_url: str, target_url: str, log_path: Path) -> None:
        self.command = [sys.executable, "-c", REPLICATOR, source_url, target_url, PREFIX]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def started(root: Path) -> LocalEtcdCluster:
    cluster = LocalEtcdCluster(root, size=1)
    cluster.start()
    try:
        asyncio.run(cluster.wait_healthy(20))
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[tuple[LocalEtcdCluster, LocalEtcdCluster]]:
    primary = started(tmp_path / "primary")
    try:
        extended = started(tmp_path / "extended")
    except BaseException:
        primary.stop()
        raise
    yield primary, extended
    extended.stop()
    primary.stop()


def url(cluster: LocalEtcdCluster) -> str:
    return "etcd://" + ",".join(cluster.endpoints())


def write_ops(i: int) -> list[TxnOp]:
    """Write `i`: a new record (its lag is measured), sometimes a policy that replaces an older
    one, an overwritten setting and a region-local job record."""
    ops: list[TxnOp] = [Put(PREFIX + f"keys/k{i:03}/v1", b"\x01" + os.urandom(200))]
    if i % 5 == 0:
        ops.append(Put(PREFIX + f"keys/k{i:03}/@policy", os.urandom(80)))
        if i >= 10:
            ops.append(Delete(PREFIX + f"keys/k{i - 10:03}/@policy"))
    if i % 7 == 0:
        ops.append(Put(PREFIX + f"settings/s{i % 3}", os.urandom(60)))
    if i % 10 == 0:
        ops.append(Put(PREFIX + f"jobs/j{i:03}", b"region-local"))
    return ops


async def observe(target: Storage, revision: int, seen: dict[str, float]) -> None:
    """Note when each key first becomes visible in the target."""
    async for event in target.watch_from(PREFIX, revision):
        if event.kind == "put":
            seen.setdefault(event.key, time.monotonic())


async def state(store: Storage) -> dict[str, bytes]:
    """Every key under the pool prefix with its bytes."""
    found: dict[str, bytes] = {}
    after: str | None = None
    while page := await store.list_page(PREFIX, after, 500):
        found.update((e.key, e.value) for e in page)
        after = page[-1].key
    return found


def replicated(found: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in found.items() if not k[len(PREFIX) :].startswith(LOCAL_PREFIXES)}


async def resynced(target: Storage) -> None:
    """Wait for the replicator's first checkpoint in the target (its start-up resync)."""
    async with asyncio.timeout(CONVERGE_TIMEOUT):
        while await target.get(PREFIX + CHECKPOINT) is None:
            await asyncio.sleep(0.05)


async def converged(source: Storage, target: Storage) -> bool:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    expected = replicated(await state(source))
    while time.monotonic() < deadline:
        if replicated(await state(target)) == expected:
            return True
        await asyncio.sleep(0.2)
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def phase_of(i: int) -> str:
    return [name for start, name in PHASES if i >= start][-1]


def test_replica_converges_through_restarts_and_outages(
    regions: tuple[LocalEtcdCluster, LocalEtcdCluster], tmp_path: Path
) -> None:
    primary, extended = regions
    replicator = ReplicatorProcess(url(primary), url(extended), tmp_path / "replicator.log")
    acked: list[tuple[str, float]] = []  # (measured key, when the source acknowledged it)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        source, target = open_storage(url(primary)), open_storage(url(extended))
        observer = asyncio.create_task(observe(target, await target.revision() + 1, seen))
        replicator.start()
        try:
            await resynced(target)  # the steady phase starts with the replicator following
            start = time.monotonic()
            for i in range(WRITES):
                await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
                if i == KILL_REPLICATOR:
                    replicator.kill()
                elif i == RESTART_REPLICATOR:
                    replicator.start()
                elif i == STOP_TARGET:
                    extended.kill("etcd0", signal.SIGKILL)
                elif i == START_TARGET:
                    extended.restart("etcd0")
                ops = write_ops(i)
                last = await source.txn(ops)
                acked.append((ops[0].key, time.monotonic()))
            assert await converged(source, target), replicator.log_tail()
            found = await state(target)
            assert replicated(found) == replicated(await state(source))  # byte-exact
            local = [k for k in found if k[len(PREFIX) :].startswith(LOCAL_PREFIXES)]
            assert local == [PREFIX + CHECKPOINT]
            assert parse_checkpoint(found[PREFIX + CHECKPOINT]) >= last
        finally:
            replicator.kill()
            observer.cancel()
            await asyncio.wait([observer])
            await source.close()
            await target.close()

    asyncio.run(scenario())
    report(acked, seen)


def report(acked: list[tuple[str, float]], seen: dict[str, float]) -> None:
    lags: dict[str, list[float]] = {name: [] for _, name in PHASES}
    for i, (key, at) in enumerate(acked):
        if key in seen:
            lags[phase_of(i)].append(max(0.0, seen[key] - at))
    count = sum(len(values) for values in lags.values())
    print(f"\nreplication lag, source ack → seen in the target's watch ({count} of {WRITES}):")
    for name, values in lags.items():
        if values:
            print(
                f"  {name:22} n={len(values):3}  p50 {percentile(values, 0.5) * 1e3:8.1f} ms"
                f"  p99 {percentile(values, 0.99) * 1e3:8.1f} ms"
                f"  max {max(values) * 1e3:8.1f} ms"
            )
