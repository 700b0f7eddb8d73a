"""Sealing the domain secrets to a partition's disk under a per-partition seal key file.

The seal key is 32 random bytes in a 0600 file. The sealed file is `[u8 version = 1][12-byte nonce]
[ciphertext][16-byte tag]`, AES-256-GCM with AAD `openmhsm/sealed/v1`, written atomically with
mode 0600, so a restarted partition unseals itself with no human step (DESIGN §5).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.domain.secrets import DomainSecrets

SEAL_KEY_SIZE = 32
FORMAT_VERSION = 1
_AAD = b"openmhsm/sealed/v1"
_NONCE_SIZE = 12


class UnsealError(Exception):
    """The sealed secrets or the seal key cannot be read, or do not open."""


def seal_to_file(secrets: DomainSecrets, sealed_path: Path, seal_key_path: Path) -> None:
    """Seal `secrets` into `sealed_path` (replaced atomically, mode 0600) under the key in
    `seal_key_path`, creating that key (mode 0600) if missing. Raises UnsealError for an
    unusable seal key file and OSError when a file cannot be written."""
    key = _load_or_create_seal_key(seal_key_path)
    nonce = os.urandom(_NONCE_SIZE)
    sealed = bytes([FORMAT_VERSION]) + nonce + AESGCM(key).encrypt(nonce, secrets.to_bytes(), _AAD)
    _write_atomically(sealed_path, sealed)


def unseal_from_file(sealed_path: Path, seal_key_path: Path) -> DomainSecrets:
    """The secrets sealed in `sealed_path`. Raises UnsealError."""
    key = _read_seal_key(seal_key_path)
    try:
        data = sealed_path.read_bytes()
    except OSError as exc:
        raise UnsealError(f"cannot read {sealed_path}: {exc.strerror}") from exc
    if len(data) < 1 + _NONCE_SIZE + 16:
        raise UnsealError(f"{sealed_path} is truncated")
    if data[0] != FORMAT_VERSION:
        raise UnsealError(f"{sealed_path}: unknown sealed format version {data[0]}")
    nonce, ciphertext = data[1 : 1 + _NONCE_SIZE], data[1 + _NONCE_SIZE :]
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _AAD)
    except InvalidTag:
        raise UnsealError(f"{sealed_path} does not open with {seal_key_path}") from None
    try:
        return DomainSecrets.from_bytes(plaintext)
    except ValueError as exc:
        raise UnsealError(f"{sealed_path}: {exc}") from None


def _load_or_create_seal_key(path: Path) -> bytes:
    """The seal key at `path`, created first if missing. Two racing creators agree: the file is
    written under a temporary name and linked into place, which fails if it already exists."""
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".seal-key-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(os.urandom(SEAL_KEY_SIZE))
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
        _fsync_directory(path.parent)
    return _read_seal_key(path)


def _read_seal_key(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            key = file.read(SEAL_KEY_SIZE + 1)
    except OSError as exc:
        raise UnsealError(f"cannot read seal key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UnsealError(f"seal key {path} is accessible to other users (need mode 0600)")
    if len(key) != SEAL_KEY_SIZE:
        raise UnsealError(f"seal key {path} must be {SEAL_KEY_SIZE} bytes")
    return key


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a 0600 temporary file beside `path`, fsync it, rename it over `path`."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
