"""The extended region's side of replication, run by its supervisor (DESIGN §8): a `Replicator`
from the primary's etcd into the region's own, started before the partitions (which find the
pool's records, `meta/domain` included, already there) and kept running across partition
restarts. Every second it publishes the lag to `region.json`, where the partitions' `/metrics`
and `mhsm status` read it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Final

from openmhsm.cluster.layout import read_json, write_json_atomic
from openmhsm.region.replicator import Lag, Replicator
from openmhsm.storage.base import Storage
from openmhsm.storage.registry import open_storage

log = logging.getLogger(__name__)

PUBLISH_EVERY: Final = 1.0
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
    """The lag `path` reports, or None if it is missing, malformed or stale."""
    try:
        doc = read_json(path)
        if now - float(doc["updated"]) > STALE_AFTER:
            return None
        applied, source = int(doc["applied_revision"]), int(doc["source_revision"])
        return Lag(applied, source, source - applied, float(doc["lag_seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RegionFollower:
    """Owns the two storage connections and the replicator task."""

    def __init__(self, primary_storage: str, own_storage: str, pool: str, primary_url: str,
                 state: Path) -> None:  # fmt: skip
        self._source: Storage = open_storage(primary_storage)
        self._target: Storage = open_storage(own_storage)
        self.replicator = Replicator(self._source, self._target, f"/{pool}/")
        self._primary_url = primary_url
        self._state = state
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.replicator.run()),
            asyncio.create_task(self._publish()),
        ]

    async def wait_synced(self, timeout: float) -> None:
        """Wait until the replica holds a checkpointed source revision (after the first resync,
        or at once on a restart). Raises TimeoutError; RuntimeError if the replicator died."""
        deadline = time.monotonic() + timeout
        while self.replicator.lag().applied_revision == 0:
            if any(task.done() for task in self._tasks):
                raise RuntimeError("the replicator stopped; see the supervisor's log")
            if time.monotonic() > deadline:
                raise TimeoutError("the extended region did not catch up with the primary")
            await asyncio.sleep(0.05)

    def publish(self) -> None:
        document = lag_document(self.replicator.lag(), self._primary_url, time.time())
        write_json_atomic(self._state, document)

    async def _publish(self) -> None:
        while True:
            try:
                self.publish()
            except OSError as exc:
                log.warning("cannot write the replication lag: %s", exc)
            await asyncio.sleep(PUBLISH_EVERY)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._source.close()
        await self._target.close()
        self._state.unlink(missing_ok=True)
