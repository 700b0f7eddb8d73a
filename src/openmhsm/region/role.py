"""A partition's view of its region's role (DESIGN §8): the region link in its own storage,
read at start and polled every `POLL` seconds, so a promotion or a step-down made by the
supervisor reaches every partition within a poll without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from openmhsm.errors import StorageUnavailable
from openmhsm.region.link import RegionLink, read_link
from openmhsm.storage.base import Storage

log = logging.getLogger(__name__)

POLL: Final = 0.5

OnChange = Callable[[RegionLink | None], None]


class RegionRole:
    """The region link as last read; `on_change` runs for every change (and on the first read)."""

    def __init__(
        self, storage: Storage, prefix: str, on_change: OnChange, fallback: RegionLink | None
    ) -> None:
        """`fallback` stands for the link until storage holds one (an extended region started
        before its supervisor wrote the link, or made by an older `mhsm region add`)."""
        self._storage = storage
        self._prefix = prefix
        self._on_change = on_change
        self._fallback = fallback
        self.link: RegionLink | None = None
        self._known = False
        self._task: asyncio.Task[None] | None = None

    @property
    def forwards_to(self) -> str | None:
        """The primary's URL while this region is an extended one, else None."""
        return None if self.link is None else self.link.forwards_to

    async def refresh(self) -> None:
        """Read the link once. Raises StorageUnavailable; a malformed link is logged and the
        last good one kept."""
        try:
            link = await read_link(self._storage, self._prefix) or self._fallback
        except ValueError as exc:
            log.error("the region link is malformed (%s); keeping the last good one", exc)
            return
        if link != self.link or not self._known:
            self.link, self._known = link, True
            self._on_change(link)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="region-role")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            with contextlib.suppress(StorageUnavailable):
                await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
