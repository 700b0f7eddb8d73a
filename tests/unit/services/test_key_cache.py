"""KeyCache: own writes at once, other partitions' writes through the watch or read-through,
revisions decide which change wins, reload after compaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from unit_stack import stall_watch, writer_skips_catch_up

from openmhsm.errors import Conflict, KeyNotFound
from openmhsm.services import records
from openmhsm.storage.base import Event
from openmhsm.storage.memory import MemoryStorage

Runner = Callable[..., Any]
DEADLINE = 2.0


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll `check` until it holds, yielding to the watch task; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def test_own_writes_are_visible_at_once(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "oct"})
        # No await in between: the watch task has not run, the commit applied the write.
        ptr, revision = s.cache.get(records.current_path("k1"))
        assert ptr.version == kv.version
        assert revision == await s.storage.revision()
        assert s.cache.get(records.version_path("k1", kv.version))[0] is kv
        assert s.keys.list_keys(None, 25).items == [kv]
        await s.deleted.delete("k1")
        assert s.cache.get(records.current_path("k1")) is None
        assert s.cache.deleted_names() == ["k1"]

    hsm(body)


def test_load_reads_existing_records(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        live = await s.keys.create("live", {"kty": "oct", "tags": {"a": "b"}})
        await s.keys.create("gone", {"kty": "oct"})
        await s.deleted.delete("gone")
        peer = await s.peer()
        assert peer.cache.names() == ["live"]
        assert peer.cache.deleted_names() == ["gone"]
        assert (await peer.keys.get("LIVE")).tags == live.tags
        assert peer.cache.revision == await s.storage.revision()

    hsm(body)


def test_a_second_cache_sees_writes_through_the_watch(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        kv = await s.keys.create("k1", {"kty": "oct"})
        await eventually(lambda: peer.cache.get(records.current_path("k1")) is not None, "put")
        assert peer.cache.get(records.current_path("k1"))[0].version == kv.version
        updated = await s.keys.update("k1", None, {"attributes": {"enabled": False}})
        path = records.version_path("k1", kv.version)
        await eventually(lambda: not peer.cache.get(path)[0].attributes.enabled, "update")
        assert peer.cache.get(path)[0] == updated
        await s.deleted.delete("k1")
        await eventually(lambda: peer.cache.deleted_names() == ["k1"], "delete")
        assert peer.cache.names() == []
        with pytest.raises(KeyNotFound):
            await peer.keys.get("k1")

    hsm(body)


def test_read_through_finds_a_key_before_the_watch_delivers_it(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        kv = await s.keys.create("k1", {"kty": "oct"})
        # Nothing has yielded to the peer's watch task yet.
        assert peer.cache.get(records.current_path("k1")) is None
        assert (await peer.keys.get("k1")).version == kv.version
        await s.deleted.delete("k1")
        assert (await peer.deleted.get("k1")).current == kv.version

    hsm(body)


def test_read_through_without_a_watch(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer(load=False)
        kv = await s.keys.create("k1", {"kty": "oct"})
        assert (await peer.keys.get("k1", kv.version)).version == kv.version
        with pytest.raises(KeyNotFound):
            await peer.keys.get("k2")

    hsm(body)


def test_a_stale_change_never_overwrites_a_newer_record(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "oct"})
        path = records.version_path("k1", kv.version)
        old_value = records.dump_version(kv)
        newer = await s.keys.update("k1", None, {"tags": {"n": "2"}})
        _, revision = s.cache.get(path)
        s.cache.apply("put", path, old_value, revision - 1)
        s.cache.apply("delete", path, None, revision - 1)
        assert s.cache.get(path) == (newer, revision)
        # An equal revision is the same change: also ignored.
        s.cache.apply("put", path, old_value, revision)
        assert s.cache.get(path)[0] == newer
        # A newer delete wins, and an older put cannot resurrect the record afterwards.
        s.cache.apply("delete", path, None, revision + 10)
        s.cache.apply("put", path, old_value, revision + 5)
        assert s.cache.get(path) is None
        assert s.cache.revision_of(path) == 0

    hsm(body)


def test_watch_events_older_than_a_read_through_are_ignored(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        kv = await s.keys.create("k1", {"kty": "oct", "tags": {"n": "1"}})
        await s.keys.update("k1", None, {"tags": {"n": "2"}})
        await s.keys.update("k1", None, {"tags": {"n": "3"}})
        # The peer reads the newest record first (a read-through, as on a miss); the watch then
        # replays the older changes.
        await peer.cache.read_through("k1")
        assert (await peer.keys.get("k1")).tags == {"n": "3"}
        final = await s.storage.revision()
        await eventually(lambda: peer.cache.revision >= final, "the watch to catch up")
        await asyncio.sleep(0.01)
        assert (await peer.keys.get("k1", kv.version)).tags == {"n": "3"}

    hsm(body)


def test_reload_after_the_watch_falls_behind_compaction(
    hsm: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(s: Any) -> None:
        peer = await s.peer()
        names = [f"k{i}" for i in range(10)]
        writer_skips_catch_up(s)
        for name in names:  # no yield: the peer's watch is left behind the short history
            await s.keys.create(name, {"kty": "oct"})
        await eventually(lambda: peer.cache.names() == sorted(names), "reload")
        assert peer.cache.revision == await s.storage.revision()
        extra = await s.keys.create("late", {"kty": "oct"})
        await eventually(lambda: "late" in peer.cache.names(), "watch after reload")
        assert (await peer.keys.get("late")).version == extra.version

    with caplog.at_level(logging.WARNING, logger="openmhsm.services.key_cache"):
        hsm(body, storage=MemoryStorage(max_history=4))
    assert "fell behind compaction" in caplog.text


def test_an_update_on_a_partition_whose_watch_stalled_lands_on_the_current_version(
    hsm: Runner,
) -> None:
    """The chaos suite's lost update: the peer, its watch stuck, applied a tag update to the
    version that was current before another partition's rotate, and acknowledged it."""

    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct", "tags": {"n": "1"}})
        peer = await s.peer()
        assert (await peer.keys.get("k1")).tags == {"n": "1"}
        await stall_watch(peer)
        rotated = await s.keys.rotate("k1")
        updated = await peer.keys.update("k1", None, {"tags": {"n": "2"}})
        assert updated.version == rotated.version
        assert await s.cache.catch_up()
        assert (await s.keys.get("k1")).tags == {"n": "2"}

    hsm(body)


