"""crypto/jwk.py: base64url, KeyMaterial, public/private JWK export and JWK import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmhsm.crypto.jwk import (
    KeyMaterial,
    b64u_decode,
    b64u_encode,
    from_jwk,
    int_to_b64u,
    private_jwk,
    public_jwk,
)
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "crypto"
RSA_PRIVATE_FIELDS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rsa_jwk() -> dict[str, str]:
    return private_jwk(generate_key("RSA"))


# --- base64url -------------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(0, 7))
def test_b64u_round_trip_without_padding(length: int) -> None:
    data = bytes(range(250, 250 - length, -1))
    text = b64u_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64u_decode(text) == data


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("", b""),
        ("QQ", b"A"),
        ("QQ==", b"A"),
        ("QUI=", b"AB"),
        ("-_8", b"\xfb\xff"),
        ("AQAB", b"\x01\x00\x01"),
    ],
)
def test_b64u_decode_accepts_with_or_without_padding(text: str, data: bytes) -> None:
    assert b64u_decode(text) == data


@pytest.mark.parametrize(
    "text",
    ["+/8=", "ab/c", "a b", "QQ=", "QQ===", "Q", "QUJDR", "Q=Q=", "====", "QQ\n", "é"],
)
def test_b64u_decode_rejects_malformed_input(text: str) -> None:
    with pytest.raises(BadParameter):
        b64u_decode(text)


def test_b64u_decode_rejects_non_string() -> None:
    with pytest.raises(BadParameter):
        b64u_decode(b"QQ")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "text"), [(0, "AA"), (1, "AQ"), (255, "_w"), (256, "AQA"), (65537, "AQAB")]
)
def test_int_to_b64u_is_minimal_big_endian(n: int, text: str) -> None:
    assert int_to_b64u(n) == text


def test_int_to_b64u_rejects_negative() -> None:
    with pytest.raises(BadParameter):
        int_to_b64u(-1)


# --- KeyMaterial -----------------------------------------------------------------------------


def test_key_material_repr_hides_the_key() -> None:
    km = KeyMaterial("oct", b"\x42" * 32)
    assert "42" not in repr(km) and "B" * 4 not in repr(km)


def test_key_material_derives_and_checks_the_curve() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    assert KeyMaterial("EC", key).crv == "P-384"
    assert KeyMaterial("EC", key, "P-384").size == 384
    with pytest.raises(BadParameter):
        KeyMaterial("EC", key, "P-256")


@pytest.mark.parametrize(
    ("kty", "private", "crv"),
    [
        ("RSA", b"\x00" * 16, None),
        ("oct", b"", None),
        ("oct", b"k" * 16, "P-256"),
        ("EC", b"k" * 16, None),
        ("XYZ", b"k" * 16, None),
    ],
)
def test_key_material_rejects_mismatched_parts(kty: Any, private: Any, crv: str | None) -> None:
    with pytest.raises(BadParameter):
        KeyMaterial(kty, private, crv)


def test_key_material_size() -> None:
    assert KeyMaterial("oct", b"k" * 24).size == 192
    assert KeyMaterial("EC", ec.generate_private_key(ec.SECP521R1())).size == 521


# --- public/private export -------------------------------------------------------------------


def test_public_jwk_of_oct_never_contains_k() -> None:
    assert public_jwk(generate_key("oct")) == {"kty": "oct"}


def test_rsa_public_and_private_jwk(rsa_jwk: dict[str, str]) -> None:
    km = from_jwk(rsa_jwk)
    assert public_jwk(km) == {"kty": "RSA", "n": rsa_jwk["n"], "e": "AQAB"}
    assert set(private_jwk(km)) == {"kty", *RSA_PRIVATE_FIELDS}


@pytest.mark.parametrize(
    ("crv", "size"), [("P-256", 32), ("P-256K", 32), ("P-384", 48), ("P-521", 66)]
)
def test_ec_jwk_coordinates_are_fixed_length(crv: str, size: int) -> None:
    jwk = private_jwk(generate_key("EC", crv=crv))
    assert jwk["crv"] == crv
    assert [len(b64u_decode(jwk[f])) for f in ("x", "y", "d")] == [size] * 3
    assert private_jwk(from_jwk(jwk)) == jwk


def test_ec_public_jwk_keeps_leading_zero_bytes() -> None:
    # Find a P-256 key whose x coordinate has a leading zero byte (about 1 in 256).
    scalar = next(
        d
        for d in range(1, 5000)
        if ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers().x < 2**248
    )
    km = KeyMaterial("EC", ec.derive_private_key(scalar, ec.SECP256R1()))
    x = b64u_decode(public_jwk(km)["x"])
    assert len(x) == 32 and x[0] == 0


# --- import: RFC examples --------------------------------------------------------------------


def test_rfc7517_a2_private_keys_import_and_export_unchanged() -> None:
    for jwk in load("rfc7517_a2_private_keys.json")["keys"]:
        km = from_jwk(jwk)
        exported = private_jwk(km)
        assert {k: v for k, v in exported.items() if k != "kty"} == {
            k: jwk[k] for k in exported if k != "kty"
        }


def test_rfc7517_a3_symmetric_keys() -> None:
    aes_key, hmac_key = load("rfc7517_a3_symmetric_keys.json")["keys"]
    assert from_jwk(aes_key).size == 128
    with pytest.raises(BadParameter, match="oct key size 512"):
        from_jwk(hmac_key)  # Managed HSM oct keys are AES sizes only


def test_rfc7517_b_public_key_is_refused() -> None:
    with pytest.raises(BadParameter, match="private key material is required"):
        from_jwk(load("rfc7517_b_x5c_public_key.json"))


@pytest.mark.parametrize("section", ["3.2", "3.4", "3.5", "5.1", "5.2", "5.6", "5.8"])
def test_rfc7520_keys_import(section: str) -> None:
    jwk = load("rfc7520_examples.json")["keys"][section]
    public = public_jwk(from_jwk(jwk))
    assert all(public[f] == jwk[f] for f in public)


# --- import: kty, RSA, EC, oct rules ---------------------------------------------------------


@pytest.mark.parametrize("kty", ["RSA-HSM", "RSA"])
def test_kty_with_or_without_hsm_suffix(kty: str, rsa_jwk: dict[str, str]) -> None:
    assert from_jwk({**rsa_jwk, "kty": kty}).kty == "RSA"


@pytest.mark.parametrize("kty", [None, "rsa", "OKP", "oct-hsm", 3])
def test_unknown_kty_is_refused(kty: object, rsa_jwk: dict[str, str]) -> None:
    with pytest.raises(BadParameter):
        from_jwk({**rsa_jwk, "kty": kty})


def test_rsa_primes_are_recovered_when_absent(rsa_jwk: dict[str, str]) -> None:
    minimal = {k: rsa_jwk[k] for k in ("kty", "n", "e", "d")}
    assert private_jwk(from_jwk(minimal)) == rsa_jwk


def test_rsa_crt_values_are_computed_when_absent(rsa_jwk: dict[str, str]) -> None:
    partial = {k: v for k, v in rsa_jwk.items() if k not in ("dp", "dq", "qi")}
    assert private_jwk(from_jwk(partial)) == rsa_jwk


@pytest.mark.parametrize("field", ["d", "p", "qi", "dp", "e"])
def test_rsa_inconsistent_components_are_refused(field: str, rsa_jwk: dict[str, str]) -> None:
    value = int.from_bytes(b64u_decode(rsa_jwk[field]), "big") + 2
    with pytest.raises(BadParameter) as err:
        from_jwk({**rsa_jwk, field: int_to_b64u(value)})
    assert rsa_jwk["d"] not in err.value.message and rsa_jwk["p"] not in err.value.message


def test_trusted_import_skips_only_the_expensive_check(rsa_jwk: dict[str, str]) -> None:
    assert private_jwk(from_jwk(rsa_jwk, trusted=True)) == rsa_jwk
    with pytest.raises(BadParameter, match="private key material is required"):
        from_jwk({"kty": "RSA", "n": rsa_jwk["n"], "e": "AQAB"}, trusted=True)
    with pytest.raises(BadParameter, match="RSA key size"):
        from_jwk({**rsa_jwk, "n": int_to_b64u(2**1023 + 1)}, trusted=True)


def test_rsa_size_outside_managed_hsm_range_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(BadParameter, match="RSA key size 1024"):
        from_jwk(private_jwk(KeyMaterial("RSA", small)))


@pytest.mark.parametrize("missing", ["n", "e"])
def test_rsa_requires_n_and_e(missing: str, rsa_jwk: dict[str, str]) -> None:
    with pytest.raises(BadParameter):
        from_jwk({k: v for k, v in rsa_jwk.items() if k != missing})


@pytest.mark.parametrize("kty", ["RSA", "EC", "oct"])
def test_public_only_jwk_is_refused(kty: str, rsa_jwk: dict[str, str]) -> None:
    km = from_jwk(rsa_jwk) if kty == "RSA" else generate_key(kty)
    with pytest.raises(BadParameter, match="private key material is required"):
        from_jwk(public_jwk(km))


@pytest.mark.parametrize("crv", ["SECP256K1", "P-256K"])
def test_secp256k1_alias(crv: str) -> None:
    jwk = private_jwk(generate_key("EC-HSM", crv="P-256K"))
    assert from_jwk({**jwk, "crv": crv}).crv == "P-256K"


@pytest.mark.parametrize("crv", [None, "P-192", "p-256", "Ed25519", 256])
def test_unsupported_curve_is_refused(crv: object) -> None:
    jwk = private_jwk(generate_key("EC"))
    with pytest.raises(BadParameter):
        from_jwk({**jwk, "crv": crv})


def test_ec_point_must_match_d() -> None:
    jwk = private_jwk(generate_key("EC"))
    other = private_jwk(generate_key("EC"))
    with pytest.raises(BadParameter, match="does not match"):
        from_jwk({**jwk, "x": other["x"], "y": other["y"]})


def test_ec_point_is_derived_when_absent() -> None:
    jwk = private_jwk(generate_key("EC", crv="P-384"))
    assert private_jwk(from_jwk({"kty": "EC", "crv": "P-384", "d": jwk["d"]})) == jwk


@pytest.mark.parametrize(
    "change",
    [
        {"x": None},
        {"d": int_to_b64u(0)},
        {"d": b64u_encode(b"\xff" * 32)},
        {"d": b64u_encode(b"\x01" * 33)},
        {"x": b64u_encode(b"\x01" * 33)},
    ],
)
def test_ec_malformed_fields_are_refused(change: dict[str, str | None]) -> None:
    jwk: dict[str, object] = dict(private_jwk(generate_key("EC")))
    for name, value in change.items():
        if value is None:
            del jwk[name]
        else:
            jwk[name] = value
    with pytest.raises(BadParameter):
        from_jwk(jwk)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_oct_sizes_accepted(size: int) -> None:
    km = from_jwk({"kty": "oct-HSM", "k": b64u_encode(b"\x07" * size)})
    assert km.private == b"\x07" * size


@pytest.mark.parametrize("size", [1, 8, 20, 64])
def test_oct_other_sizes_refused(size: int) -> None:
    with pytest.raises(BadParameter):
        from_jwk({"kty": "oct", "k": b64u_encode(b"\x07" * size)})


@pytest.mark.parametrize("value", [12345, ["AQAB"], "AQ+B", "", None])
def test_malformed_field_values_are_refused(value: object, rsa_jwk: dict[str, str]) -> None:
    with pytest.raises(BadParameter):
        from_jwk({**rsa_jwk, "n": value})


def test_jwk_must_be_a_mapping() -> None:
    with pytest.raises(BadParameter):
        from_jwk(["kty", "RSA"])  # type: ignore[arg-type]


def test_error_messages_never_quote_key_material(rsa_jwk: dict[str, str]) -> None:
    secret = b64u_encode(b"\x5a" * 20)
    for bad in ({"kty": "oct", "k": secret}, {**rsa_jwk, "d": rsa_jwk["p"]}):
        with pytest.raises(BadParameter) as err:
            from_jwk(bad)
        assert secret not in str(err.value) and rsa_jwk["p"] not in str(err.value)
