"""Record sealing: AES-256-GCM under the keyring's active term, bound to the storage path.

A sealed record is `[u32 term, big-endian][u8 format version = 1][12-byte nonce][ciphertext]
[16-byte tag]`. The AAD is the storage path (UTF-8) followed by the 5 header bytes, so a record
moved to another path, or relabelled with another term or version, fails to open. This module is
the only parser of that format.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.barrier.keyring import Keyring

FORMAT_VERSION = 1
_HEADER = struct.Struct(">IB")
_NONCE_SIZE = 12
_TAG_SIZE = 16
_MIN_SIZE = _HEADER.size + _NONCE_SIZE + _TAG_SIZE


class SealError(Exception):
    """A sealed record failed to open: wrong path, tampered, unknown term or unknown version."""


class Barrier:
    """Seals and opens records with a keyring. Random nonces: rotate the keyring well before
    2**32 records are sealed under one term."""

    __slots__ = ("_ciphers", "_keyring")

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers = {term: AESGCM(keyring.key(term)) for term in keyring.terms}

    @property
    def keyring(self) -> Keyring:
        """The keyring this barrier seals and opens with."""
        return self._keyring

    def seal(self, path: str, plaintext: bytes) -> bytes:
        """Seal `plaintext` for storage at `path` under the active term."""
        header = _HEADER.pack(self._keyring.active, FORMAT_VERSION)
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._ciphers[self._keyring.active].encrypt(
            nonce, plaintext, path.encode() + header
        )
        return header + nonce + sealed

    def open(self, path: str, blob: bytes) -> bytes:
        """The plaintext of a record read from `path`. Raises SealError."""
        if len(blob) < _MIN_SIZE:
            raise SealError(f"{path}: sealed record is truncated")
        term, version = _HEADER.unpack_from(blob)
        if version != FORMAT_VERSION:
            raise SealError(f"{path}: unknown sealed record version {version}")
        cipher = self._ciphers.get(term)
        if cipher is None:
            raise SealError(f"{path}: sealed under unknown keyring term {term}")
        header_end = _HEADER.size
        nonce = blob[header_end : header_end + _NONCE_SIZE]
        try:
            return cipher.decrypt(
                nonce, blob[header_end + _NONCE_SIZE :], path.encode() + blob[:header_end]
            )
        except InvalidTag:
            raise SealError(f"{path}: sealed record failed authentication") from None

    @staticmethod
    def term_of(blob: bytes) -> int:
        """The keyring term a sealed record names (unauthenticated: for re-sealing decisions).
        Raises SealError for a truncated record."""
        if len(blob) < _HEADER.size:
            raise SealError("sealed record is truncated")
        term: int = _HEADER.unpack_from(blob)[0]
        return term
