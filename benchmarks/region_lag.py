"""`python -m benchmarks region`: replication lag between a pool's two regions on loopback.

Two one-member etcd clusters stand for the primary and the extended region. A `Replicator` in this
process follows the first and applies to the second; a writer puts a record of the size of a
sealed key version on the source at `BENCH_REGION_RATE` writes/s (default 50) for
`BENCH_REGION_SECONDS` (default 10), and a watch on the target notes when each record becomes
visible there. The lag, source acknowledgment → seen in the target, is printed as p50/p99 against
a baseline measured in the same run, just before: one put + get round trip on the target etcd
(the least a replicated write costs beyond the source's own commit: one target transaction, then
the watch delivery). The replicator's own view (`Replicator.lag()`, sampled at every write) is
printed too.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from pathlib import Path

from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
from openmhsm.region.replicator import Replicator
from openmhsm.storage.base import Storage
from openmhsm.storage.registry import open_storage

PREFIX = "/bench/"
RATE = float(os.environ.get("BENCH_REGION_RATE", "50"))
SECONDS = float(os.environ.get("BENCH_REGION_SECONDS", "10"))
RECORD_BYTES = 400  # a sealed EC key version is a few hundred bytes
BASELINE_ROUNDS = 200
WARM_UP = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


async def round_trips(target: Storage) -> list[float]:
    """Seconds per put + get of one record on the target, `BASELINE_ROUNDS` times."""
    times = []
    for i in range(BASELINE_ROUNDS):
        started = time.monotonic()
        await target.put_if(f"/baseline/{i % 10}", os.urandom(RECORD_BYTES))
        await target.get(f"/baseline/{i % 10}")
        times.append(time.monotonic() - started)
    return times


async def observe(target: Storage, revision: int, seen: dict[str, float]) -> None:
    async for event in target.watch_from(PREFIX, revision):
        if event.kind == "put":
            seen.setdefault(event.key, time.monotonic())


async def measure(source: Storage, target: Storage) -> None:
    baseline = await round_trips(target)
    seen: dict[str, float] = {}
    observer = asyncio.create_task(observe(target, await target.revision() + 1, seen))
    replicator = Replicator(source, target, PREFIX)
    follower = asyncio.create_task(replicator.run())
    acked: dict[str, float] = {}
    behind: list[tuple[int, float]] = []
    try:
        for i in range(WARM_UP):  # channels open, code paths warm: not measured
            await source.put_if(PREFIX + f"warm-up/{i}", b"x")
        while PREFIX + f"warm-up/{WARM_UP - 1}" not in seen:
            await asyncio.sleep(0.01)
        writes = int(RATE * SECONDS)
        start = time.monotonic()
        for i in range(writes):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            key = PREFIX + f"keys/k{i:05}/v1"
            await source.put_if(key, b"\x01" + os.urandom(RECORD_BYTES - 1))
            acked[key] = time.monotonic()
            lag = replicator.lag()
            behind.append((lag.revisions, lag.seconds))
        deadline = time.monotonic() + 10
        while any(key not in seen for key in acked) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await replicator.close()
        await asyncio.wait([follower])
        observer.cancel()
        await asyncio.wait([observer])
    lags = [seen[key] - at for key, at in acked.items() if key in seen]
    report(baseline, lags, len(acked), behind)


def report(
    baseline: list[float], lags: list[float], writes: int, behind: list[tuple[int, float]]
) -> None:
    ms = 1e3
    base50, base99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    lag50, lag99 = percentile(lags, 0.5), percentile(lags, 0.99)
    print(
        f"\nRegion replication lag on loopback: {writes} writes of {RECORD_BYTES} B at "
        f"{RATE:.0f}/s, one-member etcd per region, {os.cpu_count()} cores"
    )
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(
        f"{'baseline: target put + get':34} {base50 * ms:8.2f} {base99 * ms:8.2f} "
        f"{max(baseline) * ms:8.2f}"
    )
    print(
        f"{'lag: source ack -> seen in target':34} {lag50 * ms:8.2f} {lag99 * ms:8.2f} "
        f"{max(lags) * ms:8.2f}   ({len(lags)} of {writes} seen; "
        f"p50 {lag50 / base50:.1f}x baseline)"
    )
    revisions = max(r for r, _ in behind)
    seconds = max(s for _, s in behind)
    print(
        f"replicator's own view at each write: at most {revisions} revisions and "
        f"{seconds * ms:.2f} ms behind"
    )


def start_region(root: Path) -> LocalEtcdCluster:
    cluster = LocalEtcdCluster(root, size=1)
    cluster.start()
    return cluster


async def between(primary: LocalEtcdCluster, extended: LocalEtcdCluster) -> None:
    await primary.wait_healthy(20)
    await extended.wait_healthy(20)
    source = open_storage("etcd://" + ",".join(primary.endpoints()))
    target = open_storage("etcd://" + ",".join(extended.endpoints()))
    try:
        await measure(source, target)
    finally:
        await source.close()
        await target.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        primary = start_region(Path(tmp) / "primary")
        extended = start_region(Path(tmp) / "extended")
        try:
            asyncio.run(between(primary, extended))
        finally:
            extended.stop()
            primary.stop()


if __name__ == "__main__":
    main()
