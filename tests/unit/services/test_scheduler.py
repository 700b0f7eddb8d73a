"""The scheduler and its leader lease: rotations when a policy says so (once), purges when the
retention ends (also under purge protection), one leader at a time, and a new leader when the old
one stops renewing."""

from __future__ import annotations

from typing import Any

from unit_stack import Stack

from openmhsm.config import DeletionPolicy
from openmhsm.services import records
from openmhsm.services.leader import LeaderLease
from openmhsm.services.scheduler import LEASE_KEY, Scheduler, rotation_due

DAY = 86400
EC = {"kty": "EC-HSM"}
AFTER_30D = {
    "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
    "attributes": {"expiryTime": "P90D"},
}
BEFORE_EXPIRY = {
    "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Rotate"}}],
    "attributes": {"expiryTime": "P60D"},
}


class Ticks:
    """A monotonic clock for a lease, moved by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def scheduler_of(stack: Stack, partition: int = 0, ticks: Ticks | None = None) -> Scheduler:
    lease = LeaderLease(stack.view, LEASE_KEY, partition, clock=ticks or Ticks())
    return Scheduler(stack.keys, stack.deleted, stack.clock, lease)


def versions(stack: Stack, name: str) -> list[str]:
    return sorted(stack.cache.iter_versions(name))


def test_rotation_after_create_happens_once(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        first = await stack.keys.create("k", EC)
        await stack.keys.set_rotation_policy("k", AFTER_30D)
        other = await stack.keys.create("no-policy", EC)
        scheduler = scheduler_of(stack)
        stack.clock.advance(29 * DAY)
        await scheduler.tick()
        assert versions(stack, "k") == [records.version_path("k", first.version)]
        stack.clock.advance(2 * DAY)
        await scheduler.tick()
        await scheduler.tick()  # due no longer: the new version is a day old
        assert len(versions(stack, "k")) == 2 and scheduler.rotated == 1
        current = await stack.keys.get("k")
        assert current.version != first.version
        assert current.attributes.exp == current.attributes.created + 90 * DAY  # expiryTime
        assert (await stack.keys.get("no-policy")).version == other.version

    hsm(body)


def test_rotation_before_expiry(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", EC)
        await stack.keys.set_rotation_policy("k", BEFORE_EXPIRY)
        await stack.keys.rotate("k")  # a version with exp = created + 60 days
        scheduler = scheduler_of(stack)
        stack.clock.advance(49 * DAY)
        await scheduler.tick()
        assert scheduler.rotated == 0
        stack.clock.advance(2 * DAY)
        await scheduler.tick()
        assert scheduler.rotated == 1

    hsm(body)


def test_a_new_leader_with_a_stale_cache_does_not_rotate_again(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", EC)
        await stack.keys.set_rotation_policy("k", AFTER_30D)
        peer = await stack.peer()
        assert await peer.cache.catch_up()
        stack.clock.advance(31 * DAY)
        await scheduler_of(stack).tick()
        # The peer's round starts from what it decided before the first leader's rotation
        # reached it: its rotation carries the same request id and finds that one.
        stale = scheduler_of(peer, partition=1)
        current = (await peer.keys.get("k")).version
        made = await peer.keys.rotate("k", request_id=f"scheduler:rotate:{current}")
        await stale.tick()
        assert len(versions(stack, "k")) == 2
        assert made.version == (await stack.keys.get("k")).version

    hsm(body)


def test_purge_when_retention_ends_even_under_purge_protection(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("gone", EC)
        await stack.deleted.delete("gone")
        scheduler = scheduler_of(stack)
        stack.clock.advance(7 * DAY - 1)
        await scheduler.tick()
        assert stack.cache.deleted_names() == ["gone"]
        stack.clock.advance(2)
        await scheduler.tick()
        assert stack.cache.deleted_names() == [] and scheduler.purged == 1

    hsm(body, deletion=DeletionPolicy(retention_days=7, purge_protection=True))


def test_one_leader_and_a_takeover_when_it_stops(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        ticks = Ticks()
        a = LeaderLease(stack.view, LEASE_KEY, 0, expire_after=10, clock=ticks)
        b = LeaderLease(stack.view, LEASE_KEY, 1, expire_after=10, clock=ticks)
        assert await a.hold() and not await b.hold()
        ticks.t += 5
        assert await a.hold() and not await b.hold()  # renewed: b starts counting again
        ticks.t += 9
        assert not await b.hold()  # a stopped renewing 9 s ago
        ticks.t += 2
        assert await b.hold()
        assert not await a.hold()  # a came back: b leads now
        restarted = LeaderLease(stack.view, LEASE_KEY, 1, expire_after=10, clock=ticks)
        assert await restarted.hold()  # the same partition after a restart: at once
        assert not await b.hold()

    hsm(body)


def test_rotation_due_reads_both_triggers() -> None:
    from openmhsm.services.records import KeyAttributes, KeyVersion

    version = KeyVersion.__new__(KeyVersion)
    object.__setattr__(version, "attributes", KeyAttributes(created=1000, exp=1000 + 60 * DAY))
    assert not rotation_due(version, AFTER_30D, 1000 + 30 * DAY - 1)
    assert rotation_due(version, AFTER_30D, 1000 + 30 * DAY)
    assert not rotation_due(version, BEFORE_EXPIRY, 1000 + 50 * DAY - 1)
    assert rotation_due(version, BEFORE_EXPIRY, 1000 + 50 * DAY)
    assert not rotation_due(version, {"lifetimeActions": []}, 10**12)


def test_disabled_keys_and_young_versions_are_left_alone(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("off", EC)
        await stack.keys.set_rotation_policy("off", AFTER_30D)
        await stack.keys.update("off", None, {"attributes": {"enabled": False}})
        scheduler = scheduler_of(stack)
        stack.clock.advance(31 * DAY)
        await scheduler.tick()
        assert scheduler.rotated == 0 and len(versions(stack, "off")) == 1

    hsm(body)


def test_a_manual_rotate_in_between_is_not_followed_by_another(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        first = await stack.keys.create("k", EC)
        await stack.keys.set_rotation_policy("k", AFTER_30D)
        stack.clock.advance(31 * DAY)
        manual = await stack.keys.rotate("k")  # lands after the scheduler decided
        kept = await stack.keys.rotate("k", "scheduler:x", replacing=first.version)
        assert kept.version == manual.version and len(versions(stack, "k")) == 2

    hsm(body)


def test_nothing_runs_while_a_full_restore_holds_the_fence(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", EC)
        await stack.keys.set_rotation_policy("k", AFTER_30D)
        scheduler = scheduler_of(stack)
        scheduler.restoring = lambda: "job"
        stack.clock.advance(31 * DAY)
        await scheduler.tick()
        assert scheduler.rotated == 0

    hsm(body)


def test_policies_that_would_rotate_without_end_are_refused(hsm: Any) -> None:
    from openmhsm.errors import BadParameter

    async def body(stack: Stack) -> None:
        await stack.keys.create("k", EC)
        for policy in (
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "PT1S"},
                                  "action": {"type": "Rotate"}}]},
            {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P60D"},
                                  "action": {"type": "Rotate"}}],
             "attributes": {"expiryTime": "P28D"}},
            {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P22D"},
                                  "action": {"type": "Rotate"}}],
             "attributes": {"expiryTime": "P28D"}},
        ):  # fmt: skip
            try:
                await stack.keys.set_rotation_policy("k", policy)
            except BadParameter:
                continue
            raise AssertionError(f"accepted {policy}")
        ok = {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P21D"},
                                   "action": {"type": "Rotate"}}],
              "attributes": {"expiryTime": "P28D"}}  # fmt: skip
        await stack.keys.set_rotation_policy("k", ok)

    hsm(body)


def test_an_extended_region_in_standby_takes_no_lease_and_rotates_nothing(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("due", EC)
        await stack.keys.set_rotation_policy("due", AFTER_30D)
        stack.clock.advance(31 * DAY)
        scheduler = scheduler_of(stack)
        scheduler.standby = lambda: True
        await scheduler.round()
        assert len(versions(stack, "due")) == 1
        assert not scheduler.lease.leading
        assert await stack.view.get(LEASE_KEY) is None
        scheduler.standby = lambda: False  # promoted
        await scheduler.round()
        assert scheduler.lease.leading and len(versions(stack, "due")) == 2

    hsm(body)
