"""A principal made with given credentials: the bootstrap administrator `mhsm deploy init`
writes into pool.json before the pool exists, and partition 0 creates on its first start."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from openmhsm.services.principals import PrincipalStore
from openmhsm.storage.memory import MemoryStorage


class FakeClock:
    def now(self) -> float:
        return 1_700_000_000.5


def test_a_preset_principal_keeps_its_ids_and_secret() -> None:
    preset = {
        "client_id": str(uuid.uuid4()),
        "object_id": str(uuid.uuid4()),
        "client_secret": "s3cret-made-ahead",
    }

    async def scenario() -> None:
        store = PrincipalStore(MemoryStorage(), FakeClock(), scrypt_n=2**4)
        principal, secret = await store.create("admin", preset=preset)
        assert (principal.client_id, principal.object_id) == (
            preset["client_id"],
            preset["object_id"],
        )
        assert secret == preset["client_secret"]
        assert await store.authenticate(preset["client_id"], preset["client_secret"]) is not None
        assert await store.authenticate(preset["client_id"], "another") is None

    asyncio.run(scenario())


def test_a_preset_client_id_must_be_a_uuid() -> None:
    store = PrincipalStore(MemoryStorage(), FakeClock(), scrypt_n=2**4)
    with pytest.raises(ValueError):
        asyncio.run(store.create("admin", preset={"client_id": "not-a-uuid"}))
