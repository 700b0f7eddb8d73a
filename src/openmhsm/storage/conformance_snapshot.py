"""Conformance checks of `snapshot_page`: one consistent state at a revision while writes go on."""

from __future__ import annotations

from openmhsm.storage.base import Delete, Entry, Put, Storage, StorageCompacted
from openmhsm.storage.conformance_support import (
    _FAR,
    COMPACTION_WRITES,
    Factory,
    _eq,
    _opened,
    _true,
)


async def _snapshot_all(s: Storage, prefix: str, revision: int, limit: int) -> list[Entry]:
    entries: list[Entry] = []
    after: str | None = None
    while page := await s.snapshot_page(prefix, revision, start_after=after, limit=limit):
        _true(len(page) <= limit, "a snapshot page holds at most `limit` entries")
        entries += page
        after = page[-1].key
    return entries


async def check_snapshot_isolated(make: Factory) -> None:
    """A snapshot at revision R is unchanged by later puts, deletes and transactions."""
    async with _opened(make) as s:
        await s.put_if("s/gone", b"old gone")
        await s.put_if("s/changed", b"old changed")
        await s.put_if("s/twice", b"old twice")
        await s.put_if("s/kept", b"kept")
        await s.put_if("t/outside", b"outside")
        revision = await s.revision()
        before = await s.list_page("s/")
        _eq(await s.snapshot_page("s/", revision), before, "snapshot at the current revision")
        await s.put_if("s/changed", b"new changed")
        await s.delete_if("s/gone")
        await s.put_if("s/added", b"added", 0)
        middle = await s.revision()
        at_middle = await s.list_page("s/")
        await s.txn(
            [
                Put("s/twice", b"new twice"),
                Delete("s/added"),
                Put("s/0first", b"first"),
                Put("s/gone", b"back"),
                Put("t/outside2", b"x"),
            ]
        )
        await s.put_if("s/twice", b"newer twice")
        _eq(await s.snapshot_page("s/", revision), before, "snapshot after later writes")
        _eq(await s.snapshot_page("s/", middle), at_middle, "snapshot at a middle revision")
        _eq(
            [e.key for e in await s.snapshot_page("", revision)],
            ["s/changed", "s/gone", "s/kept", "s/twice", "t/outside"],
            "snapshot of every key",
        )
        now = await s.revision()
        _eq(await s.snapshot_page("s/", now), await s.list_page("s/"), "snapshot at now")
        try:
            await s.snapshot_page("s/", now + _FAR)
        except ValueError:
            pass
        else:
            raise AssertionError("snapshot_page at a future revision: expected ValueError")


async def check_snapshot_paging(make: Factory) -> None:
    """Paging a snapshot with start_after and limit sees one state, while writes go on between
    the pages."""
    async with _opened(make) as s:
        for i in range(0, 20, 2):
            await s.put_if(f"p/{i:02}", b"v%d" % i)
        await s.put_if("q/x", b"x")
        revision = await s.revision()
        expected = await s.list_page("p/")
        seen: list[Entry] = []
        after: str | None = None
        step = 0
        while page := await s.snapshot_page("p/", revision, start_after=after, limit=3):
            seen += page
            after = page[-1].key
            step += 1  # writes between pages: before, at and after the page boundary
            await s.txn(
                [
                    Put(f"p/{int(after[2:]) + 1:02}", b"new"),
                    Delete(f"p/{max(0, int(after[2:]) - 2):02}"),
                    Put(f"p/{min(18, int(after[2:]) + 2):02}", b"changed"),
                ]
            )
        _eq(seen, expected, "entries seen across snapshot pages")
        _eq(step, 4, "snapshot pages")
        _eq(
            [e.key for e in await s.snapshot_page("p/", revision, start_after="p/055", limit=2)],
            ["p/06", "p/08"],
            "snapshot start_after a gap",
        )
        _eq(await s.snapshot_page("p/", revision, start_after="z"), [], "start_after the end")
        _eq(len(await _snapshot_all(s, "", revision, 4)), 11, "whole snapshot in pages of 4")


async def check_snapshot_compacted(make: Factory) -> None:
    """snapshot_page at a revision older than the kept history raises StorageCompacted."""
    async with _opened(make) as s:
        first = await s.put_if("c/0", b"0")
        for i in range(1, COMPACTION_WRITES):
            await s.put_if(f"c/{i % 7}", str(i).encode())
        try:
            await s.snapshot_page("c/", first)
        except StorageCompacted:
            pass
        else:
            raise AssertionError("snapshot_page at a compacted revision: expected StorageCompacted")
        last = await s.revision()
        _eq(await s.snapshot_page("c/", last), await s.list_page("c/"), "the newest revision")
