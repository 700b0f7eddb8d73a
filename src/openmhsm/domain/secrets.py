"""The pool's domain secrets: a public domain id and a 256-bit root every domain key derives from.

Derivation is HKDF-SHA256 with info `openmhsm/<label>`, so each purpose (barrier term, backup,
token signing) gets an independent key and a restored pool re-derives exactly the same ones.
Serialized as `[u8 version = 1][u16 id length, big-endian][domain id, UTF-8][32-byte root]`, parsed
only here.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT_SIZE = 32
FORMAT_VERSION = 1
_ID_LENGTH = struct.Struct(">BH")
# Order of the P-256 group (SEC 2, FIPS 186-4 D.1.2.3).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class DomainSecrets:
    """A domain id (public) and its root secret (never logged: kept out of the repr)."""

    domain_id: str
    root: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.root) != ROOT_SIZE:
            raise ValueError(f"domain root must be {ROOT_SIZE} bytes")
        if not self.domain_id or len(self.domain_id.encode()) > 0xFFFF:
            raise ValueError("domain id must be a non-empty string")

    @classmethod
    def generate(cls) -> DomainSecrets:
        """Fresh secrets: a random uuid4 domain id and a random root."""
        return cls(str(uuid.uuid4()), os.urandom(ROOT_SIZE))

    def derive(self, label: str) -> bytes:
        """The 32-byte key for `label`: HKDF-SHA256(root, info=b"openmhsm/" + label)."""
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"openmhsm/" + label.encode(),
        )
        return hkdf.derive(self.root)

    def barrier_key(self, term: int) -> bytes:
        """The barrier keyring's key for `term`."""
        if term < 1:
            raise ValueError("barrier terms start at 1")
        return self.derive(f"barrier/{term}")

    def backup_key(self) -> bytes:
        """The key that seals single-key backup blobs and MACs full-backup manifests."""
        return self.derive("backup")

    def token_signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The pool's P-256 token-signing key, the same on every pool of this domain."""
        scalar = int.from_bytes(self.derive("token-signing"), "big") % (_P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())

    def to_bytes(self) -> bytes:
        """The versioned serialization (secret: seal it before it touches a disk)."""
        domain_id = self.domain_id.encode()
        return _ID_LENGTH.pack(FORMAT_VERSION, len(domain_id)) + domain_id + self.root

    @classmethod
    def from_bytes(cls, data: bytes) -> DomainSecrets:
        """Parse `to_bytes` output. Raises ValueError for an unknown version or bad length."""
        if len(data) < _ID_LENGTH.size:
            raise ValueError("domain secrets are truncated")
        version, id_length = _ID_LENGTH.unpack_from(data)
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown domain secrets version {version}")
        if len(data) != _ID_LENGTH.size + id_length + ROOT_SIZE:
            raise ValueError("domain secrets have the wrong length")
        domain_id = data[_ID_LENGTH.size : _ID_LENGTH.size + id_length]
        try:
            return cls(domain_id.decode(), bytes(data[-ROOT_SIZE:]))
        except UnicodeDecodeError:
            raise ValueError("domain id is not UTF-8") from None
