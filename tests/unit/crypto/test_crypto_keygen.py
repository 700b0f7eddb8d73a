"""crypto/keygen.py: sizes, curves, exponents and defaults of generate_key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmhsm.crypto.jwk import KeyMaterial
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter


@pytest.fixture(scope="module")
def default_rsa() -> KeyMaterial:
    return generate_key("RSA-HSM")


def test_rsa_defaults(default_rsa: KeyMaterial) -> None:
    assert default_rsa.kty == "RSA" and default_rsa.size == 2048
    assert isinstance(default_rsa.private, rsa.RSAPrivateKey)
    assert default_rsa.private.public_key().public_numbers().e == 65537


@pytest.mark.parametrize("size", [3072, 4096])  # each generated once in the whole suite
def test_rsa_larger_sizes(size: int) -> None:
    assert generate_key("RSA", size=size).size == size


def test_rsa_public_exponent_3() -> None:
    km = generate_key("RSA", public_exponent=3)
    assert isinstance(km.private, rsa.RSAPrivateKey)
    assert km.private.public_key().public_numbers().e == 3


@pytest.mark.parametrize("size", [1024, 1000, 2047, 8192, 0, -2048])
def test_rsa_invalid_size(size: int) -> None:
    with pytest.raises(BadParameter, match=f"Invalid key_size {size} for RSA-HSM: allowed 2048"):
        generate_key("RSA-HSM", size=size)


@pytest.mark.parametrize("exponent", [1, 2, 4, 5, 17, 65536, 2**31 + 1])
def test_rsa_invalid_public_exponent(exponent: int) -> None:
    with pytest.raises(BadParameter, match="public_exponent"):
        generate_key("RSA", public_exponent=exponent)


def test_ec_defaults_to_p256() -> None:
    km = generate_key("EC-HSM")
    assert (km.kty, km.crv, km.size) == ("EC", "P-256", 256)


@pytest.mark.parametrize(
    ("crv", "curve", "size"),
    [
        ("P-256", ec.SECP256R1, 256),
        ("P-256K", ec.SECP256K1, 256),
        ("SECP256K1", ec.SECP256K1, 256),
        ("P-384", ec.SECP384R1, 384),
        ("P-521", ec.SECP521R1, 521),
    ],
)
def test_ec_curves(crv: str, curve: type[ec.EllipticCurve], size: int) -> None:
    km = generate_key("EC", crv=crv)
    assert isinstance(km.private, ec.EllipticCurvePrivateKey)
    assert isinstance(km.private.curve, curve)
    assert km.size == size
    assert generate_key("EC", crv=crv, size=size).size == size


@pytest.mark.parametrize("crv", ["P-192", "P-224", "secp256r1", "Ed25519", ""])
def test_ec_invalid_curve(crv: str) -> None:
    with pytest.raises(BadParameter, match="crv"):
        generate_key("EC", crv=crv)


def test_ec_size_must_match_curve() -> None:
    with pytest.raises(BadParameter, match="key_size 384"):
        generate_key("EC", crv="P-256", size=384)


def test_oct_defaults_to_256_random_bits() -> None:
    first, second = generate_key("oct-HSM"), generate_key("oct-HSM")
    assert first.size == 256 and first.private != second.private


@pytest.mark.parametrize("size", [128, 192, 256])
def test_oct_sizes(size: int) -> None:
    assert generate_key("oct", size=size).size == size


@pytest.mark.parametrize("size", [64, 512, 129, 0])
def test_oct_invalid_size(size: int) -> None:
    with pytest.raises(BadParameter, match=f"Invalid key_size {size} for oct-HSM"):
        generate_key("oct-HSM", size=size)


@pytest.mark.parametrize(
    ("kty", "kwargs"),
    [
        ("RSA", {"crv": "P-256"}),
        ("EC", {"public_exponent": 65537}),
        ("oct", {"crv": "P-256"}),
        ("oct", {"public_exponent": 3}),
    ],
)
def test_parameters_of_another_key_type_are_refused(kty: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(BadParameter, match="is not valid for key type"):
        generate_key(kty, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kty", ["rsa", "AES", "OKP", "RSA-hsm", ""])
def test_unknown_kty(kty: str) -> None:
    with pytest.raises(BadParameter, match="Invalid kty"):
        generate_key(kty)
