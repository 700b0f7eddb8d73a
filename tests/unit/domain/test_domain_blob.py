"""domain/blob.py: certificate JWKs, our download files and restore blobs, and strict parsing.

The Azure CLI's own files are checked in test_domain_vectors.py; here our writer round-trips
through our reader, and every tampered or malformed document is refused with SecurityDomainError.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.securitydomain.models import SecurityDomainJsonWebKey
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import NameOID

from openmhsm.crypto.jwk import b64u_decode, b64u_encode
from openmhsm.domain import blob, jwe, shamir
from openmhsm.domain.failures import SecurityDomainError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "security-domain"
DATA = {
    "hsm_backup": b"\x01versioned domain secrets" * 4,
    "base_enclave_backup": b"",
    "partition_enclave_backup": bytes(range(256)),
}
Pair = tuple[rsa.RSAPrivateKey, x509.Certificate]


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def rsa_pair(name: str, bits: int = 2048) -> Pair:
    key = rsa.generate_private_key(65537, bits)
    return key, self_signed(key, name)


def vector_pair(name: str, cert_suffix: str = "cer") -> Pair:
    key = load_pem_private_key((VECTORS / f"{name}.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate((VECTORS / f"{name}.{cert_suffix}").read_bytes())


@pytest.fixture(scope="module")
def wrapping() -> list[Pair]:
    return [rsa_pair(f"wrap{i}") for i in range(3)]


@pytest.fixture(scope="module")
def exchange() -> Pair:
    return rsa_pair("exchange")


@pytest.fixture(scope="module")
def other_exchange() -> Pair:
    return vector_pair("exchange", "pem")


@pytest.fixture(scope="module")
def sd_file(wrapping: list[Pair]) -> str:
    return blob.build_download_file(DATA, [cert for _, cert in wrapping], 2)


def test_data_key_is_the_sp800_108_formula_of_the_api() -> None:
    master = bytes(range(32))
    fixed = b"\x00\x00\x00\x01" + b"hsm_backup" + b"\x00" + b"\x00\x00\x02\x00"
    assert blob.data_key(master, "hsm_backup") == hmac.digest(master, fixed, hashlib.sha512)
    assert len({blob.data_key(master, tag) for tag in blob.TAGS}) == 3


def test_certificate_jwk_is_shaped_as_the_cli_builds_it(wrapping: list[Pair]) -> None:
    key, certificate = wrapping[0]
    der = certificate.public_bytes(Encoding.DER)
    jwk = blob.certificate_jwk(certificate, kid="wrap0")
    numbers = key.public_key().public_numbers()
    assert jwk == {
        "kty": "RSA",
        "alg": "RSA-OAEP-256",
        "key_ops": ["verify", "encrypt", "wrapKey"],
        "n": b64u_encode(numbers.n.to_bytes(256, "big")),
        "e": "AQAB",
        "x5c": [base64.b64encode(der).decode()],
        "x5t": b64u_encode(hashlib.sha1(der).digest()),
        "x5t#S256": b64u_encode(hashlib.sha256(der).digest()),
        "kid": "wrap0",
    }
    assert "kid" not in blob.certificate_jwk(certificate)
    assert blob.thumbprint_s256(certificate) == jwk["x5t#S256"]
    assert blob.certificate_from_jwk(jwk) == certificate


def test_certificate_from_the_sdk_model(wrapping: list[Pair]) -> None:
    jwk: dict[str, Any] = blob.certificate_jwk(wrapping[1][1])
    model = SecurityDomainJsonWebKey(
        kid="CN=wrap1",
        kty="RSA",
        key_ops=["verify", "encrypt", "wrapKey"],
        n=jwk["n"],
        e=jwk["e"],
        x5_c=jwk["x5c"],
        alg="RSA-OAEP-256",
        x5_t=jwk["x5t"],
        x5_t_s256=jwk["x5t#S256"],
    )
    assert blob.certificate_from_jwk(model) == wrapping[1][1]
    assert blob.certificate_from_jwk({"x5c": jwk["x5c"]}) == wrapping[1][1]


def test_certificate_from_jwk_rejects_bad_input(wrapping: list[Pair]) -> None:
    good = blob.certificate_jwk(wrapping[0][1])
    other = blob.certificate_jwk(wrapping[1][1])
    weak = blob.certificate_jwk  # a 1024-bit or EC certificate cannot even be turned into a JWK
    ec_key = ec.generate_private_key(ec.SECP256R1())
    small = rsa.generate_private_key(65537, 1024)
    foreign = [self_signed(ec_key, "ec"), self_signed(small, "small")]
    for certificate in foreign:
        with pytest.raises(SecurityDomainError, match="2048"):
            weak(certificate)
    x5c = good["x5c"]
    assert isinstance(x5c, list)
    cases: list[object] = [
        None,
        [],
        {},
        {"x5c": []},
        {"x5c": "abc"},
        {"x5c": [1]},
        {"x5c": ["not base64!"]},
        {"x5c": [x5c[0].replace("+", "-").replace("/", "_") + "-_"]},
        {"x5c": [base64.b64encode(b"not a certificate").decode()]},
        {"x5c": ["A" * 70000]},
        {"x5c": x5c, "kty": "EC"},
        {"x5c": x5c, "n": other["n"]},
        {"x5c": x5c, "e": "Aw"},
        {"x5c": x5c, "n": 5},
        {"x5c": x5c, "n": "*"},
        {"x5c": x5c, "x5t": other["x5t"]},
        {"x5c": x5c, "x5t#S256": other["x5t#S256"]},
        *({"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()]} for c in foreign),
    ]
    for case in cases:
        with pytest.raises(SecurityDomainError):
            blob.certificate_from_jwk(case)  # type: ignore[arg-type]


def test_download_file_layout(sd_file: str, wrapping: list[Pair]) -> None:
    document = json.loads(sd_file)
    assert list(document) == ["EncData", "SharedKeys", "version"]
    assert document["version"] == 2
    assert document["EncData"]["kdf"] == "sp108_kdf"
    assert [d["tag"] for d in document["EncData"]["data"]] == list(DATA)
    shared = document["SharedKeys"]
    assert (shared["key_algorithm"], shared["required"]) == ("shamir_share", 2)
    thumbprints = [share["x5t_256"] for share in shared["enc_shares"]]
    assert thumbprints == [blob.thumbprint_s256(cert) for _, cert in wrapping]
    for datum in document["EncData"]["data"]:
        header = json.loads(b64u_decode(datum["compact_jwe"].split(".")[0]))
        assert header == {"alg": "dir", "enc": "A256CBC-HS512", "kid": datum["tag"]}
    shares = [
        jwe.decrypt_with_rsa(share["enc_key"], key)
        for share, (key, _) in zip(shared["enc_shares"], wrapping, strict=True)
    ]
    assert all(len(share) == 64 for share in shares)
    master = shamir.combine(shares)
    assert len(master) == 32
    token = document["EncData"]["data"][0]["compact_jwe"]
    assert jwe.decrypt_dir(token, blob.data_key(master, "hsm_backup")) == DATA["hsm_backup"]


def test_any_two_of_three_keys_read_our_file(sd_file: str, wrapping: list[Pair]) -> None:
    for pair in itertools.permutations(wrapping, 2):
        assert blob.read_download_file(sd_file, list(pair)) == DATA
    assert blob.read_download_file(sd_file, wrapping) == DATA


def test_fewer_than_quorum_keys_are_refused(
    sd_file: str, wrapping: list[Pair], other_exchange: Pair
) -> None:
    for keys in ([], [wrapping[0]], [wrapping[0], wrapping[0]], [wrapping[1], other_exchange]):
        with pytest.raises(SecurityDomainError, match="quorum is 2"):
            blob.read_download_file(sd_file, keys)


def test_a_key_must_match_its_certificate(sd_file: str, wrapping: list[Pair]) -> None:
    mismatched = (wrapping[0][0], wrapping[1][1])
    with pytest.raises(SecurityDomainError, match="does not match"):
        blob.read_download_file(sd_file, [mismatched, wrapping[2]])


def test_round_trip_through_our_restore_blob(
    sd_file: str, wrapping: list[Pair], exchange: Pair
) -> None:
    key, certificate = exchange
    restore = blob.make_restore_blob(sd_file, [wrapping[2], wrapping[0]], certificate)
    document = json.loads(restore)
    assert list(document) == ["EncData", "WrappedKey"]
    assert document["WrappedKey"]["x5t_256"] == blob.thumbprint_s256(certificate)
    header = json.loads(b64u_decode(document["WrappedKey"]["enc_key"].split(".")[0]))
    assert header == {"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": "not used"}
    assert blob.read_restore_blob(restore, key, certificate) == DATA
    assert document["EncData"] != json.loads(sd_file)["EncData"]  # under a new master key


def test_a_blob_for_another_transfer_key_is_refused(
    sd_file: str, wrapping: list[Pair], exchange: Pair, other_exchange: Pair
) -> None:
    restore = blob.make_restore_blob(sd_file, wrapping[:2], exchange[1])
    with pytest.raises(SecurityDomainError, match="another pool's transfer key"):
        blob.read_restore_blob(restore, *other_exchange)
    with pytest.raises(SecurityDomainError, match="does not match"):
        blob.read_restore_blob(restore, other_exchange[0], exchange[1])


def mutated(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    document = copy.deepcopy(json.loads(text))
    change(document)
    return json.dumps(document)


def flip_token(token: str, part: int) -> str:
    pieces = token.split(".")
    raw = bytearray(b64u_decode(pieces[part]))
    raw[len(raw) // 2] ^= 0x01
    pieces[part] = b64u_encode(bytes(raw))
    return ".".join(pieces)


def test_tampered_download_file_is_refused(sd_file: str, wrapping: list[Pair]) -> None:
    def share(index: int, part: int) -> Callable[[dict[str, Any]], None]:
        def change(d: dict[str, Any]) -> None:
            item = d["SharedKeys"]["enc_shares"][index]
            item["enc_key"] = flip_token(item["enc_key"], part)

        return change

    def datum(index: int, part: int) -> Callable[[dict[str, Any]], None]:
        def change(d: dict[str, Any]) -> None:
            item = d["EncData"]["data"][index]
            item["compact_jwe"] = flip_token(item["compact_jwe"], part)

        return change

    def swap_tags(d: dict[str, Any]) -> None:
        data = d["EncData"]["data"]
        data[0]["tag"], data[2]["tag"] = data[2]["tag"], data[0]["tag"]

    def raise_quorum(d: dict[str, Any]) -> None:
        d["SharedKeys"]["required"] = 3

    def hide_share(d: dict[str, Any]) -> None:
        d["SharedKeys"]["enc_shares"][1]["x5t_256"] = "other"

    cases = [
        (share(0, 1), "Share 0"),
        (share(0, 3), "Share 0"),
        (share(1, 4), "Share 1"),
        (datum(0, 3), "Datum 'hsm_backup'"),
        (datum(2, 4), "Datum 'partition_enclave_backup'"),
        (swap_tags, "Datum"),
        (raise_quorum, "quorum is 3"),
        (hide_share, "quorum is 2"),
    ]
    for change, message in cases:
        with pytest.raises(SecurityDomainError, match=message):
            blob.read_download_file(mutated(sd_file, change), wrapping[:2])


def test_wrong_shares_inside_valid_jwes_are_refused(sd_file: str, wrapping: list[Pair]) -> None:
    public = wrapping[0][1].public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    foreign = shamir.split(bytes(32), 3, 2)[0]  # a valid share of another secret, index 1
    zero_index = b"\x00\x00" * 32
    for plaintext, message in [(b"x" * 10, "wrong length"), (zero_index, "do not combine")]:

        def change(d: dict[str, Any], plaintext: bytes = plaintext) -> None:
            d["SharedKeys"]["enc_shares"][0]["enc_key"] = jwe.encrypt_to_rsa(plaintext, public)

        with pytest.raises(SecurityDomainError, match=message):
            blob.read_download_file(mutated(sd_file, change), wrapping[:2])

    def replace(d: dict[str, Any]) -> None:
        d["SharedKeys"]["enc_shares"][0]["enc_key"] = jwe.encrypt_to_rsa(foreign, public)

    # A foreign share combines to a wrong master key: the data then fail to open ("Datum"), or
    # (about one time in eight: a byte interpolates to 256) the shares fail to combine.
    with pytest.raises(SecurityDomainError, match=r"Datum|do not combine"):
        blob.read_download_file(mutated(sd_file, replace), wrapping[:2])


def test_tampered_restore_blob_is_refused(
    sd_file: str, wrapping: list[Pair], exchange: Pair
) -> None:
    key, certificate = exchange
    restore = blob.make_restore_blob(sd_file, wrapping[:2], certificate)

    def wrapped(part: int) -> Callable[[dict[str, Any]], None]:
        def change(d: dict[str, Any]) -> None:
            d["WrappedKey"]["enc_key"] = flip_token(d["WrappedKey"]["enc_key"], part)

        return change

    def datum(d: dict[str, Any]) -> None:
        d["EncData"]["data"][1]["compact_jwe"] = flip_token(
            d["EncData"]["data"][1]["compact_jwe"], 2
        )

    def short_key(d: dict[str, Any]) -> None:
        d["WrappedKey"]["enc_key"] = jwe.encrypt_to_rsa(b"\x00" * 16, key.public_key())

    for change, message in [
        (wrapped(1), "wrapped key"),
        (wrapped(3), "wrapped key"),
        (datum, "Datum 'base_enclave_backup'"),
        (short_key, "not 32 bytes"),
    ]:
        with pytest.raises(SecurityDomainError, match=message):
            blob.read_restore_blob(mutated(restore, change), key, certificate)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split("/")

    def change(d: dict[str, Any]) -> None:
        node: Any = d
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


class _Delete:
    def __repr__(self) -> str:  # a stable test id
        return "DELETE"


_DELETE = _Delete()
MALFORMED = [
    ("EncData", _DELETE),
    ("EncData", []),
    ("EncData/data", {}),
    ("EncData/data", []),
    ("EncData/data", [{"tag": f"t{i}", "compact_jwe": "x"} for i in range(17)]),
    ("EncData/data/0", "x"),
    ("EncData/data/0/tag", _DELETE),
    ("EncData/data/0/tag", 7),
    ("EncData/data/0/tag", ""),
    ("EncData/data/0/tag", "has space"),
    ("EncData/data/0/tag", "x" * 65),
    ("EncData/data/1/tag", "hsm_backup"),
    ("EncData/data/0/compact_jwe", _DELETE),
    ("EncData/data/0/compact_jwe", ["a"]),
    ("EncData/data/0/compact_jwe", "a.b.c"),
    ("EncData/kdf", "hkdf"),
    ("SharedKeys", _DELETE),
    ("SharedKeys", "x"),
    ("SharedKeys/key_algorithm", _DELETE),
    ("SharedKeys/key_algorithm", "xor"),
    ("SharedKeys/required", _DELETE),
    ("SharedKeys/required", "2"),
    ("SharedKeys/required", True),
    ("SharedKeys/required", 2.0),
    ("SharedKeys/required", 1),
    ("SharedKeys/required", 11),
    ("SharedKeys/enc_shares", _DELETE),
    ("SharedKeys/enc_shares", {}),
    ("SharedKeys/enc_shares", []),
    ("SharedKeys/enc_shares", [{"enc_key": "a", "x5t_256": "b"}] * 127),
    ("SharedKeys/enc_shares/0", "x"),
    ("SharedKeys/enc_shares/0/enc_key", _DELETE),
    ("SharedKeys/enc_shares/0/enc_key", 5),
    ("SharedKeys/enc_shares/2/x5t_256", None),
    ("version", "2"),
]


@pytest.mark.parametrize(("path", "value"), MALFORMED, ids=lambda v: repr(v)[:30])
def test_malformed_download_files_are_refused(
    sd_file: str, wrapping: list[Pair], path: str, value: object
) -> None:
    with pytest.raises(SecurityDomainError):
        blob.read_download_file(mutated(sd_file, _set(path, value)), wrapping[:2])


@pytest.mark.parametrize(
    "text",
    [
        None,
        b"{}",
        "",
        "not json",
        "[]",
        "1",
        "[" * 5000 + "]" * 5000,
        " " * (blob.MAX_FILE_CHARS + 1),
    ],
    ids=lambda v: repr(v)[:16],
)
def test_unparsable_documents_are_refused(
    text: object, wrapping: list[Pair], exchange: Pair
) -> None:
    with pytest.raises(SecurityDomainError):
        blob.read_download_file(text, wrapping[:2])  # type: ignore[arg-type]
    with pytest.raises(SecurityDomainError):
        blob.read_restore_blob(text, *exchange)  # type: ignore[arg-type]


def test_malformed_restore_blobs_are_refused(
    sd_file: str, wrapping: list[Pair], exchange: Pair
) -> None:
    restore = blob.make_restore_blob(sd_file, wrapping[:2], exchange[1])
    for path, value in [
        ("WrappedKey", _DELETE),
        ("WrappedKey", ["x"]),
        ("WrappedKey/enc_key", _DELETE),
        ("WrappedKey/x5t_256", 1),
        ("EncData/data", []),
    ]:
        with pytest.raises(SecurityDomainError):
            blob.read_restore_blob(mutated(restore, _set(path, value)), *exchange)
    with pytest.raises(SecurityDomainError):
        blob.read_restore_blob(sd_file, *exchange)  # a download file is not a restore blob


def test_build_download_file_validates_its_input(wrapping: list[Pair], exchange: Pair) -> None:
    certificates = [cert for _, cert in wrapping]
    four = [*certificates, exchange[1]]
    small = self_signed(rsa.generate_private_key(65537, 1024), "small")
    bad_certificates: list[list[x509.Certificate]] = [
        certificates[:2],
        [certificates[0]] * 11,
        [certificates[0], certificates[1], certificates[0]],
        [*certificates[:2], small],
    ]
    for bad in bad_certificates:
        with pytest.raises(SecurityDomainError):
            blob.build_download_file(DATA, bad, 2)
    for required in (1, 4, True, "2"):
        with pytest.raises(SecurityDomainError, match="quorum"):
            blob.build_download_file(DATA, certificates, required)  # type: ignore[arg-type]
    bad_data: list[object] = [
        {},
        {f"t{i}": b"" for i in range(17)},
        {"bad tag": b""},
        {"": b""},
        {"hsm_backup": "text"},
        {"hsm_backup": b"x" * blob.MAX_FILE_CHARS},
        [("hsm_backup", b"")],
    ]
    for data in bad_data:
        with pytest.raises(SecurityDomainError):
            blob.build_download_file(data, certificates, 2)  # type: ignore[arg-type]
        with pytest.raises(SecurityDomainError):
            blob.build_restore_blob(data, exchange[1])  # type: ignore[arg-type]
    with pytest.raises(SecurityDomainError, match="2048"):
        blob.build_restore_blob(DATA, small)
    text = blob.build_download_file({"x": b"1"}, four, 4)
    assert blob.read_download_file(text, [*wrapping, exchange]) == {"x": b"1"}
    with pytest.raises(SecurityDomainError, match="quorum is 4"):
        blob.read_download_file(text, wrapping)
