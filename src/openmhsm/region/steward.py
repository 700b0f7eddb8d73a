"""The supervisor's part in a two-region pool (DESIGN §8): keep the region link, replicate while
extended, take over when the primary is lost, and step down when the peer took over.

- **Extended**: a `RegionFollower` replicates the primary. Every `TICK` the steward asks the
  primary's storage for its revision; after `failover_after` seconds without an answer (0: never
  by itself) it promotes the region, as `mhsm region promote` does at once (SIGUSR2 to the
  supervisor): stop replicating, drop the checkpoint, store the link as primary at term + 1
  with the source revision it had applied. The partitions see the link within a poll and take
  writes; nothing restarts.
- **Primary**: every `TICK` the steward reads the peer's link. A peer that is primary at a
  higher term took over while this region was away (or was promoted by command): this region
  stores its link as extended first (its partitions forward writes from the next poll on),
  counts what it committed after the peer's promotion revision (`lost_writes`), reports it in
  its log, its link and `region.json`, then resyncs from the new primary and follows it.
- At start, a primary checks its peer before the partitions start, so an old primary that comes
  back after a failover never takes a write.
- `config.json` follows every change, so a restarted supervisor starts in the right role.

Every round publishes `region.json`: role, term, peer, lag (while extended), the promotion and
the lost writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.config import PoolConfig, RegionConfig
from openmhsm.errors import StorageUnavailable
from openmhsm.region import role
from openmhsm.region.follower import RegionFollower, lag_document
from openmhsm.region.link import LINK, Peer, RegionLink, read_link, write_link
from openmhsm.region.lost_writes import unreplicated
from openmhsm.region.replicator import CHECKPOINT, LOCAL_PREFIXES, parse_checkpoint
from openmhsm.storage.base import Delete, Put, Storage
from openmhsm.storage.registry import open_storage

log = logging.getLogger(__name__)

TICK: Final = 1.0
PEER_TIMEOUT: Final = 2.0
SYNC_TIMEOUT: Final = 60.0

Record = Callable[..., None]


class RegionSteward:
    """One per supervisor of a three-partition pool; idle while the pool has no region link."""

    def __init__(
        self,
        data: DataDir,
        config: PoolConfig,
        own_storage: str,
        record: Record,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """`record` logs an event of the supervisor; `on_change` runs when the link changes
        (pool.json lists the regions)."""
        self.data = data
        self._on_change = on_change
        self.config = config
        self.prefix = f"/{config.name}/"
        self._own: Storage = open_storage(own_storage)
        self._record = record
        self.link: RegionLink | None = None
        self.follower: RegionFollower | None = None
        self._peer: tuple[str, Storage] | None = None
        self._last_seen = time.monotonic()
        self._promotion_requested = False
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Settle the role before the partitions start: store an extended region's first link,
        step down if the peer took over meanwhile, and catch up while extended."""
        self.link = await self._stored_link()
        region = self.config.region
        if self.link is None and region is not None:
            peer = Peer(region.primary_url, region.primary_etcd, region.primary_join)
            self.link = RegionLink(role="extended", term=region.term, url=self.config.url,
                                   peer=peer, failover_after=region.failover_after)  # fmt: skip
            await write_link(self._own, self.prefix, self.link)
        if self.link is not None and self.link.role == "primary":
            await self._check_peer()
        if self.link is not None and self.link.role == "extended" and self.follower is None:
            await self._follow()
        self.publish()
        self._task = asyncio.create_task(self._run(), name="region-steward")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
        if self._peer is not None:
            await self._peer[1].close()
        await self._own.close()
        self.data.region_state.unlink(missing_ok=True)

    def request_promotion(self) -> None:
        """Promote at the next round (SIGUSR2: `mhsm region promote`)."""
        self._promotion_requested = True

    def regions(self) -> list[str]:
        """The pool's region URLs, this one first (for pool.json)."""
        return [] if self.link is None else [self.link.url, self.link.peer.url]

    # --- rounds ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a region round failed; trying again")
            self.publish()

    async def round(self) -> None:
        """Adopt a link written by `mhsm region add`, then act on the role."""
        before = self.link
        with contextlib.suppress(StorageUnavailable):
            stored = await self._stored_link()
            if stored is not None:
                self.link = stored
            elif self.link is not None and self.link.role == "primary":
                self.link = None  # `mhsm region remove` took the extended region away
                self.data.region_state.unlink(missing_ok=True)
        if self.link != before:
            self._on_change()
        link = self.link
        if link is None:
            return
        if link.role == "extended":
            if self._promotion_requested:
                await self.promote("by command")
            elif await self._peer_answers():
                self._last_seen = time.monotonic()
            elif 0 < link.failover_after <= time.monotonic() - self._last_seen:
                await self.promote(f"the primary was lost for {link.failover_after:g} s")
        else:
            self._promotion_requested = False
            await self._check_peer()

    async def promote(self, why: str) -> None:
        """Make this extended region the primary, one term up (see the module docstring)."""
        link = self.link
        if link is None or link.role != "extended":
            return
        self._promotion_requested = False
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
        applied = await self._checkpoint()
        promoted = link.promote(applied, time.time())
        await self._own.txn(
            [Put(self.prefix + LINK, promoted.encode()), Delete(self.prefix + CHECKPOINT)]
        )
        self.link = promoted
        self._save_config(None)
        self._on_change()
        self._record("region promoted", why=why, term=promoted.term, from_revision=applied)

    async def step_down(self, peer: RegionLink) -> None:
        """Follow `peer`, the primary at a higher term (see the module docstring)."""
        link = self.link
        if link is None or link.role != "primary":
            return
        pending = link.step_down(peer.term, {"count": None, "names": []}, time.time())
        await write_link(self._own, self.prefix, pending)
        self.link = pending
        await asyncio.sleep(2 * role.POLL + 0.5)  # every partition forwards; writes in flight end
        promoted = peer.promoted or {}
        after = int(promoted.get("from_revision", 0)) if promoted.get("term") == peer.term else 0
        lost = await unreplicated(self._own, self.prefix, after, self._replicated)
        stepped = pending.with_lost_writes(lost)
        await self._own.txn(
            [Put(self.prefix + LINK, stepped.encode()), Delete(self.prefix + CHECKPOINT)]
        )
        self.link = stepped
        self._save_config(stepped)
        self._on_change()
        shown = ", ".join(lost["names"][:20]) or "none"
        log.warning(
            "this region stepped down: %s took over at term %d; %s write(s) committed here after "
            "revision %d were never replicated and are lost: %s",
            peer.url, peer.term, lost["count"], after, shown,
        )  # fmt: skip
        self._record("region stepped down", term=peer.term, lost_writes=lost["count"],
                     lost_names=lost["names"][:20])  # fmt: skip
        await self._follow()

    # --- helpers -----------------------------------------------------------------------------

    def _replicated(self, key: str) -> bool:
        return key.startswith(self.prefix) and not key[len(self.prefix) :].startswith(
            LOCAL_PREFIXES
        )

    async def _stored_link(self) -> RegionLink | None:
        try:
            return await read_link(self._own, self.prefix)
        except ValueError as exc:
            log.error("the stored region link is malformed: %s", exc)
            return self.link

    async def _checkpoint(self) -> int:
        entry = await self._own.get(self.prefix + CHECKPOINT)
        try:
            return 0 if entry is None else parse_checkpoint(entry.value)
        except ValueError:
            return 0

    def _peer_storage(self) -> Storage:
        assert self.link is not None
        url = self.link.peer.storage
        if self._peer is None or self._peer[0] != url:
            self._peer = (url, open_storage(url))
        return self._peer[1]

    async def _peer_answers(self) -> bool:
        try:
            async with asyncio.timeout(PEER_TIMEOUT):
                await self._peer_storage().revision()
        except (StorageUnavailable, TimeoutError):
            return False
        return True

    async def _check_peer(self) -> None:
        """Step down if the peer is the primary at a higher term."""
        link = self.link
        if link is None:
            return
        try:
            async with asyncio.timeout(PEER_TIMEOUT):
                peer = await read_link(self._peer_storage(), self.prefix)
        except (StorageUnavailable, TimeoutError, ValueError):
            return
        if peer is not None and peer.role == "primary" and peer.term > link.term:
            await self.step_down(peer)

    async def _follow(self) -> None:
        assert self.link is not None
        self.follower = RegionFollower(self.link.peer.storage, self._own, self.config.name)
        self.follower.start()
        await self.follower.wait_synced(SYNC_TIMEOUT)
        self._last_seen = time.monotonic()

    def _save_config(self, link: RegionLink | None) -> None:
        """config.json as a restart must find it: following `link.peer`, or a primary."""
        saved = read_json(self.data.config)
        region = None
        if link is None:
            saved.pop("region", None)
            saved["activation"] = "manual"  # the domain is active already: never activate anew
        else:
            peer = link.peer
            region = RegionConfig(primary_url=peer.url, primary_etcd=peer.etcd,
                                  primary_join=peer.join, term=link.term,
                                  failover_after=link.failover_after)  # fmt: skip
            saved["region"] = region.to_json()
        write_json_atomic(self.data.config, saved)
        self.config = dataclasses.replace(self.config, region=region)

    def publish(self) -> None:
        """Write `region.json` (nothing for a pool without a region)."""
        link = self.link
        if link is None:
            return
        document: dict[str, Any] = {"updated": time.time()}
        if self.follower is not None:
            document = lag_document(self.follower.replicator.lag(), link.peer.url, time.time())
        document.update(
            role=link.role,
            term=link.term,
            url=link.url,
            peer_url=link.peer.url,
            failover_after=link.failover_after,
            promoted=link.promoted,
            lost_writes=link.lost_writes,
        )
        try:
            write_json_atomic(self.data.region_state, document)
        except OSError as exc:
            log.warning("cannot write the region state: %s", exc)
