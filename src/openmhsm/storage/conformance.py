"""The conformance suite every `Storage` backend's test runs.

Each check is an async function taking a factory that opens a fresh, empty store; the check closes
it. Backend tests parametrize over `CHECKS` so each check is its own test:

    @pytest.mark.parametrize("check", CHECKS, ids=check_name)
    def test_conformance(check: Check) -> None:
        asyncio.run(check(lambda: make_store()))

Factories must give a store that keeps watch history for fewer than `COMPACTION_WRITES` events
(e.g. `MemoryStorage(max_history=32)`), so that `check_watch_compacted` and
`check_snapshot_compacted` can see compaction; the snapshot checks stay within 32 revisions.
"""

from __future__ import annotations

import asyncio

from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Delete, Entry, Event, Put, Storage, StorageCompacted, TxnOp
from openmhsm.storage.conformance_snapshot import (
    check_snapshot_compacted,
    check_snapshot_isolated,
    check_snapshot_paging,
)
from openmhsm.storage.conformance_support import (
    _FAR,
    COMPACTION_WRITES,
    Check,
    Factory,
    _conflicts,
    _eq,
    _keys,
    _next,
    _opened,
    _true,
    _watching,
)


async def check_get_missing(make: Factory) -> None:
    """A fresh store has nothing; a missing key is None, not an error."""
    async with _opened(make) as s:
        _eq(await s.get("missing/key"), None, "get of a missing key")
        _eq(await s.list_page(""), [], "list of a fresh store")
        _true(await s.revision() >= 0, "revision is a non-negative int")


async def check_put_get(make: Factory) -> None:
    """A put is read back with the revision it returned; overwrites raise the revision."""
    async with _opened(make) as s:
        r1 = await s.put_if("a/k", b"v1")
        _eq(await s.get("a/k"), Entry("a/k", b"v1", r1), "entry after put")
        _eq(await s.revision(), r1, "store revision after put")
        r2 = await s.put_if("a/k", bytes(range(256)))
        _true(r2 > r1, "an overwrite raises the revision")
        _eq(await s.get("a/k"), Entry("a/k", bytes(range(256)), r2), "entry after overwrite")
        r3 = await s.put_if("a/empty", b"")
        _eq(await s.get("a/empty"), Entry("a/empty", b"", r3), "an empty value")


async def check_put_if_absent(make: Factory) -> None:
    """expected_revision=0 creates a key once and never overwrites it."""
    async with _opened(make) as s:
        r1 = await s.put_if("k", b"first", 0)
        await _conflicts(s.put_if("k", b"second", 0), "put_if(0) on an existing key")
        _eq(await s.get("k"), Entry("k", b"first", r1), "value after a lost put_if(0)")
        _eq(await s.revision(), r1, "a failed compare keeps the revision")


async def check_put_if_revision(make: Factory) -> None:
    """expected_revision=n writes only over the entry last modified at n."""
    async with _opened(make) as s:
        r1 = await s.put_if("k", b"v1")
        r2 = await s.put_if("k", b"v2", r1)
        await _conflicts(s.put_if("k", b"v3", r1), "put_if with a stale revision")
        await _conflicts(s.put_if("k", b"v3", r2 + _FAR), "put_if with a future revision")
        _eq(await s.get("k"), Entry("k", b"v2", r2), "value after lost compares")
        await _conflicts(s.put_if("other", b"x", r2), "put_if(n) on a missing key")
        _eq(await s.get("other"), None, "a missing key stays missing")


async def check_delete_if(make: Factory) -> None:
    """delete_if compares like put_if; deleting a missing key unconditionally is fine."""
    async with _opened(make) as s:
        r1 = await s.put_if("k", b"v")
        await _conflicts(s.delete_if("k", r1 + _FAR), "delete_if with a wrong revision")
        await _conflicts(s.delete_if("k", 0), "delete_if(0) on an existing key")
        _eq(await s.get("k"), Entry("k", b"v", r1), "entry after lost delete compares")
        r2 = await s.delete_if("k", r1)
        _true(r2 > r1, "a delete raises the revision")
        _eq(await s.get("k"), None, "a deleted key")
        await s.delete_if("k")
        await s.delete_if("never/there", 0)
        await _conflicts(s.delete_if("never/there", r2), "delete_if(n) on a missing key")
        _eq(await s.get("never/there"), None, "deleting a missing key creates nothing")


async def check_list_page_order(make: Factory) -> None:
    """list_page returns whole entries in key order, whatever the write order."""
    async with _opened(make) as s:
        for key in ("p/c", "p/a/x", "p/b", "p/a"):
            await s.put_if(key, key.encode())
        page = await s.list_page("p/")
        _eq([e.key for e in page], ["p/a", "p/a/x", "p/b", "p/c"], "keys in order")
        for entry in page:
            _eq(await s.get(entry.key), entry, f"listed entry {entry.key}")


