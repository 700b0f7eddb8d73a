"""crypto/algorithms.py: the registry, and sign/verify for every signature algorithm.

Every algorithm gets a round trip and an independent check against `cryptography` (or `hmac`)
driven only by the public JWK, plus the same negative tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openmhsm.crypto import algorithms
from openmhsm.crypto.jwk import KeyMaterial, b64u_decode, from_jwk, public_jwk
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "crypto"
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
EC_ALGS = {"ES256": "P-256", "ES256K": "P-256K", "ES384": "P-384", "ES512": "P-521"}
RSA_SIGN = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
HMAC_ALGS = ["HS256", "HS384", "HS512"]
ALL_SIGN = [*RSA_SIGN, "RSNULL", *EC_ALGS, *HMAC_ALGS]


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyMaterial]:
    rfc7520 = json.loads((VECTORS / "rfc7520_examples.json").read_text(encoding="utf-8"))
    found = {"RSA": generate_key("RSA"), "RSA4096": from_jwk(rfc7520["keys"]["5.2"])}
    found |= {crv: generate_key("EC", crv=crv) for crv in EC_ALGS.values()}
    found |= {f"oct{bits}": generate_key("oct", size=bits) for bits in (128, 192, 256)}
    return found


def key_for(keys: dict[str, KeyMaterial], alg: str) -> KeyMaterial:
    if alg in EC_ALGS:
        return keys[EC_ALGS[alg]]
    return keys["oct256"] if alg.startswith("HS") else keys["RSA"]


def digest_for(alg: str, data: bytes = b"message") -> bytes:
    """The value a client sends: a digest of the algorithm's hash (RSNULL: the raw value)."""
    if alg == "RSNULL":
        return data
    return hashlib.new(f"sha{alg[2:5]}", data).digest()


def public_key(km: KeyMaterial) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """Rebuild the public key from the public JWK alone, as a client would."""
    jwk = public_jwk(km)
    if jwk["kty"] == "RSA":
        n, e = (int.from_bytes(b64u_decode(jwk[f]), "big") for f in ("n", "e"))
        return rsa.RSAPublicNumbers(e, n).public_key()
    x, y = (int.from_bytes(b64u_decode(jwk[f]), "big") for f in ("x", "y"))
    curve = {
        "P-256": ec.SECP256R1(),
        "P-256K": ec.SECP256K1(),
        "P-384": ec.SECP384R1(),
        "P-521": ec.SECP521R1(),
    }[jwk["crv"]]
    return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()


def independent_verify(km: KeyMaterial, alg: str, digest: bytes, signature: bytes) -> None:
    if alg.startswith("HS"):
        assert isinstance(km.private, bytes)
        expected = hmac.digest(km.private, digest, f"sha{alg[-3:]}")
        assert hmac.compare_digest(expected, signature)
        return
    key = public_key(km)
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = len(signature) // 2
        r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        prehashed = utils.Prehashed(HASHES[alg[2:5]])
        key.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(prehashed))
    elif alg == "RSNULL":
        assert key.recover_data_from_signature(signature, padding.PKCS1v15(), None) == digest
    else:
        key.verify(signature, digest, rsa_padding(alg), utils.Prehashed(HASHES[alg[2:]]))


def rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg.startswith("PS"):
        digest_size = HASHES[alg[2:]].digest_size
        return padding.PSS(mgf=padding.MGF1(HASHES[alg[2:]]), salt_length=digest_size)
    return padding.PKCS1v15()


