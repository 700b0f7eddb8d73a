"""BarrierView: the conformance suite over a view, plus sealing, scoping and meta/."""

from __future__ import annotations

import asyncio
import os

import pytest

from openmhsm.barrier.barrier import Barrier, SealError
from openmhsm.barrier.keyring import Keyring
from openmhsm.barrier.view import BarrierView
from openmhsm.storage.base import Delete, Event, Put, Storage
from openmhsm.storage.conformance import CHECKS, Check, check_name
from openmhsm.storage.memory import MemoryStorage

BARRIER = Barrier(Keyring({1: os.urandom(32)}, 1))


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_view_conformance(check: Check) -> None:
    async def make() -> Storage:
        inner = MemoryStorage(max_history=32)
        await inner.put_if("/pool10/a/1", b"neighbour pool")  # never visible through the view
        return BarrierView(inner, BARRIER, "/pool1/")

    asyncio.run(check(make))


def test_storage_holds_sealed_records_under_full_paths() -> None:
    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        await view.put_if("keys/k1/abc", b"key material")
        await view.txn([Put("keys/k2/def", b"more material")])
        raw = await inner.list_page("")
        assert [e.key for e in raw] == ["/pool1/keys/k1/abc", "/pool1/keys/k2/def"]
        assert all(b"material" not in e.value for e in raw)
        assert BARRIER.open("/pool1/keys/k1/abc", raw[0].value) == b"key material"

    asyncio.run(scenario())


def test_meta_is_plaintext() -> None:
    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        await view.put_if("meta/domain", b'{"state": "Active"}')
        entry = await inner.get("/pool1/meta/domain")
        assert entry is not None and entry.value == b'{"state": "Active"}'
        assert (await view.get("meta/domain")) == entry.__class__(
            "meta/domain", b'{"state": "Active"}', entry.mod_revision
        )

    asyncio.run(scenario())


def test_record_moved_in_storage_fails_to_open() -> None:
    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        await view.put_if("keys/a/1", b"a")
        moved = await inner.get("/pool1/keys/a/1")
        assert moved is not None
        await inner.put_if("/pool1/keys/b/1", moved.value)
        await inner.put_if("/pool2/keys/a/1", moved.value)
        with pytest.raises(SealError):
            await view.get("keys/b/1")
        with pytest.raises(SealError):
            await BarrierView(inner, BARRIER, "/pool2/").get("keys/a/1")
        with pytest.raises(SealError):
            await view.list_page("keys/")
        await inner.put_if("/pool1/meta/x", moved.value)  # meta/ is not opened: bytes as stored
        assert (await view.get("meta/x")) is not None

    asyncio.run(scenario())


def test_watch_opens_values_and_returns_relative_keys() -> None:
    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        r1 = await view.put_if("keys/k/1", b"v1")
        r2 = await view.txn([Delete("keys/k/1"), Put("meta/domain", b"m")])
        stream = view.watch_from("", r1)
        events = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # type: ignore[attr-defined]
        assert events == [
            Event("put", "keys/k/1", b"v1", r1),
            Event("delete", "keys/k/1", b"", r2),
            Event("put", "meta/domain", b"m", r2),
        ]

    asyncio.run(scenario())


def test_tampered_record_fails_in_watch() -> None:
    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        revision = await inner.put_if("/pool1/keys/x", b"\x00" * 40)
        with pytest.raises(SealError):
            await anext(view.watch_from("keys/", revision))

    asyncio.run(scenario())


def test_prefix_must_end_with_a_slash() -> None:
    with pytest.raises(ValueError):
        BarrierView(MemoryStorage(), BARRIER, "/pool1")


def test_region_records_are_plaintext_so_a_watch_passes_over_them() -> None:
    """The replicator's checkpoint is written without the barrier, in the same transaction as
    the records it covers: a cache watching the whole view must read past it, not stall."""

    async def scenario() -> None:
        inner = MemoryStorage()
        view = BarrierView(inner, BARRIER, "/pool1/")
        await view.put_if("keys/k1/abc", b"sealed")
        sealed = BARRIER.seal("/pool1/keys/k2/def", b"replicated")
        revision = await inner.txn(
            [Put("/pool1/keys/k2/def", sealed), Put("/pool1/region/checkpoint", b"{}")]
        )
        events = []
        async for event in view.watch_from("", 1):
            events.append((event.key, event.revision))
            if event.revision == revision and event.key == "region/checkpoint":
                break
        assert [key for key, _ in events] == ["keys/k1/abc", "keys/k2/def", "region/checkpoint"]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_last_write_counts_only_keys_outside_the_local_prefixes() -> None:
    async def scenario() -> None:
        view = BarrierView(MemoryStorage(), BARRIER, "/pool1/")
        view.local_prefixes = ("jobs/", "region/")
        first = await view.put_if("keys/k/1", b"a")
        assert view.last_write == first
        await view.put_if("jobs/j1", b"job")
        await view.txn([Put("jobs/j2", b"job"), Delete("jobs/fence", 0)])
        assert view.last_write == first
        second = await view.txn([Put("rbac/a", b"x"), Delete("jobs/fence", 0)])
        assert view.last_write == second
        third = await view.delete_if("keys/k/1")
        assert view.last_write == third

    asyncio.run(scenario())
