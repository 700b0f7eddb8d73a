"""PrincipalStore: records, scrypt secret hashes, identity headers."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from openmhsm import errors
from openmhsm.services import principals as principals_module
from openmhsm.services.principals import PrincipalStore, identity_header
from openmhsm.storage.memory import MemoryStorage

T = TypeVar("T")
CHEAP_N = 2**4


class FakeClock:
    def now(self) -> float:
        return 1_700_000_000.5


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _store(storage: MemoryStorage | None = None, n: int = CHEAP_N) -> PrincipalStore:
    return PrincipalStore(storage or MemoryStorage(), FakeClock(), scrypt_n=n)


def test_create_returns_principal_and_secret() -> None:
    storage = MemoryStorage()
    store = _store(storage)
    principal, secret = run(store.create("app-1"))
    assert uuid.UUID(principal.client_id).version == 4
    assert uuid.UUID(principal.object_id).version == 4
    assert principal.client_id != principal.object_id
    assert (principal.name, principal.kind) == ("app-1", "service")
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    entry = run(storage.get(f"principals/{principal.client_id}"))
    assert entry is not None
    record = json.loads(entry.value)
    assert secret not in entry.value.decode()
    assert record["created"] == 1_700_000_000
    assert record["kind"] == "service"
    hashed = record["secret_hash"]
    assert (hashed["alg"], hashed["n"], hashed["r"], hashed["p"]) == ("scrypt", CHEAP_N, 8, 1)
    assert len(base64.b64decode(hashed["salt"])) == 16
    assert len(base64.b64decode(hashed["hash"])) == 32


def test_production_parameters() -> None:
    storage = MemoryStorage()
    store = PrincipalStore(storage, FakeClock())
    principal, secret = run(store.create("prod"))
    entry = run(storage.get(f"principals/{principal.client_id}"))
    assert entry is not None
    assert json.loads(entry.value)["secret_hash"]["n"] == 2**14
    assert run(store.authenticate(principal.client_id, secret)) == principal


def test_authenticate() -> None:
    store = _store()
    principal, secret = run(store.create("app-1"))
    assert run(store.authenticate(principal.client_id, secret)) == principal
    assert run(store.authenticate(principal.client_id.upper(), secret)) == principal
    assert run(store.authenticate(principal.client_id, secret + "x")) is None
    assert run(store.authenticate(principal.client_id, "")) is None
    assert run(store.authenticate(principal.client_id, "x" * 10_000)) is None
    assert run(store.authenticate(str(uuid.uuid4()), secret)) is None
    assert run(store.authenticate("../etc", secret)) is None


def test_unknown_client_costs_one_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store()
    principal, secret = run(store.create("app-1"))
    calls: list[int] = []
    real = principals_module._scrypt

    def counting(*args: Any) -> bytes:
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(principals_module, "_scrypt", counting)
    for client_id in (principal.client_id, str(uuid.uuid4()), "not-a-uuid"):
        calls.clear()
        run(store.authenticate(client_id, secret))
        assert calls == [CHEAP_N]


def test_stored_parameters_win_over_current() -> None:
    storage = MemoryStorage()
    principal, secret = run(_store(storage, n=2**5).create("old"))
    assert run(_store(storage, n=2**6).authenticate(principal.client_id, secret)) == principal


@pytest.mark.parametrize("name", ["", "a" * 65, "a b", "a/b", "é", "a,b", "x\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(errors.BadParameter):
        run(_store().create(name))


@pytest.mark.parametrize("name", ["a", "A" * 64, "my-app_1.prod"])
def test_valid_names(name: str) -> None:
    assert run(_store().create(name))[0].name == name


def test_invalid_kind() -> None:
    with pytest.raises(errors.BadParameter):
        run(_store().create("app", kind="user"))


def test_get_list_delete() -> None:
    store = _store()
    created = [
        run(store.create(f"app-{i}", kind="managed" if i % 2 else "service"))[0] for i in range(4)
    ]
    assert run(store.get(created[1].client_id)) == created[1]
    assert run(store.get(str(uuid.uuid4()))) is None
    assert run(store.get("nonsense")) is None
    assert run(store.list()) == sorted(created, key=lambda p: p.client_id)
    assert run(store.delete(created[0].client_id)) is True
    assert run(store.delete(created[0].client_id)) is False
    assert run(store.delete("nonsense")) is False
    assert run(store.get(created[0].client_id)) is None
    assert len(run(store.list())) == 3


def test_list_pages_through_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(principals_module, "_PAGE", 2)
    store = _store()
    created = sorted(
        (run(store.create(f"app-{i}"))[0] for i in range(5)), key=lambda p: p.client_id
    )
    assert run(store.list()) == created
    run(store.delete(created[-1].client_id))
    assert run(store.list()) == created[:-1]  # an exact multiple of the page size


def test_reset_secret() -> None:
    store = _store()
    principal, old = run(store.create("app-1"))
    new = run(store.reset_secret(principal.client_id))
    assert new != old
    assert run(store.authenticate(principal.client_id, old)) is None
    assert run(store.authenticate(principal.client_id, new)) == principal
    with pytest.raises(errors.NotFound):
        run(store.reset_secret(str(uuid.uuid4())))
    with pytest.raises(errors.NotFound):
        run(store.reset_secret("nonsense"))


def test_reset_secret_retries_on_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = MemoryStorage()
    store = _store(storage)
    principal, _ = run(store.create("app-1"))
    key = f"principals/{principal.client_id}"
    real_txn = storage.txn
    raced: list[bool] = []

    async def racing_txn(ops: Any) -> int:
        if not raced:  # a concurrent writer touches the record once, between read and write
            raced.append(True)
            entry = await storage.get(key)
            assert entry is not None
            await storage.put_if(key, entry.value, entry.mod_revision)
        return await real_txn(ops)

    monkeypatch.setattr(storage, "txn", racing_txn)
    new = run(store.reset_secret(principal.client_id))
    assert raced and run(store.authenticate(principal.client_id, new)) == principal
    assert run(storage.get(key)) is not None


def test_identity_header_round_trip() -> None:
    store = _store()
    principal, secret = run(store.create("mi-1", kind="managed"))
    header = identity_header(principal.client_id, secret)
    assert header == f"{principal.client_id}.{secret}"
    assert run(store.authenticate_identity_header(header)) == principal
    for bad in (
        "",
        principal.client_id,
        f"{principal.client_id}.",
        f".{secret}",
        f"{principal.client_id}.{secret}x",
        f"{uuid.uuid4()}.{secret}",
    ):
        assert run(store.authenticate_identity_header(bad)) is None


def test_unsupported_record_version_is_an_error() -> None:
    storage = MemoryStorage()
    client_id = str(uuid.uuid4())
    run(storage.put_if(f"principals/{client_id}", b'{"version":99}'))
    with pytest.raises(ValueError):
        run(_store(storage).get(client_id))
