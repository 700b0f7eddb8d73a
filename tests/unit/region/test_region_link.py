"""The region link: its record, the terms of a promotion and a step-down, a partition's view
of it, and the wait for a forwarded write to reach the replica."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from unit_stack import PREFIX, Stack

from openmhsm.region.forwarder import ReplicaWait
from openmhsm.region.link import LINK, Peer, RegionLink, read_link, write_link
from openmhsm.region.replicator import CHECKPOINT, checkpoint_record
from openmhsm.region.role import RegionRole
from openmhsm.storage.memory import MemoryStorage

PEER = Peer("https://127.0.0.1:9443", ("127.0.0.1:2379",), (("127.0.0.1", 7001),))
EXTENDED = RegionLink(role="extended", term=1, url="https://127.0.0.1:8443", peer=PEER)


def test_a_link_round_trips_and_moves_by_terms() -> None:
    assert RegionLink.decode(EXTENDED.encode()) == EXTENDED
    assert EXTENDED.forwards_to == PEER.url and PEER.storage == "etcd://127.0.0.1:2379"
    promoted = EXTENDED.promote(from_revision=41, now=1000.0)
    assert (promoted.role, promoted.term, promoted.forwards_to) == ("primary", 2, None)
    assert promoted.promoted == {"from_revision": 41, "time": 1000.0, "term": 2}
    down = promoted.step_down(3, {"count": 2, "names": ["keys/a"]}, now=2000.0)
    assert (down.role, down.term, down.lost_writes["count"]) == ("extended", 3, 2)
    assert [h["event"] for h in down.history] == ["promoted", "stepped down"]
    assert RegionLink.decode(down.encode()) == down


@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1, "role": "leader", "term": 1, "url": "u", "peer": {}}',
        b'{"format": 1, "role": "primary", "term": 0, "url": "u",'
        b' "peer": {"url": "https://p", "etcd": ["e"]}}',
        b'{"format": 1, "role": "primary", "term": 1, "url": "u",'
        b' "peer": {"url": "http://p", "etcd": ["e"]}}',
        b'{"format": 1, "role": "primary", "term": 1, "url": "u", "peer": {"url": "https://p"}}',
        b"\xff",
    ],
)
def test_a_malformed_link_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        RegionLink.decode(value)


def test_a_partition_follows_the_link_and_keeps_the_last_good_one() -> None:
    async def scenario() -> None:
        storage = MemoryStorage()
        seen: list[RegionLink | None] = []
        role = RegionRole(storage, "/p/", seen.append, fallback=EXTENDED)
        await role.refresh()
        assert seen == [EXTENDED] and role.forwards_to == PEER.url  # config's, until stored
        promoted = EXTENDED.promote(7, 1.0)
        await write_link(storage, "/p/", promoted)
        await role.refresh()
        await role.refresh()
        assert seen == [EXTENDED, promoted] and role.forwards_to is None
        await storage.put_if("/p/" + LINK, b"garbage")
        await role.refresh()
        assert role.link == promoted and len(seen) == 2
        assert await read_link(storage, "/other/") is None

    asyncio.run(scenario())


def test_a_forwarded_write_waits_for_the_replica(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        wait = ReplicaWait(stack.storage, PREFIX, stack.cache)
        assert not await wait.reach(5, timeout=0.05)  # no checkpoint yet
        await stack.storage.put_if(PREFIX + CHECKPOINT, checkpoint_record(4))
        assert not await wait.reach(5, timeout=0.05)
        later = asyncio.get_running_loop().call_later(
            0.05,
            lambda: asyncio.ensure_future(
                stack.storage.put_if(PREFIX + CHECKPOINT, checkpoint_record(9))
            ),
        )
        assert await wait.reach(5, timeout=5)
        later.cancel()

    hsm(body)