def independent_sign(km: KeyMaterial, alg: str, digest: bytes) -> bytes:
    if isinstance(km.private, bytes):
        return hmac.digest(km.private, digest, f"sha{alg[-3:]}")
    if isinstance(km.private, ec.EllipticCurvePrivateKey):
        der = km.private.sign(digest, ec.ECDSA(utils.Prehashed(HASHES[alg[2:5]])))
        r, s = utils.decode_dss_signature(der)
        size = (km.size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "RSNULL":
        return km.private.sign(digest, padding.PKCS1v15(), utils.NoDigestInfo())
    return km.private.sign(digest, rsa_padding(alg), utils.Prehashed(HASHES[alg[2:]]))


# --- registry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kty", "operation", "expected"),
    [
        ("RSA-HSM", "sign", {*RSA_SIGN, "RSNULL"}),
        ("RSA", "encrypt", {"RSA-OAEP", "RSA-OAEP-256", "RSA1_5"}),
        ("RSA", "wrapKey", {"RSA-OAEP", "RSA-OAEP-256", "RSA1_5"}),
        ("EC-HSM", "verify", set(EC_ALGS)),
        ("EC", "encrypt", set()),
        ("oct-HSM", "sign", set(HMAC_ALGS)),
        (
            "oct",
            "wrapKey",
            {"A128KW", "A192KW", "A256KW", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"},
        ),
    ],
)
def test_algorithms_for(kty: str, operation: str, expected: set[str]) -> None:
    assert algorithms.algorithms_for(kty, operation) == expected


def test_oct_encrypt_algorithms_include_key_wrap_names() -> None:
    names = algorithms.algorithms_for("oct", "decrypt")
    assert {"A256GCM", "A128CBC", "A192CBCPAD", "A128KW", "CKM_AES_KEY_WRAP_PAD"} <= names
    assert len(names) == 14


@pytest.mark.parametrize(
    ("kty", "operation"), [("RSA", "Sign"), ("RSA", "export"), ("AES", "sign")]
)
def test_algorithms_for_rejects_unknown_inputs(kty: str, operation: str) -> None:
    with pytest.raises(BadParameter):
        algorithms.algorithms_for(kty, operation)


def test_every_registered_signature_algorithm_is_tested_here() -> None:
    registered = set().union(*(algorithms.algorithms_for(k, "sign") for k in ("RSA", "EC", "oct")))
    assert registered == set(ALL_SIGN)


# --- sign / verify ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_SIGN)
def test_sign_then_verify_independently(keys: dict[str, KeyMaterial], alg: str) -> None:
    km, digest = key_for(keys, alg), digest_for(alg)
    signature = algorithms.sign(km, alg, digest)
    independent_verify(km, alg, digest, signature)
    assert algorithms.verify(km, alg, digest, signature)


@pytest.mark.parametrize("alg", [*RSA_SIGN, "RSNULL"])
def test_rsa_4096_sign_then_verify_independently(keys: dict[str, KeyMaterial], alg: str) -> None:
    km, digest = keys["RSA4096"], digest_for(alg)
    signature = algorithms.sign(km, alg, digest)
    assert len(signature) == 512
    independent_verify(km, alg, digest, signature)


@pytest.mark.parametrize("alg", ALL_SIGN)
def test_verify_accepts_independent_signature(keys: dict[str, KeyMaterial], alg: str) -> None:
    km, digest = key_for(keys, alg), digest_for(alg)
    assert algorithms.verify(km, alg, digest, independent_sign(km, alg, digest))


@pytest.mark.parametrize(
    ("alg", "size"), [("ES256", 64), ("ES256K", 64), ("ES384", 96), ("ES512", 132)]
)
def test_ecdsa_signature_is_raw_r_s(keys: dict[str, KeyMaterial], alg: str, size: int) -> None:
    assert len(algorithms.sign(key_for(keys, alg), alg, digest_for(alg))) == size


@pytest.mark.parametrize("alg", ALL_SIGN)
@pytest.mark.parametrize("tamper", ["flip_bit", "truncate", "extend", "empty", "other_digest"])
def test_verify_is_false_on_any_mismatch(
    keys: dict[str, KeyMaterial], alg: str, tamper: str
) -> None:
    km, digest = key_for(keys, alg), digest_for(alg)
    signature = algorithms.sign(km, alg, digest)
    changed = {
        "flip_bit": signature[:-1] + bytes([signature[-1] ^ 1]),
        "truncate": signature[:-1],
        "extend": signature + b"\x00",
        "empty": b"",
        "other_digest": signature,
    }[tamper]
    if tamper == "other_digest":
        digest = digest_for(alg, b"another message")
    assert algorithms.verify(km, alg, digest, changed) is False


@pytest.mark.parametrize("alg", [*RSA_SIGN, *EC_ALGS])
@pytest.mark.parametrize("delta", [-1, 1])
def test_digest_of_wrong_length_is_refused(
    keys: dict[str, KeyMaterial], alg: str, delta: int
) -> None:
    km, digest = key_for(keys, alg), digest_for(alg)
    wrong = digest[:delta] if delta < 0 else digest + b"\x00"
    with pytest.raises(BadParameter, match="Digest"):
        algorithms.sign(km, alg, wrong)
    with pytest.raises(BadParameter, match="Digest"):
        algorithms.verify(km, alg, wrong, b"\x00" * 64)


@pytest.mark.parametrize(
    ("alg", "value"), [("HS256", b""), ("RSNULL", b""), ("RSNULL", b"\x01" * 246)]
)
def test_value_out_of_range_is_refused(
    keys: dict[str, KeyMaterial], alg: str, value: bytes
) -> None:
    with pytest.raises(BadParameter):
        algorithms.sign(key_for(keys, alg), alg, value)


def test_hmac_accepts_any_nonempty_value(keys: dict[str, KeyMaterial]) -> None:
    for value in (b"\x00", b"x" * 10_000):
        signature = algorithms.sign(keys["oct128"], "HS512", value)
        assert len(signature) == 64 and algorithms.verify(keys["oct128"], "HS512", value, signature)


@pytest.mark.parametrize(
    ("alg", "crv"),
    [("ES256", "P-256K"), ("ES256K", "P-256"), ("ES384", "P-521"), ("ES512", "P-384")],
)
def test_ecdsa_curve_must_match_algorithm(keys: dict[str, KeyMaterial], alg: str, crv: str) -> None:
    with pytest.raises(BadParameter, match=f"not valid for curve {crv}"):
        algorithms.sign(keys[crv], alg, digest_for(alg))
    with pytest.raises(BadParameter):
        algorithms.verify(keys[crv], alg, digest_for(alg), b"\x00" * 64)


KTY_OF = {"RSA": "RSA", "P-256": "EC", "oct256": "oct"}
WRONG_KEYS = [
    (alg, other)
    for alg in ALL_SIGN
    for other in KTY_OF
    if KTY_OF[other] != ("EC" if alg in EC_ALGS else "oct" if alg in HMAC_ALGS else "RSA")
]


@pytest.mark.parametrize(("alg", "other"), WRONG_KEYS)
def test_wrong_key_type_is_refused(keys: dict[str, KeyMaterial], alg: str, other: str) -> None:
    km = keys[other]
    with pytest.raises(BadParameter, match=f"Algorithm {alg} is not valid for key type {km.kty}"):
        algorithms.sign(km, alg, digest_for(alg))
    with pytest.raises(BadParameter, match="not valid for key type"):
        algorithms.verify(km, alg, digest_for(alg), b"\x00")


@pytest.mark.parametrize(
    ("kty", "alg"), [("RSA", "RSA-OAEP"), ("oct256", "A256GCM"), ("oct256", "A256KW")]
)
def test_non_signature_algorithm_is_refused(
    keys: dict[str, KeyMaterial], kty: str, alg: str
) -> None:
    with pytest.raises(BadParameter, match="not valid for operation sign"):
        algorithms.sign(keys[kty], alg, b"\x00" * 32)


@pytest.mark.parametrize("alg", ["", "rs256", "ES256k", "HS1", "none", "EdDSA", "RS256 "])
def test_unknown_algorithm_is_refused(keys: dict[str, KeyMaterial], alg: str) -> None:
    for km in (keys["RSA"], keys["P-256"], keys["oct256"]):
        with pytest.raises(BadParameter, match="Invalid algorithm"):
            algorithms.sign(km, alg, b"\x00" * 32)
        with pytest.raises(BadParameter, match="Invalid algorithm"):
            algorithms.verify(km, alg, b"\x00" * 32, b"")
