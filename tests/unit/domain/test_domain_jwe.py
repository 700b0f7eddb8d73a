"""domain/jwe.py: compact JWE with A256CBC-HS512 (RFC 7518 §5.2.5), RSA and "dir" key management.

The CLI's own tokens are checked in test_domain_vectors.py; here: RFC 7518 Appendix B.3, the exact
header bytes, round trips, and every kind of tampered or malformed token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from openmhsm.crypto.jwk import b64u_decode, b64u_encode
from openmhsm.domain import jwe
from openmhsm.domain.failures import SecurityDomainError
from openmhsm.errors import BadParameter

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "security-domain"
CEK = bytes(range(64))

# RFC 7518 Appendix B.3 (AES_256_CBC_HMAC_SHA_512): K = 00..3f, plaintext P, IV, AAD A, E and T.
B3_P = (
    b"A cipher system must not be required to be secret, and it must be able to fall into the "
    b"hands of the enemy without inconvenience"
)
B3_IV = bytes.fromhex("1af38c2dc2b96ffdd86694092341bc04")
B3_A = "The second principle of Auguste Kerckhoffs"
B3_E = bytes.fromhex(
    "4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd822c301dd67c373bccb584ad3e9279c2"
    "e6d12a1374b77f077553df829410446b36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3"
    "a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950bbe2638d09dd7a4930930806d0703b1f6"
)
B3_T = bytes.fromhex("4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5")


@pytest.fixture(scope="module")
def w0() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = load_pem_private_key((VECTORS / "w0.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate((VECTORS / "w0.cer").read_bytes())


@pytest.fixture(scope="module")
def w1_key() -> rsa.RSAPrivateKey:
    key = load_pem_private_key((VECTORS / "w1.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def parts(token: str) -> list[bytes]:
    return [b64u_decode(part) for part in token.split(".")]


def replace_part(token: str, index: int, value: bytes) -> str:
    pieces = token.split(".")
    pieces[index] = b64u_encode(value)
    return ".".join(pieces)


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_rfc7518_b3_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    real_urandom = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: B3_IV if n == 16 else real_urandom(n))
    token = jwe.encrypt_dir(B3_P, CEK, kid="b3")
    monkeypatch.undo()
    _, key_part, iv, ciphertext, _ = parts(token)
    assert (key_part, iv, ciphertext) == (b"", B3_IV, B3_E)  # AES key = CEK bytes 32..63
    assert jwe._tag(CEK, B3_A, B3_IV, B3_E) == B3_T  # MAC key = bytes 0..31, AAD length in bits
    assert jwe.decrypt_dir(token, CEK) == B3_P


def test_dir_token_has_the_cli_header_and_an_independent_tag() -> None:
    token = jwe.encrypt_dir(b"secret state", CEK, kid="hsm_backup")
    header = token.split(".")[0]
    assert b64u_decode(header) == b'{"alg":"dir","enc":"A256CBC-HS512","kid":"hsm_backup"}'
    _, key_part, iv, ciphertext, tag = parts(token)
    assert key_part == b""
    aad = header.encode()
    mac_input = aad + iv + ciphertext + (8 * len(aad)).to_bytes(8, "big")
    assert tag == hmac.digest(CEK[:32], mac_input, hashlib.sha512)[:32]
    decryptor = Cipher(algorithms.AES(CEK[32:]), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    assert padded == b"secret state" + bytes([4]) * 4


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 3000])
def test_dir_round_trip(length: int) -> None:
    plaintext = os.urandom(length)
    token = jwe.encrypt_dir(plaintext, CEK, kid="t")
    assert jwe.decrypt_dir(token, CEK) == plaintext
    assert jwe.encrypt_dir(plaintext, CEK, kid="t") != token  # fresh IV each time


def test_rsa_round_trip_with_the_cli_header(w0: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, certificate = w0
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    token = jwe.encrypt_to_rsa(b"\x01" * 64, public_key)
    header, encrypted_key, *_ = parts(token)
    assert header == b'{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}'
    assert len(encrypted_key) == 256
    assert jwe.decrypt_with_rsa(token, key) == b"\x01" * 64
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    assert len(key.decrypt(encrypted_key, oaep)) == 64  # a fresh 64-byte CEK
    assert json.loads(parts(jwe.encrypt_to_rsa(b"", public_key, kid="k1"))[0])["kid"] == "k1"


@pytest.mark.parametrize(
    ("alg", "scheme"),
    [
        ("RSA-OAEP", padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
        ("RSA1_5", padding.PKCS1v15()),
    ],
)
def test_rsa_oaep_sha1_and_rsa1_5_are_accepted(
    w0: tuple[rsa.RSAPrivateKey, x509.Certificate], alg: str, scheme: padding.AsymmetricPadding
) -> None:
    key, _ = w0
    encrypted_key = key.public_key().encrypt(CEK, scheme)
    header = {"alg": alg, "enc": jwe.ENC, "kid": "not used"}
    token = jwe._seal(header, encrypted_key, CEK, b"share")
    assert jwe.decrypt_with_rsa(token, key) == b"share"


def test_rsa_token_refuses_other_keys_and_tampering(
    w0: tuple[rsa.RSAPrivateKey, x509.Certificate], w1_key: rsa.RSAPrivateKey
) -> None:
    key, _ = w0
    token = jwe.encrypt_to_rsa(b"share", key.public_key())
    # RFC 7516 §11.5: a key that does not open the CEK fails like a bad tag (no padding oracle).
    with pytest.raises(SecurityDomainError, match="tag"):
        jwe.decrypt_with_rsa(token, w1_key)
    rsa1_5 = token.replace(
        token.split(".")[0], b64u_encode(b'{"alg":"RSA1_5","enc":"A256CBC-HS512"}')
    )
    with pytest.raises(SecurityDomainError, match="tag"):
        jwe.decrypt_with_rsa(rsa1_5, key)
    wrong_length = jwe._seal(
        {"alg": "RSA-OAEP-256", "enc": jwe.ENC},
        key.public_key().encrypt(
            CEK[:32], padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        ),
        CEK[:32] * 2,
        b"x",
    )
    with pytest.raises(SecurityDomainError, match="tag"):
        jwe.decrypt_with_rsa(wrong_length, key)
    for index in range(1, 5):
        tampered = replace_part(token, index, flip(parts(token)[index]))
        with pytest.raises(SecurityDomainError):
            jwe.decrypt_with_rsa(tampered, key)
    with pytest.raises(SecurityDomainError, match="RSA"):
        jwe.decrypt_with_rsa(token, ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    with pytest.raises(SecurityDomainError, match="RSA"):
        jwe.encrypt_to_rsa(b"", key)  # type: ignore[arg-type]
    short = replace_part(token, 1, parts(token)[1][:-1])
    with pytest.raises(SecurityDomainError, match="size"):
        jwe.decrypt_with_rsa(short, key)


def test_alg_must_match_the_key_management_mode(
    w0: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, _ = w0
    dir_token = jwe.encrypt_dir(b"x", CEK, kid="t")
    rsa_token = jwe.encrypt_to_rsa(b"x", key.public_key())
    with pytest.raises(SecurityDomainError, match="alg"):
        jwe.decrypt_with_rsa(dir_token, key)
    with pytest.raises(SecurityDomainError, match="alg"):
        jwe.decrypt_dir(rsa_token, CEK)
    with_key = jwe._seal({"alg": "dir", "enc": jwe.ENC}, b"\x00" * 8, CEK, b"x")
    with pytest.raises(SecurityDomainError, match="empty"):
        jwe.decrypt_dir(with_key, CEK)


@pytest.mark.parametrize("index", [0, 2, 3, 4])
def test_tampered_dir_token_is_refused(index: int) -> None:
    token = jwe.encrypt_dir(b"0123456789abcdef" * 3, CEK, kid="hsm_backup")
    if index == 0:
        forged = b'{"alg":"dir","enc":"A256CBC-HS512","kid":"hsm_backuq"}'
        tampered = replace_part(token, 0, forged)
    else:
        tampered = replace_part(token, index, flip(parts(token)[index], 5))
    with pytest.raises(SecurityDomainError, match="tag"):
        jwe.decrypt_dir(tampered, CEK)


def test_wrong_cek_and_bad_padding_are_refused() -> None:
    token = jwe.encrypt_dir(b"x", CEK, kid="t")
    with pytest.raises(SecurityDomainError, match="tag"):
        jwe.decrypt_dir(token, bytes(64))
    for cek in (CEK[:32], CEK + b"\x00"):
        with pytest.raises(SecurityDomainError, match="64"):
            jwe.decrypt_dir(token, cek)
        with pytest.raises(SecurityDomainError, match="64"):
            jwe.encrypt_dir(b"x", cek, kid="t")
    # A correctly tagged ciphertext whose last block does not end in valid PKCS7 padding.
    header = b64u_encode(b'{"alg":"dir","enc":"A256CBC-HS512","kid":"t"}')
    iv = bytes(16)
    encryptor = Cipher(algorithms.AES(CEK[32:]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(b"\x00" * 15 + b"\x11") + encryptor.finalize()
    tag = jwe._tag(CEK, header, iv, ciphertext)
    token = ".".join([header, "", b64u_encode(iv), b64u_encode(ciphertext), b64u_encode(tag)])
    with pytest.raises(SecurityDomainError, match="padding"):
        jwe.decrypt_dir(token, CEK)


def _token_with_header(header: bytes) -> str:
    """Well-formed other parts (fixed, so test ids are stable across xdist workers)."""
    rest = [b"", bytes(16), bytes(16), bytes(32)]
    return ".".join([b64u_encode(header), *map(b64u_encode, rest)])


@pytest.mark.parametrize(
    "token",
    [
        None,
        b"a.b.c.d.e",
        "",
        "a.b.c.d",
        "a.b.c.d.e.f",
        ".." + "A" * 22 + ".AAAA." + "A" * 43,  # empty header
        "e30..+/+/.AAAA.AAAA",  # standard base64, not base64url
        _token_with_header(b"not json"),
        _token_with_header(b"[1, 2]"),
        _token_with_header(b"\xff\xfe"),
        _token_with_header(b"[" * 3000),
        _token_with_header(b'{"alg":"dir","enc":"A128CBC-HS256"}'),
        _token_with_header(b'{"alg":"dir"}'),
        _token_with_header(b'{"alg":"dir","enc":"A256CBC-HS512","zip":"DEF"}'),
        _token_with_header(b'{"alg":"dir","enc":"A256CBC-HS512","crit":["x"]}'),
        "A" * (jwe.MAX_TOKEN_CHARS + 1),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_malformed_tokens_raise_security_domain_error(token: object) -> None:
    with pytest.raises(SecurityDomainError):
        jwe.decrypt_dir(token, CEK)  # type: ignore[arg-type]


def test_part_lengths_are_checked() -> None:
    token = jwe.encrypt_dir(b"0123456789abcdef", CEK, kid="t")
    _, _, iv, ciphertext, tag = parts(token)
    for index, value in [(2, iv[:12]), (4, tag[:16]), (3, ciphertext[:-1]), (3, b"")]:
        with pytest.raises(SecurityDomainError):
            jwe.decrypt_dir(replace_part(token, index, value), CEK)


def test_errors_are_bad_parameter_without_key_material() -> None:
    with pytest.raises(BadParameter) as info:
        jwe.decrypt_dir(jwe.encrypt_dir(b"x", CEK, kid="t"), bytes(64))
    assert info.value.status == 400
    assert CEK.hex() not in str(info.value) and b64u_encode(CEK) not in str(info.value)