async def check_prefix_isolation(make: Factory) -> None:
    """A prefix matches by string prefix only: `a/` never returns `ab/` keys."""
    async with _opened(make) as s:
        for key in ("a", "a/1", "a/2", "ab/1", "a0", "b/1", "`/1"):
            await s.put_if(key, b"x")
        _eq(await _keys(s, "a/"), ["a/1", "a/2"], "keys under a/")
        _eq(await _keys(s, "ab/"), ["ab/1"], "keys under ab/")
        _eq(await _keys(s, "a"), ["a", "a/1", "a/2", "a0", "ab/1"], "keys under a")
        _eq(await _keys(s, "c/"), [], "keys under an empty prefix")


async def check_paging(make: Factory) -> None:
    """start_after and limit page through a prefix exactly once, in order."""
    async with _opened(make) as s:
        wanted = [f"p/{i:02}" for i in range(10)]
        for key in [*wanted, "o/x", "q/x"]:
            await s.put_if(key, b"x")
        seen: list[str] = []
        sizes: list[int] = []
        after: str | None = None
        while page := await s.list_page("p/", start_after=after, limit=3):
            seen += [e.key for e in page]
            sizes.append(len(page))
            after = page[-1].key
        _eq(seen, wanted, "keys seen across pages")
        _eq(sizes, [3, 3, 3, 1], "page sizes")
        _eq(await _keys_after(s, "p/", "a", 2), ["p/00", "p/01"], "start_after before prefix")
        _eq(await _keys_after(s, "p/", "p/045", 2), ["p/05", "p/06"], "start_after a gap")
        _eq(await _keys_after(s, "p/", "p/09", 5), [], "start_after the last key")
        _eq(await _keys_after(s, "p/", "z", 5), [], "start_after past the prefix")


async def _keys_after(s: Storage, prefix: str, after: str, limit: int) -> list[str]:
    return [e.key for e in await s.list_page(prefix, start_after=after, limit=limit)]


async def check_txn_all_or_nothing(make: Factory) -> None:
    """One failing compare in a transaction applies none of its operations."""
    async with _opened(make) as s:
        r1 = await s.put_if("t/k1", b"v1")
        r2 = await s.put_if("t/k2", b"v2")
        bad_put: list[TxnOp] = [Put("t/new", b"n"), Delete("t/k2"), Put("t/k1", b"x", r1 + _FAR)]
        await _conflicts(s.txn(bad_put), "txn with a failing put compare")
        bad_delete: list[TxnOp] = [Put("t/new", b"n", 0), Put("t/k1", b"x", r1), Delete("t/k2", 0)]
        await _conflicts(s.txn(bad_delete), "txn with a failing delete compare")
        _eq(await s.get("t/new"), None, "no put of a failed txn applied")
        _eq(await s.get("t/k1"), Entry("t/k1", b"v1", r1), "t/k1 after failed txns")
        _eq(await s.get("t/k2"), Entry("t/k2", b"v2", r2), "t/k2 after failed txns")
        _eq(await s.revision(), r2, "failed txns keep the revision")


async def check_txn_one_revision(make: Factory) -> None:
    """A transaction commits as exactly one new revision shared by every key it writes."""
    async with _opened(make) as s:
        rd = await s.put_if("t/d", b"d")
        before = await s.revision()
        ops: list[TxnOp] = [
            Put("t/a", b"a"),
            Put("t/b", b"b", 0),
            Delete("t/d", rd),
            Put("t/c", b"c"),
        ]
        revision = await s.txn(ops)
        _eq(revision, before + 1, "revision of a txn")
        _eq(await s.revision(), revision, "store revision after a txn")
        page = await s.list_page("t/")
        written = [(e.key, e.mod_revision) for e in page]
        _eq(written, [("t/a", revision), ("t/b", revision), ("t/c", revision)], "txn entries")


async def check_revisions_monotonic(make: Factory) -> None:
    """Every committed write returns a revision greater than the one before."""
    async with _opened(make) as s:
        seen = [await s.revision()]
        for i in range(20):
            if i % 3 == 0:
                seen.append(await s.put_if(f"m/{i}", b"x", 0))
            elif i % 3 == 1:
                seen.append(await s.txn([Put(f"m/{i}", b"x"), Delete(f"m/{i - 1}")]))
            else:
                seen.append(await s.delete_if(f"m/{i - 1}"))
                seen.append(await s.put_if(f"m/{i}", b"y"))
        _eq(seen, sorted(set(seen)), "revisions strictly increasing")
        _eq(await s.revision(), seen[-1], "store revision after the writes")


