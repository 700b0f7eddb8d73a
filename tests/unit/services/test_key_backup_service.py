"""KeyBackups: single-key blobs restore every version within one security domain only, never
over a name in use, and never when altered."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from openmhsm.crypto.jwk import private_jwk
from openmhsm.errors import BadParameter, Conflict, KeyNotFound
from openmhsm.services.backup import FORMAT, HEADER_LEN, MAX_BLOB

Runner = Callable[..., Any]
DIGEST = hashlib.sha256(b"m").digest()


def _plain(kv: Any) -> Any:
    """A KeyVersion comparable by value (key objects compare by identity)."""
    return kv.with_changes(material=private_jwk(kv.material))


def _plain_all(versions: Any) -> dict[str, Any]:
    return {kv.version: _plain(kv) for kv in versions}


async def _key_with_history(s: Any) -> dict[str, Any]:
    """A key with three versions (one disabled), tags and a rotation policy."""
    versions = []
    for i in range(3):
        s.clock.advance(1)
        versions.append(await s.keys.create("Bk", {"kty": "EC", "tags": {"i": str(i)}}))
    await s.keys.update("bk", versions[0].version, {"attributes": {"enabled": False}})
    policy = await s.keys.set_rotation_policy(
        "bk",
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}
            ],
            "attributes": {"expiryTime": "P90D"},
        },
    )
    listed = (await s.keys.list_versions("bk", None, 25)).items
    return {"versions": _plain_all(listed), "policy": policy, "current": versions[-1].version}


def test_backup_blob_format(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        blob = await s.backups.backup("K1")
        assert blob[0] == FORMAT == 1
        assert blob[1:HEADER_LEN] == uuid.UUID(s.secrets.domain_id).bytes
        assert b'"name":"k1"' not in blob  # sealed (a short pattern would match by chance)
        assert blob != await s.backups.backup("k1")  # fresh nonce each time

    hsm(body)


def test_backup_then_restore_after_purge(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        before = await _key_with_history(s)
        blob = await s.backups.backup("bk")
        _, sig = await s.ops.sign("bk", None, "ES256", DIGEST)
        await s.deleted.delete("bk")
        await s.deleted.purge("bk")
        restored = await s.backups.restore(blob)
        assert restored.version == before["current"] and restored.name == "Bk"
        assert _plain(await s.keys.get("bk")) == before["versions"][before["current"]]
        after = _plain_all((await s.keys.list_versions("bk", None, 25)).items)
        assert after == before["versions"]
        assert await s.keys.get_rotation_policy("bk") == before["policy"]
        assert (await s.ops.verify("bk", None, "ES256", DIGEST, sig))[1] is True

    hsm(body)


def test_restore_into_another_pool_of_the_same_domain(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        before = await _key_with_history(s)
        blob = await s.backups.backup("bk")
        other = await s.same_domain_pool()
        restored = await other.backups.restore(blob)
        assert _plain(restored) == before["versions"][before["current"]]
        after = _plain_all((await other.keys.list_versions("bk", None, 25)).items)
        assert after == before["versions"]

    hsm(body)


def test_restore_is_refused_in_another_security_domain(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        blob = await s.backups.backup("k1")
        other = await s.other_domain()
        with pytest.raises(BadParameter) as info:
            await other.backups.restore(blob)
        assert info.value.inner_code == "SecurityDomainMismatch"
        # Relabelled with the other domain's id, the seal still does not open.
        forged = bytes([FORMAT]) + uuid.UUID(other.secrets.domain_id).bytes + blob[HEADER_LEN:]
        with pytest.raises(BadParameter, match="corrupt"):
            await other.backups.restore(forged)
        assert await other.view.list_page("") == []

    hsm(body)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),
        lambda b: b[:40] + bytes([b[40] ^ 0x80]) + b[41:],
        lambda b: b[: HEADER_LEN + 12] + b[HEADER_LEN + 13 :],
        lambda b: b[:HEADER_LEN],
        lambda b: b"",
        lambda b: bytes([2]) + b[1:],
        lambda b: b + b"\x00",
        lambda b: b[:HEADER_LEN] + b"\x00" * (MAX_BLOB),
    ],
    ids=[
        "tag",
        "ciphertext",
        "dropped-byte",
        "header-only",
        "empty",
        "format",
        "appended",
        "oversize",
    ],
)
def test_restore_refuses_an_altered_blob(hsm: Runner, tamper: Callable[[bytes], bytes]) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        blob = await s.backups.backup("k1")
        await s.deleted.delete("k1")
        await s.deleted.purge("k1")
        with pytest.raises(BadParameter):
            await s.backups.restore(tamper(blob))
        assert await s.view.list_page("") == []

    hsm(body)


def test_restore_over_an_existing_or_deleted_name_is_a_conflict(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "oct"})
        blob = await s.backups.backup("k1")
        with pytest.raises(Conflict) as info:
            await s.backups.restore(blob)
        assert info.value.status == 409
        await s.keys.update("k1", None, {"tags": {"changed": "yes"}})
        await s.deleted.delete("k1")
        with pytest.raises(Conflict):
            await s.backups.restore(blob)
        await s.deleted.recover("k1")
        assert (await s.keys.get("k1")).tags == {"changed": "yes"}  # untouched
        assert (await s.keys.get("k1")).version == kv.version

    hsm(body)


def test_restore_over_a_name_another_partition_just_created(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        blob = await s.backups.backup("k1")
        await s.deleted.delete("k1")
        await s.deleted.purge("k1")
        peer = await s.peer()
        await s.keys.create("k1", {"kty": "oct"})  # the peer's watch has not seen it yet
        with pytest.raises(Conflict):
            await peer.backups.restore(blob)

    hsm(body)


def test_backup_of_a_missing_or_deleted_key(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(KeyNotFound):
            await s.backups.backup("nope")
        await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        with pytest.raises(KeyNotFound):
            await s.backups.backup("k1")

    hsm(body)
