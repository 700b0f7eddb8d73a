"""DeletedKeyService: soft delete, the deletion dates, recovery levels, purge and purge
protection, name reuse, recover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from openmhsm.api import models
from openmhsm.config import DeletionPolicy
from openmhsm.crypto.jwk import b64u_encode, private_jwk
from openmhsm.errors import Conflict, Forbidden, KeyNotFound
from openmhsm.services import records
from openmhsm.services.deleted import PURGE_PROTECTED

Runner = Callable[..., Any]
NOW = 1_700_000_000
DAY = 86400


def _plain(kv: Any) -> Any:
    """A KeyVersion comparable by value (key objects compare by identity)."""
    return kv.with_changes(material=private_jwk(kv.material))


def _plain_all(versions: Any) -> dict[str, Any]:
    return {kv.version: _plain(kv) for kv in versions}


@pytest.mark.parametrize("retention", [90, 30, 7])
def test_delete_moves_every_version_to_one_deleted_record(hsm: Runner, retention: int) -> None:
    async def body(s: Any) -> None:
        v1 = await s.keys.create("MyKey", {"kty": "oct", "tags": {"a": "1"}})
        s.clock.advance(5)
        v2 = await s.keys.create("mykey", {"kty": "oct"})
        await s.keys.set_rotation_policy("mykey", {"attributes": {"expiryTime": "P90D"}})
        s.clock.advance(5)
        deleted = await s.deleted.delete("MYKEY")
        assert deleted.name == "MyKey"
        assert deleted.current == v2.version
        assert [v.version for v in deleted.versions] == [v1.version, v2.version]
        assert deleted.deleted_date == NOW + 10
        assert deleted.scheduled_purge_date == NOW + 10 + retention * DAY
        assert deleted.policy is not None
        assert deleted.policy["attributes"]["expiryTime"] == "P90D"
        # One deleted record; nothing left under keys/ in storage or in the cache.
        assert await s.view.list_page("keys/") == []
        assert [e.key for e in await s.view.list_page("deleted/")] == ["deleted/mykey"]
        assert s.cache.names() == []
        with pytest.raises(KeyNotFound):
            await s.keys.get("MyKey")
        assert await s.deleted.get("mykey") == deleted

    hsm(body, deletion=DeletionPolicy(retention_days=retention))


@pytest.mark.parametrize(
    ("retention", "protected", "level"),
    [
        (90, False, "Recoverable+Purgeable"),
        (30, False, "CustomizedRecoverable+Purgeable"),
        (90, True, "Recoverable"),
        (30, True, "CustomizedRecoverable"),
        (7, True, "CustomizedRecoverable"),
    ],
)
def test_recovery_level_per_api_section_5(
    hsm: Runner, retention: int, protected: bool, level: str
) -> None:
    policy = DeletionPolicy(retention_days=retention, purge_protection=protected)
    assert policy.recovery_level == level

    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        deleted = await s.deleted.delete("k1")
        bundle = models.deleted_key_bundle("https://h", deleted, s.deletion)
        assert bundle["attributes"]["recoveryLevel"] == level
        assert bundle["attributes"]["recoverableDays"] == retention
        assert bundle["scheduledPurgeDate"] - bundle["deletedDate"] == retention * DAY
        assert bundle["recoveryId"] == "https://h/deletedkeys/k1"

    hsm(body, deletion=policy)


@pytest.mark.parametrize("retention", [6, 91, 0])
def test_retention_outside_7_to_90_days_is_refused(retention: int) -> None:
    with pytest.raises(ValueError, match="7 to 90"):
        DeletionPolicy(retention_days=retention)


def test_create_or_import_while_deleted_is_a_conflict(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        with pytest.raises(Conflict) as info:
            await s.keys.create("K1", {"kty": "oct"})
        assert info.value.status == 409
        assert info.value.inner_code == "ObjectIsDeletedButRecoverable"
        assert "deleted but recoverable" in info.value.message
        with pytest.raises(Conflict):
            await s.keys.import_key("k1", {"key": {"kty": "oct", "k": b64u_encode(bytes(32))}})
        assert s.cache.names() == []

    hsm(body)


def test_recover_restores_all_versions(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        made = []
        for i in range(3):
            s.clock.advance(1)
            made.append(await s.keys.create("Rec", {"kty": "EC", "tags": {"i": str(i)}}))
        await s.keys.update("rec", made[0].version, {"attributes": {"enabled": False}})
        policy = await s.keys.set_rotation_policy("rec", {"attributes": {"expiryTime": "P60D"}})
        before = _plain_all((await s.keys.list_versions("rec", None, 25)).items)
        await s.deleted.delete("rec")
        s.clock.advance(DAY)
        recovered = await s.deleted.recover("REC")
        assert recovered.current == made[-1].version
        current = await s.keys.get("rec")
        assert _plain(current) == before[made[-1].version]
        assert current.name == "Rec"
        after = _plain_all((await s.keys.list_versions("rec", None, 25)).items)
        assert after == before
        assert not after[made[0].version].attributes.enabled
        assert await s.keys.get_rotation_policy("rec") == policy
        assert s.cache.deleted_names() == []
        with pytest.raises(KeyNotFound):
            await s.deleted.get("rec")
        # The name is live again: new versions are allowed.
        assert (await s.keys.create("rec", {"kty": "EC"})).name == "Rec"

    hsm(body)


def test_recover_without_a_policy(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        await s.deleted.recover("k1")
        assert await s.keys.get("k1") == kv
        assert s.cache.get(records.policy_path("k1")) is None

    hsm(body)


def test_purge_removes_the_key_for_good(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        await s.deleted.purge("K1")
        assert await s.view.list_page("") == []
        for op in (s.deleted.get, s.deleted.recover, s.deleted.purge, s.keys.get):
            with pytest.raises(KeyNotFound):
                await op("k1")
        # The name can be reused.
        assert (await s.keys.create("k1", {"kty": "oct"})).name == "k1"

    hsm(body)


def test_purge_is_forbidden_under_purge_protection(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "oct"})
        deleted = await s.deleted.delete("k1")
        with pytest.raises(Forbidden) as info:
            await s.deleted.purge("k1")
        assert info.value.status == 403 and info.value.code == "Forbidden"
        assert info.value.message == PURGE_PROTECTED
        assert await s.deleted.get("k1") == deleted
        # Recover is still allowed.
        await s.deleted.recover("k1")
        assert await s.keys.get("k1") == kv

    hsm(body, deletion=DeletionPolicy(retention_days=30, purge_protection=True))


def test_missing_names(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        for op in (s.deleted.delete, s.deleted.get, s.deleted.recover, s.deleted.purge):
            with pytest.raises(KeyNotFound):
                await op("nope")
        await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        with pytest.raises(KeyNotFound):
            await s.deleted.delete("k1")  # already deleted: not live any more

    hsm(body)


def test_list_deleted_pages(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        for name in ["c", "A", "b"]:
            await s.keys.create(name, {"kty": "oct"})
            await s.deleted.delete(name)
        page = s.deleted.list(None, 2)
        assert [d.name for d in page.items] == ["A", "b"]
        assert page.continue_after == "b"
        page = s.deleted.list(page.continue_after, 2)
        assert [d.name for d in page.items] == ["c"]
        assert page.continue_after is None

    hsm(body)
