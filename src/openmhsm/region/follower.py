"""The extended region's replication, run by its supervisor (DESIGN §8): a `Replicator` from the
primary's etcd into the region's own, started before the partitions (which find the pool's
records, `meta/domain` included, already there) and kept running across partition restarts.
The region steward publishes its lag to `region.json`, where the partitions' `/metrics` and
`mhsm status` read it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, Final

from openmhsm.cluster.layout import read_json
from openmhsm.region.replicator import Lag, Replicator
from openmhsm.storage.base import Storage
from openmhsm.storage.registry import open_storage

STALE_AFTER: Final = 10.0  # a lag report older than this (a dead supervisor) is not shown


def lag_document(lag: Lag, primary_url: str, now: float) -> dict[str, Any]:
    return {
        "role": "extended",
        "primary_url": primary_url,
        "applied_revision": lag.applied_revision,
        "source_revision": lag.source_revision,
        "lag_revisions": lag.revisions,
        "lag_seconds": round(lag.seconds, 3),
        "updated": now,
    }


def read_lag(path: Path, now: float) -> Lag | None:
    """The lag `path` reports, or None if it is missing, malformed, stale, or names none."""
    try:
        doc = read_json(path)
        if now - float(doc["updated"]) > STALE_AFTER:
            return None
        applied, source = int(doc["applied_revision"]), int(doc["source_revision"])
        return Lag(applied, source, source - applied, float(doc["lag_seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RegionFollower:
    """The replicator from the primary's storage into `own`, with its source connection."""

    def __init__(self, primary_storage: str, own: Storage, pool: str) -> None:
        self._source: Storage = open_storage(primary_storage)
        self.replicator = Replicator(self._source, own, f"/{pool}/")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.replicator.run(), name="replicator")

    async def wait_synced(self, timeout: float) -> None:
        """Wait until the replica holds a checkpointed source revision (after the first resync,
        or at once on a restart). Raises TimeoutError; RuntimeError if the replicator died."""
        deadline = time.monotonic() + timeout
        while self.replicator.lag().applied_revision == 0:
            if self._task is not None and self._task.done():
                raise RuntimeError("the replicator stopped; see the supervisor's log")
            if time.monotonic() > deadline:
                raise TimeoutError("the extended region did not catch up with the primary")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop replicating and close the source connection (the target is the caller's)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._source.close()
