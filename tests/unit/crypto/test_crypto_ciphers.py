"""crypto/algorithms.py: encrypt/decrypt (and RSA wrap/unwrap) for every algorithm; AES key wrap
is in test_crypto_keywrap.py.

Each algorithm: a round trip, an independent check in both directions against `cryptography`
(RSA from the public JWK only), and the same negative tests (wrong key type or size, wrong
iv/tag length, bad tag, bad padding, too-large or unaligned input, unknown algorithm).
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.crypto import algorithms as jwa
from openmhsm.crypto.jwk import KeyMaterial, b64u_decode, public_jwk
from openmhsm.crypto.keygen import generate_key
from openmhsm.errors import BadParameter, CryptoError

RSA_ALGS = ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"]
SIZES = {"A128": 128, "A192": 192, "A256": 256}
GCM = ["A128GCM", "A192GCM", "A256GCM"]
CBC = ["A128CBC", "A192CBC", "A256CBC"]
CBCPAD = ["A128CBCPAD", "A192CBCPAD", "A256CBCPAD"]
KW = ["A128KW", "A192KW", "A256KW"]
CKM = ["CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"]
AES_ALGS = [*GCM, *CBC, *CBCPAD, *KW, *CKM]


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyMaterial]:
    found = {"RSA": generate_key("RSA"), "EC": generate_key("EC")}
    return found | {f"oct{bits}": generate_key("oct", size=bits) for bits in (128, 192, 256)}


def oct_key(keys: dict[str, KeyMaterial], alg: str) -> KeyMaterial:
    return keys[f"oct{SIZES.get(alg[:4], 256)}"]


def aes(km: KeyMaterial) -> bytes:
    assert isinstance(km.private, bytes)
    return km.private


def rsa_public(km: KeyMaterial) -> rsa.RSAPublicKey:
    jwk = public_jwk(km)
    n, e = (int.from_bytes(b64u_decode(jwk[f]), "big") for f in ("n", "e"))
    return rsa.RSAPublicNumbers(e, n).public_key()


def rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    hash_alg = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(hash_alg), algorithm=hash_alg, label=None)


def test_every_registered_cipher_algorithm_is_tested_here() -> None:
    names = set().union(*(jwa.algorithms_for(k, "encrypt") for k in ("RSA", "EC", "oct")))
    assert names == {*RSA_ALGS, *AES_ALGS}


# --- RSA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", RSA_ALGS)
@pytest.mark.parametrize("operation", ["encrypt", "wrap"])
def test_rsa_round_trip_and_independent_checks(
    keys: dict[str, KeyMaterial], alg: str, operation: str
) -> None:
    km, secret = keys["RSA"], os.urandom(32)
    assert isinstance(km.private, rsa.RSAPrivateKey)
    if operation == "encrypt":
        result = jwa.encrypt(km, alg, secret)
        assert result.iv is None and result.tag is None
        ciphertext, opened = result.ciphertext, jwa.decrypt(km, alg, result.ciphertext)
    else:
        ciphertext = jwa.wrap_key(km, alg, secret)
        opened = jwa.unwrap_key(km, alg, ciphertext)
    assert opened == secret
    assert km.private.decrypt(ciphertext, rsa_padding(alg)) == secret
    theirs = rsa_public(km).encrypt(secret, rsa_padding(alg))
    assert jwa.decrypt(km, alg, theirs) == jwa.unwrap_key(km, alg, theirs) == secret


@pytest.mark.parametrize(
    ("alg", "limit"), [("RSA-OAEP", 214), ("RSA-OAEP-256", 190), ("RSA1_5", 245)]
)
def test_rsa_plaintext_size_limit(keys: dict[str, KeyMaterial], alg: str, limit: int) -> None:
    km = keys["RSA"]
    assert jwa.decrypt(km, alg, jwa.encrypt(km, alg, b"\x01" * limit).ciphertext) == b"\x01" * limit
    with pytest.raises(BadParameter, match="too large"):
        jwa.encrypt(km, alg, b"\x01" * (limit + 1))
    with pytest.raises(BadParameter, match="too large"):
        jwa.wrap_key(km, alg, b"\x01" * (limit + 1))


@pytest.mark.parametrize("alg", RSA_ALGS)
@pytest.mark.parametrize("size", [0, 255, 257])
def test_rsa_ciphertext_of_wrong_length(keys: dict[str, KeyMaterial], alg: str, size: int) -> None:
    with pytest.raises(BadParameter, match="256 bytes"):
        jwa.decrypt(keys["RSA"], alg, b"\x01" * size)


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_rsa_ciphertext_not_below_modulus_fails(keys: dict[str, KeyMaterial], alg: str) -> None:
    with pytest.raises(CryptoError):
        jwa.unwrap_key(keys["RSA"], alg, b"\xff" * 256)


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA-OAEP-256"])
def test_rsa_oaep_tampered_ciphertext_fails(keys: dict[str, KeyMaterial], alg: str) -> None:
    km = keys["RSA"]
    ciphertext = jwa.encrypt(km, alg, b"secret").ciphertext
    with pytest.raises(CryptoError, match="decryption failed"):
        jwa.decrypt(km, alg, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]))


def test_rsa1_5_bad_padding_uses_implicit_rejection(keys: dict[str, KeyMaterial]) -> None:
    # OpenSSL answers a PKCS#1 v1.5 padding error with pseudo-random bytes (no padding oracle).
    km = keys["RSA"]
    ciphertext = jwa.encrypt(km, "RSA1_5", b"secret").ciphertext
    assert jwa.decrypt(km, "RSA1_5", ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])) != b"secret"


@pytest.mark.parametrize("alg", RSA_ALGS)
@pytest.mark.parametrize("extra", [{"iv": b"\x00" * 16}, {"aad": b"x"}, {"tag": b"\x00" * 16}])
def test_rsa_refuses_iv_aad_and_tag(
    keys: dict[str, KeyMaterial], alg: str, extra: dict[str, bytes]
) -> None:
    with pytest.raises(BadParameter, match="not used by algorithm"):
        jwa.decrypt(keys["RSA"], alg, b"\x00" * 256, **extra)
    if "tag" not in extra:
        with pytest.raises(BadParameter, match="not used by algorithm"):
            jwa.encrypt(keys["RSA"], alg, b"x", **extra)


# --- AES-GCM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", GCM)
@pytest.mark.parametrize("aad", [None, b"", b"header"])
def test_gcm_round_trip_and_independent_checks(
    keys: dict[str, KeyMaterial], alg: str, aad: bytes | None
) -> None:
    km = oct_key(keys, alg)
    result = jwa.encrypt(km, alg, b"attack at dawn", aad=aad)
    assert result.iv is not None and result.tag is not None
    assert len(result.iv) == 12 and len(result.tag) == 16
    assert jwa.decrypt(km, alg, result.ciphertext, iv=result.iv, aad=aad, tag=result.tag) == (
        b"attack at dawn"
    )
    sealed = result.ciphertext + result.tag
    assert AESGCM(aes(km)).decrypt(result.iv, sealed, aad) == b"attack at dawn"
    iv = os.urandom(12)
    theirs = AESGCM(aes(km)).encrypt(iv, b"retreat", aad)
    assert jwa.decrypt(km, alg, theirs[:-16], iv=iv, aad=aad, tag=theirs[-16:]) == b"retreat"


def test_gcm_generates_a_fresh_iv_and_uses_a_given_one(keys: dict[str, KeyMaterial]) -> None:
    km = keys["oct256"]
    first, second = (jwa.encrypt(km, "A256GCM", b"same") for _ in range(2))
    assert first.iv != second.iv and first.ciphertext != second.ciphertext
    given = jwa.encrypt(km, "A256GCM", b"same", iv=b"\x07" * 12)
    assert given.iv == b"\x07" * 12
    assert given.ciphertext + (given.tag or b"") == AESGCM(aes(km)).encrypt(given.iv, b"same", None)


@pytest.mark.parametrize("alg", GCM)
@pytest.mark.parametrize(
    "change", ["flip_ciphertext", "flip_tag", "other_aad", "drop_aad", "other_iv", "other_key"]
)
def test_gcm_authentication_failures(keys: dict[str, KeyMaterial], alg: str, change: str) -> None:
    km = oct_key(keys, alg)
    result = jwa.encrypt(km, alg, b"payload", aad=b"aad")
    assert result.iv is not None and result.tag is not None
    args: dict[str, bytes | None] = {"iv": result.iv, "aad": b"aad", "tag": result.tag}
    ciphertext = result.ciphertext
    flip = {"flip_tag": "tag", "other_iv": "iv"}
    if change == "flip_ciphertext":
        ciphertext = bytes([ciphertext[0] ^ 0x80]) + ciphertext[1:]
    elif change in flip:
        value = args[flip[change]]
        assert value is not None
        args[flip[change]] = bytes([value[0] ^ 0x80]) + value[1:]
    elif change == "other_aad":
        args["aad"] = b"AAD"
    elif change == "drop_aad":
        args["aad"] = None
    else:
        km = generate_key("oct", size=km.size)
    with pytest.raises(CryptoError, match="authentication tag mismatch"):
        jwa.decrypt(km, alg, ciphertext, **args)


@pytest.mark.parametrize("alg", GCM)
@pytest.mark.parametrize(
    ("iv", "tag", "message"),
    [
        (None, b"\x00" * 16, "iv is required"),
        (b"\x00" * 12, None, "tag is required"),
        (b"\x00" * 16, b"\x00" * 16, "iv for"),
        (b"\x00" * 11, b"\x00" * 16, "iv for"),
        (b"\x00" * 12, b"\x00" * 12, "tag for"),
        (b"\x00" * 12, b"\x00" * 17, "tag for"),
    ],
)
def test_gcm_decrypt_iv_and_tag_lengths(
    keys: dict[str, KeyMaterial], alg: str, iv: bytes | None, tag: bytes | None, message: str
) -> None:
    with pytest.raises(BadParameter, match=message):
        jwa.decrypt(oct_key(keys, alg), alg, b"x", iv=iv, tag=tag)


@pytest.mark.parametrize("alg", GCM)
@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_gcm_encrypt_iv_must_be_12_bytes(keys: dict[str, KeyMaterial], alg: str, size: int) -> None:
    with pytest.raises(BadParameter, match="must be 12 bytes"):
        jwa.encrypt(oct_key(keys, alg), alg, b"x", iv=b"\x00" * size)


# --- AES-CBC and AES-CBC-PKCS7 ---------------------------------------------------------------


@pytest.mark.parametrize("alg", CBC + CBCPAD)
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 64])
def test_cbc_round_trip_and_independent_checks(
    keys: dict[str, KeyMaterial], alg: str, length: int
) -> None:
    padded, km, iv = alg.endswith("PAD"), oct_key(keys, alg), os.urandom(16)
    plaintext = os.urandom(length)
    if not padded and length % 16:
        with pytest.raises(BadParameter, match="multiple of 16"):
            jwa.encrypt(km, alg, plaintext, iv=iv)
        return
    result = jwa.encrypt(km, alg, plaintext, iv=iv)
    assert result.iv == iv and result.tag is None
    assert jwa.decrypt(km, alg, result.ciphertext, iv=iv) == plaintext
    data = plaintext
    if padded:
        padder = sym_padding.PKCS7(128).padder()
        data = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes(km)), modes.CBC(iv)).encryptor()
    theirs = encryptor.update(data) + encryptor.finalize()
    assert theirs == result.ciphertext


@pytest.mark.parametrize("alg", CBCPAD)
def test_cbcpad_encrypt_generates_a_missing_iv(keys: dict[str, KeyMaterial], alg: str) -> None:
    km = oct_key(keys, alg)
    result = jwa.encrypt(km, alg, b"hello")
    assert result.iv is not None and len(result.iv) == 16
    assert jwa.decrypt(km, alg, result.ciphertext, iv=result.iv) == b"hello"


@pytest.mark.parametrize("alg", CBCPAD)
@pytest.mark.parametrize("last_block", [b"\x00" * 16, b"A" * 15 + b"\x11", b"A" * 14 + b"\x01\x02"])
def test_cbcpad_bad_padding_fails(
    keys: dict[str, KeyMaterial], alg: str, last_block: bytes
) -> None:
    km, iv = oct_key(keys, alg), os.urandom(16)
    raw = jwa.encrypt(km, alg.removesuffix("PAD"), last_block, iv=iv).ciphertext
    with pytest.raises(CryptoError, match="invalid padding"):
        jwa.decrypt(km, alg, raw, iv=iv)


@pytest.mark.parametrize("alg", CBC + CBCPAD)
@pytest.mark.parametrize(
    ("operation", "kwargs", "message"),
    [
        ("encrypt", {"iv": b"\x00" * 12}, "must be 16 bytes"),
        ("encrypt", {"iv": b"\x00" * 16, "aad": b"x"}, "not used by algorithm"),
        ("decrypt", {}, "iv is required"),
        ("decrypt", {"iv": b"\x00" * 17}, "must be 16 bytes"),
        ("decrypt", {"iv": b"\x00" * 16, "tag": b"\x00" * 16}, "not used by algorithm"),
        ("decrypt", {"iv": b"\x00" * 16, "aad": b"x"}, "not used by algorithm"),
    ],
)
def test_cbc_iv_aad_and_tag_checks(
    keys: dict[str, KeyMaterial], alg: str, operation: str, kwargs: dict[str, bytes], message: str
) -> None:
    with pytest.raises(BadParameter, match=message):
        getattr(jwa, operation)(oct_key(keys, alg), alg, b"\x00" * 16, **kwargs)


@pytest.mark.parametrize("alg", CBC)
def test_cbc_encrypt_requires_an_iv(keys: dict[str, KeyMaterial], alg: str) -> None:
    with pytest.raises(BadParameter, match="iv is required"):
        jwa.encrypt(oct_key(keys, alg), alg, b"\x00" * 16)


@pytest.mark.parametrize("alg", CBC + CBCPAD)
@pytest.mark.parametrize("size", [1, 15, 17, 33])
def test_cbc_unaligned_ciphertext(keys: dict[str, KeyMaterial], alg: str, size: int) -> None:
    with pytest.raises(BadParameter, match="multiple of 16"):
        jwa.decrypt(oct_key(keys, alg), alg, b"\x00" * size, iv=b"\x00" * 16)


def test_cbcpad_empty_ciphertext(keys: dict[str, KeyMaterial]) -> None:
    with pytest.raises(BadParameter, match="multiple of 16"):
        jwa.decrypt(keys["oct128"], "A128CBCPAD", b"", iv=b"\x00" * 16)


# --- key type, key size, operation and name checks shared by every algorithm ---------------


SIZE_MISMATCHES = [
    (alg, bits)
    for alg in [*GCM, *CBC, *CBCPAD, *KW]
    for bits in (128, 192, 256)
    if SIZES[alg[:4]] != bits
]


@pytest.mark.parametrize(("alg", "bits"), SIZE_MISMATCHES)
def test_aes_key_size_must_match_algorithm(
    keys: dict[str, KeyMaterial], alg: str, bits: int
) -> None:
    km = keys[f"oct{bits}"]
    with pytest.raises(BadParameter, match=f"requires a {SIZES[alg[:4]]}-bit key"):
        jwa.encrypt(km, alg, b"\x00" * 16, iv=None if alg in GCM + KW else b"\x00" * 16)
    with pytest.raises(BadParameter, match="-bit key"):
        jwa.decrypt(
            km,
            alg,
            b"\x00" * 32,
            iv=None if alg in KW else b"\x00" * (12 if alg in GCM else 16),
            tag=b"\x00" * 16 if alg in GCM else None,
        )


WRONG_KEYS = [(alg, other) for alg in RSA_ALGS for other in ("EC", "oct256")] + [
    (alg, other) for alg in AES_ALGS for other in ("RSA", "EC")
]


@pytest.mark.parametrize(("alg", "other"), WRONG_KEYS)
def test_wrong_key_type(keys: dict[str, KeyMaterial], alg: str, other: str) -> None:
    km = keys[other]
    with pytest.raises(BadParameter, match=f"Algorithm {alg} is not valid for key type {km.kty}"):
        jwa.encrypt(km, alg, b"\x00" * 16)
    with pytest.raises(BadParameter, match="not valid for key type"):
        jwa.decrypt(km, alg, b"\x00" * 16)


@pytest.mark.parametrize(
    ("key_name", "alg"),
    [("oct256", "A256GCM"), ("oct256", "A256CBCPAD"), ("RSA", "RS256"), ("oct256", "HS256")],
)
def test_algorithm_not_valid_for_wrap(
    keys: dict[str, KeyMaterial], key_name: str, alg: str
) -> None:
    with pytest.raises(BadParameter, match="not valid for operation wrapKey"):
        jwa.wrap_key(keys[key_name], alg, b"\x00" * 32)
    with pytest.raises(BadParameter, match="not valid for operation unwrapKey"):
        jwa.unwrap_key(keys[key_name], alg, b"\x00" * 32)


@pytest.mark.parametrize("alg", ["", "RSA-OAEP-512", "rsa-oaep", "A512GCM", "A128CBC-HS256", "dir"])
def test_unknown_algorithm(keys: dict[str, KeyMaterial], alg: str) -> None:
    for km in (keys["RSA"], keys["oct256"]):
        for call in (jwa.encrypt, jwa.decrypt, jwa.wrap_key, jwa.unwrap_key):
            with pytest.raises(BadParameter, match="Invalid algorithm"):
                call(km, alg, b"\x00" * 32)


def test_errors_never_quote_key_material(keys: dict[str, KeyMaterial]) -> None:
    km = keys["oct128"]
    secret = aes(km)
    for call in (
        lambda: jwa.decrypt(km, "A128GCM", b"x", iv=b"\x00" * 12, tag=b"\x00" * 16),
        lambda: jwa.unwrap_key(km, "A128KW", b"\x00" * 24),
        lambda: jwa.encrypt(km, "A256GCM", b"x"),
    ):
        with pytest.raises(BadParameter) as err:
            call()
        assert secret.hex() not in str(err.value) and secret.hex().upper() not in str(err.value)
