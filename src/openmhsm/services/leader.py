"""One leader among the partitions of a pool, elected through storage (etcd in a pool).

The leader holds a lease record: its partition, an instance token, and nothing that depends on
clocks. It renews the record (a compare-on-revision write) every tick. Another partition takes
the lease over when the record's revision has stayed the same for `expire_after` seconds of its
own monotonic clock (no trust in other hosts' clocks), or at once when a partition that has not
led yet finds its own partition under another instance token (it restarted: its old self is
gone). An instance that led and finds another token of its partition has lost the lease.
Two partitions taking over at once compare on the same revision: one wins.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Storage


class LeaderLease:
    def __init__(
        self,
        store: Storage,
        key: str,
        partition: int,
        *,
        expire_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.key = key
        self.partition = partition
        self.token = secrets.token_hex(8)
        self.expire_after = expire_after
        self.clock = clock
        self._seen: tuple[int, float] | None = None  # (revision, when first seen unchanged)
        self.leading = False
        self._ever_led = False

    def _record(self) -> bytes:
        return json.dumps({"partition": self.partition, "token": self.token}).encode()

    async def hold(self) -> bool:
        """Take or renew the lease if this partition may; True while it leads. Raises
        StorageUnavailable (the caller treats that as not leading)."""
        self.leading = await self._hold()
        return self.leading

    async def _hold(self) -> bool:
        entry = await self._store.get(self.key)
        if entry is None:
            return await self._write(0)
        holder = json.loads(entry.value)
        mine = holder.get("partition") == self.partition
        if mine and holder.get("token") == self.token:
            return await self._write(entry.mod_revision)
        if mine and not self._ever_led:  # this partition restarted: the holder was its former self
            return await self._write(entry.mod_revision)
        now = self.clock()
        if self._seen is None or self._seen[0] != entry.mod_revision:
            self._seen = (entry.mod_revision, now)
            return False
        if now - self._seen[1] < self.expire_after:
            return False
        return await self._write(entry.mod_revision)

    async def _write(self, revision: int) -> bool:
        try:
            await self._store.put_if(self.key, self._record(), revision)
        except StorageConflict:
            return False
        self._seen = None
        self._ever_led = True
        return True
