"""Key generation for every key type Managed HSM offers, with its size and curve rules."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmhsm.crypto.jwk import CURVES, OCT_SIZES, RSA_SIZES, KeyMaterial, base_kty, canonical_curve
from openmhsm.errors import BadParameter

DEFAULT_RSA_SIZE = 2048
DEFAULT_CURVE = "P-256"
DEFAULT_OCT_SIZE = 256
# OpenSSL (through `cryptography`) generates RSA keys only with these exponents; they are also
# the two Managed HSM documents.
RSA_PUBLIC_EXPONENTS = (3, 65537)


def generate_key(
    kty: str,
    *,
    size: int | None = None,
    crv: str | None = None,
    public_exponent: int | None = None,
) -> KeyMaterial:
    """Generate a new key of type kty ("RSA", "EC", "oct", with or without "-HSM").

    RSA: size 2048 (default), 3072 or 4096; public_exponent 65537 (default) or 3.
    EC: crv P-256 (default), P-256K (alias SECP256K1), P-384 or P-521; size, if given, must be the
    curve's size. oct: size 128, 192 or 256 (default). A parameter that does not apply to the key
    type, or a value outside these sets, raises BadParameter.
    """
    base = base_kty(kty)
    if base == "RSA":
        _reject("crv", crv, kty)
        return _generate_rsa(kty, size, public_exponent)
    _reject("public_exponent", public_exponent, kty)
    if base == "EC":
        return _generate_ec(kty, size, crv)
    _reject("crv", crv, kty)
    bits = DEFAULT_OCT_SIZE if size is None else size
    if bits not in OCT_SIZES:
        raise BadParameter(f"Invalid key_size {bits} for {kty}: allowed 128, 192, 256")
    return KeyMaterial("oct", os.urandom(bits // 8))


def _generate_rsa(kty: str, size: int | None, public_exponent: int | None) -> KeyMaterial:
    bits = DEFAULT_RSA_SIZE if size is None else size
    if bits not in RSA_SIZES:
        raise BadParameter(f"Invalid key_size {bits} for {kty}: allowed 2048, 3072, 4096")
    exponent = 65537 if public_exponent is None else public_exponent
    if exponent not in RSA_PUBLIC_EXPONENTS:
        raise BadParameter(f"Invalid public_exponent {exponent} for {kty}: allowed 3, 65537")
    return KeyMaterial("RSA", rsa.generate_private_key(public_exponent=exponent, key_size=bits))


def _generate_ec(kty: str, size: int | None, crv: str | None) -> KeyMaterial:
    name = canonical_curve(DEFAULT_CURVE if crv is None else crv)
    curve = CURVES[name]
    if size is not None and size != curve.key_size:
        raise BadParameter(f"Invalid key_size {size} for {kty} on curve {name}")
    return KeyMaterial("EC", ec.generate_private_key(curve), name)


def _reject(name: str, value: object, kty: str) -> None:
    if value is not None:
        raise BadParameter(f"{name} is not valid for key type {kty}")
