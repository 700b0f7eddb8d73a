"""KeyService: versions and the current pointer, names, tags, key_ops, attributes, import,
listing, and concurrent writers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from openmhsm.crypto.jwk import b64u_encode, private_jwk
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter, KeyNotFound
from openmhsm.services import records
from openmhsm.services.key_cache import WRITE_RETRIES
from openmhsm.storage.base import Entry, TxnOp
from openmhsm.storage.memory import MemoryStorage

Runner = Callable[..., Any]
NOW = 1_700_000_000
VERSION = re.compile(r"^[0-9a-f]{32}$")
POLICY = {"data": b64u_encode(b'{"anyOf":[],"version":"1.0.0"}'), "immutable": False}


class YieldingStorage(MemoryStorage):
    """Memory storage that lets other tasks run before each call, as a networked store would."""

    async def get(self, key: str) -> Entry | None:
        await asyncio.sleep(0)
        return await super().get(key)

    async def list_page(
        self, prefix: str, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        await asyncio.sleep(0)
        return await super().list_page(prefix, start_after, limit)

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        await asyncio.sleep(0)
        return await super().txn(ops)


# --- versions and the current pointer -----------------------------------------------------


def test_create_makes_first_version_current(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "EC-HSM"})
        assert VERSION.match(kv.version)
        assert (kv.name, kv.kty, kv.material.crv) == ("k1", "EC-HSM", "P-256")
        assert (kv.attributes.created, kv.attributes.updated) == (NOW, NOW)
        assert kv.attributes.enabled and not kv.attributes.exportable
        assert await s.keys.get("k1") == kv
        assert await s.keys.get("k1", kv.version) == kv
        ptr, _ = s.cache.get(records.current_path("k1"))
        assert ptr.version == kv.version

    hsm(body)


def test_second_create_adds_a_version_and_moves_current(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        v1 = await s.keys.create("k1", {"kty": "oct-HSM"})
        s.clock.advance(10)
        v2 = await s.keys.create("k1", {"kty": "oct-HSM", "key_size": 128})
        assert v1.version != v2.version
        assert (await s.keys.get("k1")).version == v2.version
        old = await s.keys.get("k1", v1.version)
        assert old.material.size == 256 and old.attributes.created == NOW
        page = await s.keys.list_versions("k1", None, 25)
        assert sorted(v.version for v in page.items) == sorted([v1.version, v2.version])
        assert page.continue_after is None

    hsm(body)


@pytest.mark.parametrize(
    "version",
    ["0" * 32, "", "A" * 32, "nothex", "../x"],
    ids=["unknown", "empty-is-current", "upper", "nothex", "traversal"],
)
def test_get_unknown_version(hsm: Runner, version: str) -> None:
    async def body(s: Any) -> None:
        current = await s.keys.create("k1", {"kty": "oct"})
        if version == "":
            assert (await s.keys.get("k1", version)).version == current.version
            return
        with pytest.raises(KeyNotFound):
            await s.keys.get("k1", version)

    hsm(body)


def test_get_missing_key(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(KeyNotFound) as info:
            await s.keys.get("nope")
        assert info.value.status == 404 and "nope" in info.value.message

    hsm(body)


# --- names -----------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_keep_their_display_form(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        v1 = await s.keys.create("MyKey", {"kty": "oct"})
        assert (await s.keys.get("mykey")).version == v1.version
        assert (await s.keys.get("MYKEY", v1.version)).name == "MyKey"
        v2 = await s.keys.create("MYKEY", {"kty": "oct"})
        assert v2.name == "MyKey"  # the first spelling stays the display form
        assert s.cache.names() == ["mykey"]
        entries = await s.view.list_page("keys/")
        assert {e.key.split("/")[1] for e in entries} == {"mykey"}
        listed = s.keys.list_keys(None, 25)
        assert [kv.name for kv in listed.items] == ["MyKey"]
        assert listed.items[0].version == v2.version

    hsm(body)


@pytest.mark.parametrize(
    "name", ["", "a_b", "a.b", "a b", "a" * 128, "ключ", "a/b", "%41"], ids=repr
)
def test_invalid_names_are_refused(hsm: Runner, name: str) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create(name, {"kty": "oct"})
        with pytest.raises(BadParameter):
            await s.keys.get(name)

    hsm(body)


def test_longest_name_is_accepted(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("A-9" + "z" * 124, {"kty": "oct"})
        assert len(kv.name) == 127

    hsm(body)


def test_name_with_trailing_newline_is_refused(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create("abc\n", {"kty": "oct"})

    hsm(body)


# --- tags ------------------------------------------------------------------------------------


def test_fifteen_tags_are_allowed_sixteen_are_not(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        tags = {f"t{i}": str(i) for i in range(15)}
        kv = await s.keys.create("k1", {"kty": "oct", "tags": tags})
        assert dict(kv.tags) == tags
        with pytest.raises(BadParameter):
            await s.keys.create("k2", {"kty": "oct", "tags": {**tags, "t15": "x"}})
        with pytest.raises(BadParameter):
            await s.keys.update("k1", None, {"tags": {**tags, "t15": "x"}})
        assert dict((await s.keys.get("k1")).tags) == tags

    hsm(body)


@pytest.mark.parametrize(
    "tags",
    [["a"], {"a": 1}, {"a": None}, {"": "x"}, {"a" * 513: "x"}, {"a": "x" * 257}, "a=b"],
    ids=["list", "int", "null", "empty-name", "long-name", "long-value", "string"],
)
def test_bad_tags_are_refused(hsm: Runner, tags: Any) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create("k1", {"kty": "oct", "tags": tags})
        assert s.cache.names() == []

    hsm(body)


def test_update_replaces_tags(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct", "tags": {"a": "1", "b": "2"}})
        kv = await s.keys.update("k1", None, {"tags": {"c": "3"}})
        assert dict(kv.tags) == {"c": "3"}
        kv = await s.keys.update("k1", None, {"attributes": {"enabled": False}})
        assert dict(kv.tags) == {"c": "3"}  # absent tags leave them unchanged

    hsm(body)


# --- key types, key_ops and parameters -----------------------------------------------------


@pytest.mark.parametrize(
    ("kty", "expected"),
    [
        ("EC", ("sign", "verify")),
        ("EC-HSM", ("sign", "verify")),
        ("oct", ("encrypt", "decrypt", "wrapKey", "unwrapKey")),
        ("oct-HSM", ("encrypt", "decrypt", "wrapKey", "unwrapKey")),
    ],
)
def test_default_key_ops_per_kty(hsm: Runner, kty: str, expected: tuple[str, ...]) -> None:
    async def body(s: Any) -> None:
        assert (await s.keys.create("k1", {"kty": kty})).key_ops == expected

    hsm(body)


def test_rsa_defaults(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("r1", {"kty": "RSA-HSM"})
        assert kv.key_ops == ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
        assert kv.material.size == 2048
        assert kv.material.private.public_key().public_numbers().e == 65537
        with pytest.raises(BadParameter):
            await s.keys.create("r2", {"kty": "RSA-HSM", "key_size": 1024})
        with pytest.raises(BadParameter):
            await s.keys.create("r2", {"kty": "RSA-HSM", "crv": "P-256"})

    hsm(body)


@pytest.mark.parametrize(
    ("kty", "key_ops"),
    [
        ("EC", ["encrypt"]),
        ("EC", ["wrapKey"]),
        ("EC", ["sign", "decrypt"]),
        ("oct", ["bogus"]),
        ("oct", ["Sign"]),
        ("oct", "encrypt"),
        ("oct", [1]),
        ("EC", {"sign": True}),
    ],
)
def test_key_ops_are_validated_per_kty(hsm: Runner, kty: str, key_ops: Any) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create("k1", {"kty": kty, "key_ops": key_ops})

    hsm(body)


def test_key_ops_keep_order_and_drop_duplicates(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", {"kty": "EC", "key_ops": ["verify", "sign", "verify"]})
        assert kv.key_ops == ("verify", "sign")
        kv = await s.keys.update("k1", None, {"key_ops": ["sign"]})
        assert kv.key_ops == ("sign",)
        with pytest.raises(BadParameter):
            await s.keys.update("k1", None, {"key_ops": ["encrypt"]})

    hsm(body)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"kty": "EC-HSM2"},
        {"kty": "ec"},
        {"kty": None},
        {"kty": 1},
        {"kty": "oct", "crv": "P-256"},
        {"kty": "oct", "key_size": 512},
        {"kty": "oct", "key_size": "256"},
        {"kty": "oct", "key_size": True},
        {"kty": "oct", "public_exponent": 65537},
        {"kty": "EC", "key_size": 256},
        {"kty": "EC", "crv": "P-999"},
        {"kty": "EC", "crv": 256},
        {"kty": "EC", "public_exponent": 3},
        {"kty": "oct", "attributes": []},
        {"kty": "oct", "attributes": {"enabled": "yes"}},
        {"kty": "oct", "attributes": {"nbf": "1700000000"}},
        {"kty": "oct", "attributes": {"exp": -1}},
        {"kty": "oct", "attributes": {"exp": True}},
        {"kty": "oct", "release_policy": "x"},
        {"kty": "oct", "release_policy": {"data": "not base64!"}},
    ],
    ids=repr,
)
def test_bad_create_parameters(hsm: Runner, params: dict[str, Any]) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create("k1", params)
        assert s.cache.names() == []

    hsm(body)


@pytest.mark.parametrize(
    ("params", "size", "crv"),
    [
        ({"kty": "oct-HSM", "key_size": 128}, 128, None),
        ({"kty": "oct-HSM", "key_size": 192}, 192, None),
        ({"kty": "EC-HSM", "crv": "P-384"}, 384, "P-384"),
        ({"kty": "EC-HSM", "crv": "P-521"}, 521, "P-521"),
        ({"kty": "EC-HSM", "crv": "P-256K"}, 256, "P-256K"),
    ],
)
def test_sizes_and_curves(hsm: Runner, params: dict[str, Any], size: int, crv: str | None) -> None:
    async def body(s: Any) -> None:
        kv = await s.keys.create("k1", params)
        assert (kv.material.size, kv.material.crv) == (size, crv)

    hsm(body)


# --- attributes and release policy -----------------------------------------------------------


def test_attributes_are_stored(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        attrs = {"enabled": False, "nbf": NOW + 5, "exp": NOW + 50.9}
        kv = await s.keys.create("k1", {"kty": "oct", "attributes": attrs})
        a = kv.attributes
        assert (a.enabled, a.nbf, a.exp) == (False, NOW + 5, NOW + 50)

    hsm(body)


def test_exportable_requires_a_release_policy(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.create("k1", {"kty": "EC", "attributes": {"exportable": True}})
        kv = await s.keys.create(
            "k1", {"kty": "EC", "attributes": {"exportable": True}, "release_policy": POLICY}
        )
        assert kv.attributes.exportable
        assert kv.release_policy == {
            "contentType": "application/json; charset=utf-8",
            "immutable": False,
            "data": POLICY["data"],
        }

    hsm(body)


def test_update_changes_attributes_and_keeps_created(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct", "attributes": {"nbf": NOW + 1}})
        s.clock.advance(100)
        kv = await s.keys.update("k1", None, {"attributes": {"enabled": False, "exp": NOW + 1000}})
        a = kv.attributes
        assert (a.enabled, a.nbf, a.exp) == (False, NOW + 1, NOW + 1000)
        assert (a.created, a.updated) == (NOW, NOW + 100)
        kv = await s.keys.update("k1", None, {"attributes": {"nbf": None}})
        assert kv.attributes.nbf is None and not kv.attributes.enabled
        assert await s.keys.get("k1") == kv

    hsm(body)


def test_update_of_an_older_version_keeps_current(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        v1 = await s.keys.create("k1", {"kty": "oct"})
        v2 = await s.keys.create("k1", {"kty": "oct"})
        kv = await s.keys.update("k1", v1.version, {"attributes": {"enabled": False}})
        assert kv.version == v1.version and not kv.attributes.enabled
        current = await s.keys.get("k1")
        assert current.version == v2.version and current.attributes.enabled

    hsm(body)


def test_update_refuses_exportable_change(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        with pytest.raises(BadParameter):
            await s.keys.update("k1", None, {"attributes": {"exportable": True}})
        kv = await s.keys.update("k1", None, {"attributes": {"exportable": False}})
        assert not kv.attributes.exportable

    hsm(body)


def test_immutable_release_policy_cannot_be_updated(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        params = {"kty": "EC", "attributes": {"exportable": True}, "release_policy": POLICY}
        await s.keys.create("k1", params)
        replaced = {**POLICY, "data": b64u_encode(b'{"version":"1.0.0"}')}
        kv = await s.keys.update("k1", None, {"release_policy": replaced})
        assert kv.release_policy is not None and kv.release_policy["data"] == replaced["data"]
        kv = await s.keys.update("k1", None, {"release_policy": {**replaced, "immutable": True}})
        assert kv.release_policy is not None and kv.release_policy["immutable"] is True
        with pytest.raises(BadParameter, match="Immutable"):
            await s.keys.update("k1", None, {"release_policy": POLICY})
        assert (await s.keys.get("k1")).release_policy == kv.release_policy

    hsm(body)


def test_update_missing_key(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(KeyNotFound):
            await s.keys.update("nope", None, {"tags": {}})
        await s.keys.create("k1", {"kty": "oct"})
        with pytest.raises(KeyNotFound):
            await s.keys.update("k1", "0" * 32, {"tags": {}})

    hsm(body)


# --- import ----------------------------------------------------------------------------------


def test_import_oct_and_ec(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        k = bytes(range(32))
        kv = await s.keys.import_key(
            "imp", {"key": {"kty": "oct", "k": b64u_encode(k), "key_ops": ["wrapKey"]}}
        )
        assert (kv.kty, kv.material.private, kv.key_ops) == ("oct", k, ("wrapKey",))
        kv = await s.keys.import_key(
            "imp", {"key": {"kty": "oct", "k": b64u_encode(k)}, "Hsm": True, "tags": {"a": "b"}}
        )
        assert kv.kty == "oct-HSM" and dict(kv.tags) == {"a": "b"}
        assert kv.key_ops == ("encrypt", "decrypt", "wrapKey", "unwrapKey")
        material = generate_key("EC", crv="P-384")
        kv = await s.keys.import_key("imp-ec", {"key": private_jwk(material)})
        assert isinstance(kv.material.private, ec.EllipticCurvePrivateKey)
        assert kv.material.crv == "P-384" and kv.key_ops == ("sign", "verify")

    hsm(body)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"key": {}},
        {"key": "x"},
        {"key": {"kty": "oct"}},
        {"key": {"kty": "oct", "k": b64u_encode(b"short")}},
        {"key": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
        {"key": {"kty": "oct", "k": b64u_encode(bytes(32))}, "Hsm": "yes"},
        {"key": {"kty": "oct", "k": b64u_encode(bytes(32)), "key_ops": ["sign", 7]}},
        {"key": {"kty": "oct", "k": b64u_encode(bytes(32))}, "attributes": {"exportable": True}},
    ],
    ids=repr,
)
def test_bad_imports(hsm: Runner, params: dict[str, Any]) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(BadParameter):
            await s.keys.import_key("imp", params)

    hsm(body)


# --- listing ---------------------------------------------------------------------------------


def test_list_keys_pages_in_name_order(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        for name in ["e", "B", "a", "D", "c"]:
            await s.keys.create(name, {"kty": "oct"})
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            page = s.keys.list_keys(after, 2)
            seen += [kv.name for kv in page.items]
            pages += 1
            if page.continue_after is None:
                break
            after = page.continue_after
        assert seen == ["a", "B", "c", "D", "e"]
        assert pages == 3

    hsm(body)


def test_list_versions_pages(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        made = {(await s.keys.create("k1", {"kty": "oct"})).version for _ in range(5)}
        seen: list[str] = []
        after = None
        while True:
            page = await s.keys.list_versions("K1", after, 2)
            assert len(page.items) <= 2
            seen += [kv.version for kv in page.items]
            if page.continue_after is None:
                break
            after = page.continue_after
        assert seen == sorted(made)
        with pytest.raises(KeyNotFound):
            await s.keys.list_versions("nope", None, 2)

    hsm(body)


# --- concurrency -----------------------------------------------------------------------------


def _concurrent_creates(hsm: Runner, n: int) -> None:
    async def body(s: Any) -> None:
        results = await asyncio.gather(
            *(s.keys.create("hot", {"kty": "oct", "tags": {"i": str(i)}}) for i in range(n))
        )
        versions = {kv.version for kv in results}
        assert len(versions) == n
        page = await s.keys.list_versions("hot", None, 25)
        assert {kv.version for kv in page.items} == versions
        current = await s.keys.get("hot")
        assert current.version in versions
        # Every create moved `current` once: the last committed write holds it.
        entry = await s.view.get(records.current_path("hot"))
        assert records.load_current(entry.value).version == current.version

    hsm(body, storage=YieldingStorage())


def test_concurrent_creates_on_one_name_all_succeed(hsm: Runner) -> None:
    _concurrent_creates(hsm, WRITE_RETRIES)


def test_more_concurrent_creates_than_retries(hsm: Runner) -> None:
    _concurrent_creates(hsm, 2 * WRITE_RETRIES)


def test_a_retried_create_returns_the_version_it_made(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        first = await s.keys.create("k1", {"kty": "oct"}, "req-1")
        again = await s.keys.create("k1", {"kty": "oct"}, "req-1")
        other = await s.keys.create("k1", {"kty": "oct"}, "req-2")
        assert again.version == first.version
        assert other.version != first.version
        page = await s.keys.list_versions("k1", None, 25)
        assert len(page.items) == 2

    hsm(body)
