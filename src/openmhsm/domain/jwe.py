"""Compact JWE with enc A256CBC-HS512 (RFC 7516, RFC 7518 §5.2.5), as the security domain uses it.

Two key-management modes: RSA (RSA-OAEP-256 when we encrypt; RSA-OAEP and RSA1_5 also accepted
when we decrypt, as the Azure CLI does) and "dir" (the 64-byte CEK is given). The CEK splits into
MAC key = bytes 0..31 and AES-256-CBC key = bytes 32..63; the tag is the first 32 bytes of
HMAC-SHA512(MAC key, ASCII(b64 header) || IV || ciphertext || BE64(bit length of the b64 header)).
Every failure raises SecurityDomainError; the tag is checked, in constant time, before padding.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from openmhsm.crypto.jwk import b64u_decode, b64u_encode
from openmhsm.domain.failures import SecurityDomainError
from openmhsm.errors import BadParameter

ENC = "A256CBC-HS512"
CEK_SIZE = 64
MAX_TOKEN_CHARS = 1 << 20
_IV_SIZE = 16
_TAG_SIZE = 32
_MAC_KEY_SIZE = 32
_MAX_HEADER_CHARS = 4096
_OAEP_SHA256 = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
_SHA1 = hashes.SHA1()  # noqa: S303  # nosec B303  # RSA-OAEP's hash (RFC 7518 §4.3)
_RSA_PADDINGS: dict[str, padding.AsymmetricPadding] = {
    "RSA-OAEP-256": _OAEP_SHA256,
    "RSA-OAEP": padding.OAEP(padding.MGF1(_SHA1), _SHA1, None),
    "RSA1_5": padding.PKCS1v15(),
}


@dataclass(frozen=True)
class _Token:
    """The five decoded parts of a compact JWE, and the header as sent (the MAC covers it)."""

    encoded_header: str
    header: dict[str, object]
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


def encrypt_to_rsa(plaintext: bytes, public_key: rsa.RSAPublicKey, *, kid: str = "not used") -> str:
    """Encrypt to an RSA public key: alg RSA-OAEP-256 over a fresh 64-byte CEK.

    Raises SecurityDomainError if the key is not an RSA public key.
    """
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SecurityDomainError("JWE encryption needs an RSA public key")
    cek = os.urandom(CEK_SIZE)
    encrypted_key = public_key.encrypt(cek, _OAEP_SHA256)
    return _seal({"alg": "RSA-OAEP-256", "enc": ENC, "kid": kid}, encrypted_key, cek, plaintext)


def decrypt_with_rsa(token: str, private_key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt a compact JWE whose CEK is encrypted with RSA-OAEP-256, RSA-OAEP or RSA1_5.

    Raises SecurityDomainError for a malformed token, another alg or enc, a key of the wrong
    size or type, or a CEK, tag or padding that does not check out (a wrong key or a damaged
    encrypted key reports a tag mismatch, by design).
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SecurityDomainError("JWE decryption needs an RSA private key")
    parsed = _parse(token)
    alg = parsed.header.get("alg")
    scheme = _RSA_PADDINGS.get(alg) if isinstance(alg, str) else None
    if scheme is None:
        raise SecurityDomainError(f"JWE alg must be one of {', '.join(_RSA_PADDINGS)}")
    if len(parsed.encrypted_key) != (private_key.key_size + 7) // 8:
        raise SecurityDomainError("JWE encrypted key does not match the RSA key's size")
    try:
        cek = private_key.decrypt(parsed.encrypted_key, scheme)
    except ValueError:
        cek = b""
    if len(cek) != CEK_SIZE:
        # RFC 7516 §11.5: go on with a random CEK so a bad key fails exactly like a bad tag,
        # leaving no padding oracle (RSA1_5 above all).
        cek = os.urandom(CEK_SIZE)
    return _open(parsed, cek)


def encrypt_dir(plaintext: bytes, cek: bytes, *, kid: str) -> str:
    """Encrypt under a given 64-byte CEK: alg "dir", empty encrypted-key part.

    Raises SecurityDomainError if the CEK is not 64 bytes.
    """
    _check_cek(cek)
    return _seal({"alg": "dir", "enc": ENC, "kid": kid}, b"", cek, plaintext)


def decrypt_dir(token: str, cek: bytes) -> bytes:
    """Decrypt an alg "dir" compact JWE under a 64-byte CEK.

    Raises SecurityDomainError for a malformed token, another alg or enc, a non-empty encrypted
    key, a CEK that is not 64 bytes, or a tag or padding that does not check out.
    """
    _check_cek(cek)
    parsed = _parse(token)
    if parsed.header.get("alg") != "dir":
        raise SecurityDomainError('JWE alg must be "dir"')
    if parsed.encrypted_key:
        raise SecurityDomainError('A "dir" JWE must have an empty encrypted key')
    return _open(parsed, cek)


def _seal(header: dict[str, str], encrypted_key: bytes, cek: bytes, plaintext: bytes) -> str:
    encoded_header = b64u_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    iv = os.urandom(_IV_SIZE)
    padder = symmetric_padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek[_MAC_KEY_SIZE:]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    tag = _tag(cek, encoded_header, iv, ciphertext)
    parts = (encoded_header, *map(b64u_encode, (encrypted_key, iv, ciphertext, tag)))
    return ".".join(parts)


def _open(parsed: _Token, cek: bytes) -> bytes:
    if len(cek) != CEK_SIZE:
        raise SecurityDomainError("JWE content key has the wrong length")
    expected = _tag(cek, parsed.encoded_header, parsed.iv, parsed.ciphertext)
    if not hmac.compare_digest(expected, parsed.tag):
        raise SecurityDomainError("JWE authentication tag does not match")
    decryptor = Cipher(algorithms.AES(cek[_MAC_KEY_SIZE:]), modes.CBC(parsed.iv)).decryptor()
    padded = decryptor.update(parsed.ciphertext) + decryptor.finalize()
    unpadder = symmetric_padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise SecurityDomainError("JWE plaintext has invalid padding") from None


def _tag(cek: bytes, encoded_header: str, iv: bytes, ciphertext: bytes) -> bytes:
    aad = encoded_header.encode("ascii")
    message = aad + iv + ciphertext + (len(aad) * 8).to_bytes(8, "big")
    return hmac.digest(cek[:_MAC_KEY_SIZE], message, "sha512")[:_TAG_SIZE]


def _parse(token: object) -> _Token:
    if not isinstance(token, str):
        raise SecurityDomainError("A JWE must be a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise SecurityDomainError("JWE is too large")
    parts = token.split(".")
    if len(parts) != 5:
        raise SecurityDomainError("A compact JWE has exactly five parts")
    encoded_header = parts[0]
    if not 0 < len(encoded_header) <= _MAX_HEADER_CHARS:
        raise SecurityDomainError("JWE header is empty or too large")
    try:
        header_bytes, encrypted_key, iv, ciphertext, tag = map(b64u_decode, parts)
        header = json.loads(header_bytes)
    except BadParameter:
        raise SecurityDomainError("JWE part is not valid base64url") from None
    except (ValueError, RecursionError):
        raise SecurityDomainError("JWE header is not valid JSON") from None
    if not isinstance(header, dict):
        raise SecurityDomainError("JWE header must be a JSON object")
    if header.get("enc") != ENC:
        raise SecurityDomainError(f"JWE enc must be {ENC}")
    if "zip" in header or "crit" in header:
        raise SecurityDomainError("JWE zip and crit header parameters are not supported")
    if len(iv) != _IV_SIZE or len(tag) != _TAG_SIZE:
        raise SecurityDomainError("JWE iv or tag has the wrong length")
    if not ciphertext or len(ciphertext) % _IV_SIZE:
        raise SecurityDomainError("JWE ciphertext is not a whole number of AES blocks")
    return _Token(encoded_header, header, encrypted_key, iv, ciphertext, tag)


def _check_cek(cek: bytes) -> None:
    if not isinstance(cek, bytes) or len(cek) != CEK_SIZE:
        raise SecurityDomainError(f"JWE content key must be {CEK_SIZE} bytes")