def test_create_on_a_stale_cache_after_another_partition_purged(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        peer = await s.peer()
        await s.deleted.delete("k1")
        await s.deleted.purge("k1")
        # The peer's watch has not run: its cache still holds the purged records.
        kv = await peer.keys.create("k1", {"kty": "oct"})
        assert (await s.keys.get("k1")).version == kv.version

    hsm(body)


def test_create_on_a_stale_cache_after_another_partition_deleted(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        peer = await s.peer()
        await s.deleted.delete("k1")
        with pytest.raises(Conflict) as info:
            await peer.keys.create("k1", {"kty": "oct"})
        assert info.value.inner_code == "ObjectIsDeletedButRecoverable"

    hsm(body)


class CountingStorage(MemoryStorage):
    """Counts watch starts; stops a tight restart loop by failing (the cache then backs off)."""

    watches = 0

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        self.watches += 1
        if self.watches > 50:
            raise RuntimeError("watch restarted in a tight loop")
        return super().watch_from(prefix, revision)


def test_an_ended_watch_is_not_restarted_in_a_tight_loop(
    hsm: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    storage = CountingStorage()

    async def body(s: Any) -> None:
        await asyncio.sleep(0.001)
        assert storage.watches == 1
        await storage.close()
        await asyncio.sleep(0.01)
        assert storage.watches <= 3

    with caplog.at_level(logging.CRITICAL, logger="openmhsm.services.key_cache"):
        hsm(body, storage=storage)
