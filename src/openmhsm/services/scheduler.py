"""The pool's scheduler: on the one partition that holds the leader lease, it rotates keys whose
rotation policy says so and purges deleted keys whose retention has ended.

Time is the services' clock (shifted by `mhsm up --clock-offset`). Every decision is made again
from storage before it is acted on; a rotation names the version it replaces (it does nothing if
another version came first) and carries a request id derived from it, so neither a manual rotate
nor a scheduler that took over from a dead one (with a cache a moment behind) leads to a second
rotation. A disabled key is never rotated (that would bring it back), nor is a version younger
than a day, whatever a stored policy says. While a full restore's fence is up, nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from openmhsm.errors import KeyNotFound, MhsmError
from openmhsm.services import records, rotation
from openmhsm.services.deleted import DeletedKeyService
from openmhsm.services.keys import KeyService
from openmhsm.services.leader import LeaderLease
from openmhsm.services.records import KeyVersion
from openmhsm.types import Clock

log = logging.getLogger(__name__)
TICK = 1.0
LEASE_KEY = "scheduler/leader"
MIN_AGE = 86400  # seconds: no version is rotated younger than this


def rotation_due(version: KeyVersion, policy: Mapping[str, Any], now: float) -> bool:
    """Whether a Rotate action of `policy` is due for the current `version` at `now`."""
    if not version.attributes.enabled or now - version.attributes.created < MIN_AGE:
        return False
    for action in policy.get("lifetimeActions") or []:
        if str((action.get("action") or {}).get("type", "")).lower() != "rotate":
            continue
        trigger = action.get("trigger") or {}
        after, before = trigger.get("timeAfterCreate"), trigger.get("timeBeforeExpiry")
        created, expires = version.attributes.created, version.attributes.exp
        if after is not None and created is not None:
            due = created + rotation.duration_seconds(after)
        elif before is not None and expires is not None:
            due = expires - rotation.duration_seconds(before)
        else:
            continue
        if now >= due:
            return True
    return False


class Scheduler:
    def __init__(
        self,
        keys: KeyService,
        deleted: DeletedKeyService,
        clock: Clock,
        lease: LeaderLease,
    ) -> None:
        self.keys = keys
        self.deleted = deleted
        self.cache = keys.cache
        self.clock = clock
        self.lease = lease
        self.rotated = 0
        self.purged = 0
        self.restoring: Callable[[], object] = lambda: None  # a full restore's id, when one runs
        # True in an extended region: its storage is a replica, rotation and purge are the
        # primary's to make, and it holds no lease until it is promoted.
        self.standby: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.lease.leading = False
                log.exception("a scheduler round failed; trying again")

    async def round(self) -> None:
        """Hold (or take) the lease and, while leading, run one round; in standby do neither."""
        if self.standby():
            self.lease.leading = False
        elif await self.lease.hold():
            await self.tick()

    async def tick(self) -> None:
        """One round: every due rotation, then every due purge. A key that fails is logged and
        left for the next round; the others go on."""
        if self.restoring():
            return
        now = self.clock.now()
        for name in self.cache.names():
            try:
                if self._due(name, now):
                    await self._rotate(name)
            except Exception:
                log.exception("the scheduled rotation of key %s failed", name)
        for name in self.cache.deleted_names():
            hit = self.cache.get(records.deleted_path(name))
            if hit is not None and hit[0].scheduled_purge_date <= now:
                await self._purge(name)

    def _due(self, name: str, now: float) -> bool:
        policy = self.cache.get(records.policy_path(name))
        pointer = self.cache.get(records.current_path(name))
        if policy is None or pointer is None:
            return False
        current = self.cache.get(records.version_path(name, pointer[0].version))
        return current is not None and rotation_due(current[0], policy[0], now)

    async def _rotate(self, name: str) -> None:
        await self.cache.read_through(name)  # decide again on what storage holds now
        if not self._due(name, self.clock.now()):
            return
        try:
            current = await self.keys.get(name)
            made = await self.keys.rotate(
                name, request_id=f"scheduler:rotate:{current.version}", replacing=current.version
            )
        except (KeyNotFound, MhsmError) as exc:
            log.warning("scheduled rotation of key %s failed: %s", name, exc)
            return
        if made.version != current.version:
            self.rotated += 1
            log.info("rotated key %s per its rotation policy (new version %s)", name, made.version)

    async def _purge(self, name: str) -> None:
        try:
            if await self.deleted.purge_expired(name):
                self.purged += 1
                log.info("purged deleted key %s: its retention period ended", name)
        except MhsmError as exc:
            log.warning("scheduled purge of key %s failed: %s", name, exc)