async def check_watch_replay_then_live(make: Factory) -> None:
    """watch_from a past revision replays history under the prefix, then delivers live writes."""
    async with _opened(make) as s:
        await s.put_if("w/a", b"1")
        r2 = await s.put_if("w/b", b"2")
        await s.put_if("x/other", b"-")
        r4 = await s.delete_if("w/a")
        async with _watching(s, "w/", r2) as stream:
            _eq(await _next(stream), Event("put", "w/b", b"2", r2), "replayed put")
            _eq(await _next(stream), Event("delete", "w/a", b"", r4), "replayed delete")
            waiting = asyncio.create_task(_next(stream))
            await asyncio.sleep(0.01)
            await s.put_if("x/ignored", b"-")
            r6 = await s.put_if("w/c", b"3")
            _eq(await waiting, Event("put", "w/c", b"3", r6), "live put")


async def check_watch_from_next_revision(make: Factory) -> None:
    """Watching from revision()+1 sees only writes made after the watch started."""
    async with _opened(make) as s:
        await s.put_if("w/old", b"old")
        async with _watching(s, "w/", await s.revision() + 1) as stream:
            waiting = asyncio.create_task(_next(stream))
            await asyncio.sleep(0.01)
            revision = await s.put_if("w/new", b"new")
            _eq(await waiting, Event("put", "w/new", b"new", revision), "first live event")


async def check_watch_txn(make: Factory) -> None:
    """A transaction yields one event per key under the prefix, all with its revision."""
    async with _opened(make) as s:
        await s.put_if("w/gone", b"g")
        revision = await s.txn([Put("w/1", b"1"), Put("x/2", b"2"), Delete("w/gone")])
        async with _watching(s, "w/", revision) as stream:
            events = [await _next(stream), await _next(stream)]
        expected = [Event("put", "w/1", b"1", revision), Event("delete", "w/gone", b"", revision)]
        _eq(events, expected, "events of one txn")


async def check_watch_delete(make: Factory) -> None:
    """A delete is an event with kind "delete" and an empty value."""
    async with _opened(make) as s:
        await s.put_if("w/k", b"v")
        async with _watching(s, "w/", await s.revision() + 1) as stream:
            waiting = asyncio.create_task(_next(stream))
            await asyncio.sleep(0.01)
            revision = await s.delete_if("w/k")
            _eq(await waiting, Event("delete", "w/k", b"", revision), "delete event")


async def check_watch_compacted(make: Factory) -> None:
    """watch_from a revision the store no longer keeps history for raises StorageCompacted."""
    async with _opened(make) as s:
        first = await s.put_if("c/0", b"0")
        for i in range(1, COMPACTION_WRITES):
            await s.put_if(f"c/{i % 7}", str(i).encode())
        async with _watching(s, "c/", first) as stream:
            try:
                await _next(stream)
            except StorageCompacted:
                pass
            else:
                raise AssertionError("watch_from a compacted revision: expected StorageCompacted")
        last = await s.revision()
        async with _watching(s, "c/", last) as stream:
            _eq((await _next(stream)).revision, last, "watch_from the newest revision")


async def check_concurrent_put_if_race(make: Factory) -> None:
    """Of N concurrent compare-and-set writes on one key, exactly one wins."""
    async with _opened(make) as s:
        for expected in (0, None):
            if expected is None:
                entry = await s.get("race/k")
                expected = entry.mod_revision if entry is not None else -1
            writes = [s.put_if("race/k", str(i).encode(), expected) for i in range(16)]
            results = await asyncio.gather(*writes, return_exceptions=True)
            wins = [(i, r) for i, r in enumerate(results) if isinstance(r, int)]
            lost = [r for r in results if isinstance(r, StorageConflict)]
            _eq((len(wins), len(lost)), (1, 15), f"winners and losers at revision {expected}")
            winner, revision = wins[0]
            _eq(await s.get("race/k"), Entry("race/k", str(winner).encode(), revision), "winner")


async def check_close_idempotent(make: Factory) -> None:
    """close() may be called twice."""
    s = await make()
    await s.put_if("k", b"v")
    await s.close()
    await s.close()


CHECKS: tuple[Check, ...] = (
    check_get_missing,
    check_put_get,
    check_put_if_absent,
    check_put_if_revision,
    check_delete_if,
    check_list_page_order,
    check_prefix_isolation,
    check_paging,
    check_txn_all_or_nothing,
    check_txn_one_revision,
    check_revisions_monotonic,
    check_watch_replay_then_live,
    check_watch_from_next_revision,
    check_watch_txn,
    check_watch_delete,
    check_watch_compacted,
    check_snapshot_isolated,
    check_snapshot_paging,
    check_snapshot_compacted,
    check_concurrent_put_if_race,
    check_close_idempotent,
)


def check_name(check: Check) -> str:
    """The test id of a check: its name without `check_`."""
    return getattr(check, "__name__", repr(check)).removeprefix("check_")


async def run_conformance(make: Factory) -> None:
    """Run every check in order (for callers that do not parametrize)."""
    for check in CHECKS:
        await check(make)
