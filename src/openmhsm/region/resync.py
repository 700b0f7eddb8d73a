"""Full resync of a replica: what makes the target equal the source at one revision.

Used when the replicator has no checkpoint, or fell behind the source's compaction. One pass walks
the source's snapshot and the target's present keys together in key order (both paged) and yields
the operations that make the target equal the snapshot: a Put where the target lacks a key or
holds other bytes, a Delete where the source lacks it. Keys `keep` refuses (region-local ones) are
neither read from the source nor touched in the target. Values are copied as they are: sealed
records stay sealed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from openmhsm.storage.base import Delete, Entry, Put, Storage, TxnOp

ReadPage = Callable[[str | None], Awaitable[list[Entry]]]


async def differences(
    source: Storage,
    target: Storage,
    prefix: str,
    revision: int,
    keep: Callable[[str], bool],
    page: int = 100,
) -> AsyncGenerator[TxnOp, None]:
    """The unconditional operations that make the target's keys under `prefix` (those `keep`
    accepts) equal the source's at store revision `revision`, in key order.

    The caller may apply them while iterating: each touches a key at or before the walk's position
    in the target, so the target pages still to come are not changed by them. Raises
    StorageCompacted when the source no longer keeps `revision`, StorageUnavailable."""

    def theirs(after: str | None) -> Awaitable[list[Entry]]:
        return source.snapshot_page(prefix, revision, after, page)

    def ours(after: str | None) -> Awaitable[list[Entry]]:
        return target.list_page(prefix, after, page)

    async with (
        aclosing(_entries(theirs, page, keep)) as wanted,
        aclosing(_entries(ours, page, keep)) as held,
    ):
        want = await anext(wanted, None)
        have = await anext(held, None)
        while want is not None or have is not None:
            if want is not None and (have is None or want.key < have.key):
                yield Put(want.key, want.value)
                want = await anext(wanted, None)
            elif have is not None and (want is None or have.key < want.key):
                yield Delete(have.key)
                have = await anext(held, None)
            elif want is not None and have is not None:  # the same key on both sides
                if want.value != have.value:
                    yield Put(want.key, want.value)
                want = await anext(wanted, None)
                have = await anext(held, None)


async def _entries(
    read: ReadPage, page: int, keep: Callable[[str], bool]
) -> AsyncGenerator[Entry, None]:
    """Every entry `read` pages through, in key order, that `keep` accepts."""
    after: str | None = None
    while True:
        entries = await read(after)
        for entry in entries:
            if keep(entry.key):
                yield entry
        if len(entries) < page:
            return
        after = entries[-1].key
