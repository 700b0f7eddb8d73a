"""The security-domain file and the upload "restore blob" (API.md §4.2-4.3), parsed only here.

A download file splits a random 32-byte master key with Shamir (2..10 of 3..10), encrypts share i
to certificate i as an RSA-OAEP-256 JWE matched by `x5t_256`, and encrypts each datum as a "dir" JWE
under SP 800-108 HMAC-SHA512(master, label = datum tag, context "", L = 512). A restore blob holds
the same data under a fresh master key wrapped to the recovering pool's exchange certificate.
The data are opaque bytes to this module. Every malformed or failing input raises
SecurityDomainError; no message quotes key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import TypeGuard

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from openmhsm.crypto.jwk import b64u_decode, b64u_encode, int_to_b64u
from openmhsm.crypto.kdf import sp800_108_hmac_sha512
from openmhsm.domain import jwe, shamir
from openmhsm.domain.failures import SecurityDomainError
from openmhsm.errors import BadParameter

TAGS = ("hsm_backup", "base_enclave_backup", "partition_enclave_backup")
KDF_NAME = "sp108_kdf"
KEY_ALGORITHM = "shamir_share"
FORMAT_VERSION = 2
MASTER_KEY_SIZE = 32
MIN_CERTIFICATES, MAX_CERTIFICATES = 3, 10
MIN_QUORUM, MAX_QUORUM = 2, 10
MIN_RSA_BITS = 2048
MAX_FILE_CHARS = 1 << 20
MAX_DATA_ITEMS = 16
KEY_OPS = ("verify", "encrypt", "wrapKey")
_MAX_CERTIFICATE_CHARS = 64 * 1024
_TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")

KeyPair = tuple[rsa.RSAPrivateKey, x509.Certificate]


def data_key(master: bytes, tag: str) -> bytes:
    """The 64-byte A256CBC-HS512 key of datum `tag`: SP 800-108 HMAC-SHA512, context "", L=512."""
    return sp800_108_hmac_sha512(master, tag.encode("utf-8"), b"", 512)


def thumbprint_s256(certificate: x509.Certificate) -> str:
    """base64url(SHA-256(DER)): the `x5t_256` / `x5t#S256` of a certificate."""
    return b64u_encode(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest())


def certificate_jwk(certificate: x509.Certificate, *, kid: str | None = None) -> dict[str, object]:
    """The certificate as the Azure CLI sends it in a download request (or as a transfer key).

    Raises SecurityDomainError unless the certificate holds an RSA key of at least 2048 bits.
    """
    public = _rsa_public_key(certificate).public_numbers()
    der = certificate.public_bytes(Encoding.DER)
    jwk: dict[str, object] = {
        "kty": "RSA",
        "alg": "RSA-OAEP-256",
        "key_ops": list(KEY_OPS),
        "n": int_to_b64u(public.n),
        "e": int_to_b64u(public.e),
        "x5c": [base64.b64encode(der).decode("ascii")],
        "x5t": b64u_encode(hashlib.sha1(der, usedforsecurity=False).digest()),  # a thumbprint
        "x5t#S256": thumbprint_s256(certificate),
    }
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def certificate_from_jwk(jwk: Mapping[str, object]) -> x509.Certificate:
    """The certificate in a JWK's `x5c[0]` (standard base64 DER), checked against the JWK.

    `kty`, `n`, `e`, `x5t` and `x5t#S256`, when present, must match the certificate. Raises
    SecurityDomainError for anything malformed or a key that is not RSA of at least 2048 bits.
    """
    if not isinstance(jwk, Mapping):
        raise SecurityDomainError("A certificate JWK must be a JSON object")
    chain = jwk.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise SecurityDomainError("A certificate JWK needs x5c: a list of base64 certificates")
    if len(chain[0]) > _MAX_CERTIFICATE_CHARS:
        raise SecurityDomainError("The x5c certificate is too large")
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (binascii.Error, ValueError):
        raise SecurityDomainError("x5c[0] is not a base64 DER X.509 certificate") from None
    public = _rsa_public_key(certificate).public_numbers()
    if jwk.get("kty", "RSA") not in ("RSA", "RSA-HSM"):
        raise SecurityDomainError("A certificate JWK must have kty RSA")
    for name, expected in (("n", public.n), ("e", public.e)):
        if name in jwk and _b64u_int(jwk[name], name) != expected:
            raise SecurityDomainError(f"The JWK's {name} does not match its x5c certificate")
    der = certificate.public_bytes(Encoding.DER)
    thumbprints = {
        "x5t": b64u_encode(hashlib.sha1(der, usedforsecurity=False).digest()),  # a thumbprint
        "x5t#S256": thumbprint_s256(certificate),
    }
    for name, expected_thumbprint in thumbprints.items():
        if name in jwk and jwk[name] != expected_thumbprint:
            raise SecurityDomainError(f"The JWK's {name} does not match its x5c certificate")
    return certificate


def build_download_file(
    data: Mapping[str, bytes], certificates: Sequence[x509.Certificate], required: int
) -> str:
    """A new security-domain file (JSON text): `data` under a fresh master key split `required`
    of len(certificates), one share encrypted to each certificate.

    Raises SecurityDomainError for 0 or more than 16 data items, a bad tag, other than 3..10
    distinct RSA (>= 2048 bits) certificates, a quorum outside 2..len(certificates), or a result
    over 1 MiB.
    """
    items = _checked_data(data)
    if not MIN_CERTIFICATES <= len(certificates) <= MAX_CERTIFICATES:
        raise SecurityDomainError(
            f"A security domain needs {MIN_CERTIFICATES} to {MAX_CERTIFICATES} certificates"
        )
    keys = [_rsa_public_key(certificate) for certificate in certificates]
    thumbprints = [thumbprint_s256(certificate) for certificate in certificates]
    if len(set(thumbprints)) != len(thumbprints):
        raise SecurityDomainError("The security-domain certificates must be distinct")
    if not _is_int(required) or not MIN_QUORUM <= required <= len(certificates):
        raise SecurityDomainError(
            f"The quorum must be {MIN_QUORUM} to the number of certificates ({len(certificates)})"
        )
    master = os.urandom(MASTER_KEY_SIZE)
    shares = shamir.split(master, len(certificates), required)
    enc_shares = [
        {"enc_key": jwe.encrypt_to_rsa(share, key), "x5t_256": thumbprint}
        for share, key, thumbprint in zip(shares, keys, thumbprints, strict=True)
    ]
    document = {
        "EncData": _encrypted_data(master, items),
        "SharedKeys": {
            "enc_shares": enc_shares,
            "key_algorithm": KEY_ALGORITHM,
            "required": required,
        },
        "version": FORMAT_VERSION,
    }
    return _dumped(document)


def read_download_file(text: str, keys: Sequence[KeyPair]) -> dict[str, bytes]:
    """Decrypt a security-domain file with wrapping keys: (private key, certificate) pairs.

    Shares are matched by the certificate's `x5t_256` and decrypted in key order until the quorum
    is reached (as the Azure CLI does). Returns {tag: plaintext} in file order. Raises
    SecurityDomainError for a malformed file, a key that does not match its certificate, fewer
    than the quorum of matching shares, or a share or datum that does not decrypt.
    """
    document = _loaded(text)
    data = _encrypted_items(_object(document, "EncData"))
    shared = _object(document, "SharedKeys")
    if shared.get("key_algorithm") != KEY_ALGORITHM:
        raise SecurityDomainError(f"SharedKeys.key_algorithm must be {KEY_ALGORITHM!r}")
    required = shared.get("required")
    if not _is_int(required) or not MIN_QUORUM <= required <= MAX_QUORUM:
        raise SecurityDomainError(f"SharedKeys.required must be {MIN_QUORUM} to {MAX_QUORUM}")
    enc_shares = _list(shared, "enc_shares", shamir.MAX_SHARES, "SharedKeys.enc_shares")
    if len(enc_shares) < required:
        raise SecurityDomainError("SharedKeys has fewer shares than its quorum")
    shares = [
        _key_entry(share, f"SharedKeys.enc_shares[{i}]") for i, share in enumerate(enc_shares)
    ]
    if "version" in document and not _is_int(document["version"]):
        raise SecurityDomainError("version must be an integer")
    master = _recover_master_key(shares, required, keys)
    return _decrypted_data(master, data)


def build_restore_blob(data: Mapping[str, bytes], exchange_certificate: x509.Certificate) -> str:
    """A restore blob (JSON text): `data` under a fresh master key wrapped to the exchange
    certificate, as `az keyvault security-domain restore-blob` makes it.

    Raises SecurityDomainError for bad data (see build_download_file), a certificate that is not
    RSA of at least 2048 bits, or a result over 1 MiB.
    """
    items = _checked_data(data)
    public_key = _rsa_public_key(exchange_certificate)
    master = os.urandom(MASTER_KEY_SIZE)
    document = {
        "EncData": _encrypted_data(master, items),
        "WrappedKey": {
            "enc_key": jwe.encrypt_to_rsa(master, public_key),
            "x5t_256": thumbprint_s256(exchange_certificate),
        },
    }
    return _dumped(document)


def make_restore_blob(
    sd_text: str, keys: Sequence[KeyPair], exchange_certificate: x509.Certificate
) -> str:
    """read_download_file + build_restore_blob: the client side of a recovery."""
    return build_restore_blob(read_download_file(sd_text, keys), exchange_certificate)


def read_restore_blob(
    text: str, exchange_key: rsa.RSAPrivateKey, exchange_certificate: x509.Certificate
) -> dict[str, bytes]:
    """Decrypt an uploaded restore blob with this pool's exchange (transfer) key.

    Returns {tag: plaintext} in blob order. Raises SecurityDomainError for a malformed blob, a
    blob wrapped to another certificate, or a wrapped key or datum that does not decrypt.
    """
    document = _loaded(text)
    data = _encrypted_items(_object(document, "EncData"))
    enc_key, x5t_256 = _key_entry(_object(document, "WrappedKey"), "WrappedKey")
    _check_key_pair(exchange_key, exchange_certificate)
    if x5t_256 != thumbprint_s256(exchange_certificate):
        raise SecurityDomainError("The restore blob was made for another pool's transfer key")
    try:
        master = jwe.decrypt_with_rsa(enc_key, exchange_key)
    except SecurityDomainError as exc:
        raise SecurityDomainError(f"The restore blob's wrapped key: {exc.message}") from None
    if len(master) != MASTER_KEY_SIZE:
        raise SecurityDomainError(f"The restore blob's master key is not {MASTER_KEY_SIZE} bytes")
    return _decrypted_data(master, data)


def _recover_master_key(
    shares: Sequence[tuple[str, str]], required: int, keys: Sequence[KeyPair]
) -> bytes:
    decrypted: list[bytes] = []
    used: set[int] = set()
    for private_key, certificate in keys:
        if len(decrypted) == required:
            break
        _check_key_pair(private_key, certificate)
        thumbprint = thumbprint_s256(certificate)
        for index, (enc_key, x5t_256) in enumerate(shares):
            if len(decrypted) == required:
                break
            if x5t_256 != thumbprint or index in used:
                continue
            try:
                share = jwe.decrypt_with_rsa(enc_key, private_key)
            except SecurityDomainError as exc:
                raise SecurityDomainError(f"Share {index}: {exc.message}") from None
            if len(share) != 2 * MASTER_KEY_SIZE:
                raise SecurityDomainError(f"Share {index} has the wrong length")
            used.add(index)
            decrypted.append(share)
    if len(decrypted) < required:
        raise SecurityDomainError(
            f"The keys given open {len(decrypted)} share(s); the quorum is {required}"
        )
    try:
        return shamir.combine(decrypted)
    except ValueError:
        raise SecurityDomainError("The decrypted shares do not combine into a key") from None


def _encrypted_data(master: bytes, items: Sequence[tuple[str, bytes]]) -> dict[str, object]:
    data = [
        {"compact_jwe": jwe.encrypt_dir(plaintext, data_key(master, tag), kid=tag), "tag": tag}
        for tag, plaintext in items
    ]
    return {"data": data, "kdf": KDF_NAME}


def _decrypted_data(master: bytes, items: Sequence[tuple[str, str]]) -> dict[str, bytes]:
    result = {}
    for tag, token in items:
        try:
            result[tag] = jwe.decrypt_dir(token, data_key(master, tag))
        except SecurityDomainError as exc:
            raise SecurityDomainError(f"Datum {tag!r}: {exc.message}") from None
    return result


def _checked_data(data: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    if not isinstance(data, Mapping) or not 1 <= len(data) <= MAX_DATA_ITEMS:
        raise SecurityDomainError(f"Security-domain data must hold 1 to {MAX_DATA_ITEMS} items")
    items = list(data.items())
    for tag, plaintext in items:
        _checked_tag(tag)
        if not isinstance(plaintext, bytes):
            raise SecurityDomainError(f"Datum {tag!r} must be bytes")
    return items


def _encrypted_items(enc_data: Mapping[str, object]) -> list[tuple[str, str]]:
    if enc_data.get("kdf", KDF_NAME) != KDF_NAME:
        raise SecurityDomainError(f"EncData.kdf must be {KDF_NAME!r}")
    items: list[tuple[str, str]] = []
    for index, datum in enumerate(_list(enc_data, "data", MAX_DATA_ITEMS, "EncData.data")):
        where = f"EncData.data[{index}]"
        if not isinstance(datum, dict):
            raise SecurityDomainError(f"{where} must be an object")
        tag, token = _checked_tag(datum.get("tag")), datum.get("compact_jwe")
        if not isinstance(token, str):
            raise SecurityDomainError(f"{where}.compact_jwe must be a string")
        if any(tag == seen for seen, _ in items):
            raise SecurityDomainError(f"{where}.tag repeats an earlier tag")
        items.append((tag, token))
    return items


def _key_entry(value: object, where: str) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise SecurityDomainError(f"{where} must be an object")
    enc_key, x5t_256 = value.get("enc_key"), value.get("x5t_256")
    if not isinstance(enc_key, str) or not isinstance(x5t_256, str):
        raise SecurityDomainError(f"{where} needs string enc_key and x5t_256")
    return enc_key, x5t_256


def _loaded(text: str) -> dict[str, object]:
    if not isinstance(text, str):
        raise SecurityDomainError("A security-domain document must be JSON text")
    if len(text) > MAX_FILE_CHARS:
        raise SecurityDomainError(f"A security-domain document exceeds {MAX_FILE_CHARS} chars")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise SecurityDomainError("The security-domain document is not valid JSON") from None
    if not isinstance(document, dict):
        raise SecurityDomainError("The security-domain document must be a JSON object")
    return document


def _dumped(document: dict[str, object]) -> str:
    text = json.dumps(document)
    if len(text) > MAX_FILE_CHARS:
        raise SecurityDomainError(f"Encoded security-domain data exceed {MAX_FILE_CHARS} chars")
    return text


def _object(parent: Mapping[str, object], name: str) -> dict[str, object]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise SecurityDomainError(f"{name} must be a JSON object")
    return value


def _list(parent: Mapping[str, object], name: str, limit: int, where: str) -> list[object]:
    value = parent.get(name)
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise SecurityDomainError(f"{where} must be a list of 1 to {limit} items")
    return value


def _checked_tag(tag: object) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise SecurityDomainError("A datum tag must be 1-64 letters, digits, '_', '.' or '-'")
    return tag


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64u_int(value: object, name: str) -> int:
    try:
        if not isinstance(value, str):
            raise BadParameter("not a string")
        return int.from_bytes(b64u_decode(value), "big")
    except BadParameter:
        raise SecurityDomainError(f"The JWK's {name} is not base64url") from None


def _rsa_public_key(certificate: x509.Certificate) -> rsa.RSAPublicKey:
    if not isinstance(certificate, x509.Certificate):
        raise SecurityDomainError("Expected an X.509 certificate")
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise SecurityDomainError("The certificate's public key cannot be read") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise SecurityDomainError(f"Certificates need an RSA key of at least {MIN_RSA_BITS} bits")
    return key


def _check_key_pair(private_key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SecurityDomainError("Expected an RSA private key")
    public = _rsa_public_key(certificate).public_numbers()
    if private_key.public_key().public_numbers() != public:
        raise SecurityDomainError("A private key does not match its certificate")
