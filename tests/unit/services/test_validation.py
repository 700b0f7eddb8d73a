"""validation: names, versions, key types, tags, key_ops, attributes, release policies."""

from __future__ import annotations

from typing import Any

import pytest

from openmhsm.crypto.jwk import b64u_encode
from openmhsm.errors import BadParameter
from openmhsm.services import validation as v


@pytest.mark.parametrize("name", ["a", "A", "0", "-", "my-Key-01", "x" * 127])
def test_good_names(name: str) -> None:
    assert v.check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 128, "a_b", "a.b", "a b", "a/b", "é", "\u0661", "a\tb", "\na"], ids=repr
)
def test_bad_names(name: str) -> None:
    with pytest.raises(BadParameter) as info:
        v.check_name(name)
    assert info.value.inner_code == "InvalidKeyName"


def test_versions() -> None:
    assert v.check_version("0123456789abcdef" * 2) == "0123456789abcdef" * 2
    for bad in ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32]:
        with pytest.raises(BadParameter):
            v.check_version(bad)


@pytest.mark.parametrize(
    ("kty", "base"),
    [
        ("RSA", "RSA"),
        ("RSA-HSM", "RSA"),
        ("EC", "EC"),
        ("EC-HSM", "EC"),
        ("oct", "oct"),
        ("oct-HSM", "oct"),
    ],
)
def test_key_types(kty: str, base: str) -> None:
    assert v.base_kty(kty) == base


@pytest.mark.parametrize("kty", ["OCT", "rsa", "oct-hsm", "EC-HSM ", "", None, 1, ["EC"]])
def test_bad_key_types(kty: Any) -> None:
    with pytest.raises(BadParameter) as info:
        v.base_kty(kty)
    assert info.value.inner_code == "KeyTypeNotSupported"


def test_tags() -> None:
    assert v.check_tags(None) == {}
    fifteen = {str(i): "v" * 256 for i in range(15)}
    assert v.check_tags(fifteen) == fifteen
    assert v.check_tags({"n" * 512: ""}) == {"n" * 512: ""}
    with pytest.raises(BadParameter, match="15"):
        v.check_tags({**fifteen, "16": "x"})


@pytest.mark.parametrize(
    "tags",
    [[], "x", {"a": 1}, {"a": None}, {"a": ["b"]}, {"": "x"}, {"n" * 513: "x"}, {"a": "v" * 257}],
    ids=repr,
)
def test_bad_tags(tags: Any) -> None:
    with pytest.raises(BadParameter):
        v.check_tags(tags)


def test_key_ops_defaults_and_allowed_sets() -> None:
    assert v.check_key_ops(None, "EC") == ("sign", "verify")
    assert v.check_key_ops(None, "oct") == ("encrypt", "decrypt", "wrapKey", "unwrapKey")
    assert v.check_key_ops(None, "RSA") == (
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "wrapKey",
        "unwrapKey",
    )
    assert v.check_key_ops([], "EC") == ()
    assert v.check_key_ops(list(v.ALL_KEY_OPS), "RSA") == v.ALL_KEY_OPS
    assert v.check_key_ops(["import", "export", "sign"], "EC") == ("import", "export", "sign")
    for op in ("encrypt", "decrypt", "wrapKey", "unwrapKey"):
        with pytest.raises(BadParameter):
            v.check_key_ops([op], "EC")


@pytest.mark.parametrize("key_ops", ["sign", ["sign", None], [["sign"]], {"sign": 1}, ["SIGN"]])
def test_bad_key_ops(key_ops: Any) -> None:
    with pytest.raises(BadParameter):
        v.check_key_ops(key_ops, "RSA")


def test_optional_int() -> None:
    assert v.optional_int(None, "nbf") is None
    assert v.optional_int(0, "nbf") == 0
    assert v.optional_int(1700000000.9, "nbf") == 1700000000
    assert v.optional_int(253402300799, "exp") == 253402300799


@pytest.mark.parametrize(
    "value", [True, False, "1", -1, 253402300800, float("nan"), float("inf"), [1], {}], ids=repr
)
def test_bad_optional_int(value: Any) -> None:
    with pytest.raises(BadParameter):
        v.optional_int(value, "exp")


def test_optional_bool_and_object() -> None:
    assert v.optional_bool(None, "f") is None
    assert v.optional_bool(False, "f") is False
    for bad in (0, 1, "true", [], {}):
        with pytest.raises(BadParameter):
            v.optional_bool(bad, "f")
    assert v.check_object(None, "f") == {}
    assert v.check_object({"a": 1}, "f") == {"a": 1}
    for bad in ([], "x", 1, True):
        with pytest.raises(BadParameter):
            v.check_object(bad, "f")


def test_release_policy() -> None:
    data = b64u_encode(b'{"version":"1.0.0"}')
    assert v.check_release_policy(None) is None
    assert v.check_release_policy({"data": data}) == {
        "contentType": "application/json; charset=utf-8",
        "immutable": False,
        "data": data,
    }
    assert v.check_release_policy(
        {"data": data, "immutable": True, "contentType": "application/json"}
    ) == {"contentType": "application/json", "immutable": True, "data": data}
    assert v.check_release_policy({})["data"] is None


@pytest.mark.parametrize(
    "policy",
    [
        "x",
        [],
        {"data": 1},
        {"data": "a+b/"},
        {"data": "a"},
        {"contentType": 5},
        {"immutable": "yes"},
    ],
    ids=repr,
)
def test_bad_release_policies(policy: Any) -> None:
    with pytest.raises(BadParameter):
        v.check_release_policy(policy)
