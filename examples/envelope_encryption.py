"""Envelope encryption: the key hierarchy the Managed HSM guidance recommends for bulk data.

Only the key-encryption key (KEK) lives in the pool. Each file gets a fresh data-encryption key
(DEK), made here: the file is encrypted locally with AES-256-GCM under the DEK, and the DEK is
stored next to the ciphertext *wrapped* by the KEK. Decrypting asks the pool to unwrap the DEK,
once per file, and decrypts locally. The pool handles a wrapped DEK, never the data.

Run it against a pool started with `mhsm up --dev --data-dir ./pool`:

    python examples/envelope_encryption.py encrypt --pool ./pool --key files-kek in.pdf in.enc
    python examples/envelope_encryption.py decrypt --pool ./pool --key files-kek in.enc out.pdf

`encrypt` creates the KEK (RSA-HSM 3072, wrap/unwrap only) if the pool has no key of that name.
The output file is one JSON header line (the KEK version, the wrapped DEK, the nonce), then the
ciphertext; the header is the GCM associated data, so it cannot be altered unnoticed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyOperation, KeyVaultKey, KeyVaultKeyIdentifier
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.client import Clients, connect

FORMAT = "openmhsm-envelope/1"
WRAP_ALGORITHM = KeyWrapAlgorithm.rsa_oaep_256
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size; a fresh DEK per file makes reuse moot


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kek(clients: Clients, name: str) -> KeyVaultKey:
    """The pool's KEK named `name`, created on first use. Only wrap/unwrap are allowed on it:
    a KEK that could also decrypt arbitrary data would be a weaker KEK."""
    try:
        return clients.key_client.get_key(name)
    except ResourceNotFoundError:
        return clients.key_client.create_rsa_key(
            name,
            size=3072,
            hardware_protected=True,
            key_operations=[KeyOperation.wrap_key, KeyOperation.unwrap_key],
        )


def encrypt(clients: Clients, key_name: str, plaintext: bytes) -> bytes:
    """`plaintext` encrypted under a new DEK, with the DEK wrapped by the pool's KEK."""
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    # For an RSA KEK the SDK wraps with the public key it already holds (no round trip); the
    # private key that unwraps never leaves the pool.
    with clients.crypto(kek(clients, key_name)) as wrapping:
        wrapped = wrapping.wrap_key(WRAP_ALGORITHM, dek)
    header = {
        "format": FORMAT,
        "kek": wrapped.key_id,  # with its version: a rotated KEK still unwraps old files
        "alg": str(wrapped.algorithm.value),
        "wrapped_dek": b64(wrapped.encrypted_key),
        "nonce": b64(nonce),
    }
    header_line = json.dumps(header, sort_keys=True).encode("ascii")
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, header_line)
    return header_line + b"\n" + ciphertext


def decrypt(clients: Clients, key_name: str, sealed: bytes) -> bytes:
    """The plaintext of an `encrypt` output whose DEK the KEK `key_name` wrapped. Raises
    ValueError if it is not one, and cryptography's InvalidTag if the ciphertext or its header
    were altered."""
    header_line, newline, ciphertext = sealed.partition(b"\n")
    header: dict[str, Any] = json.loads(header_line) if newline else {}
    if header.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} file")
    kek_id = KeyVaultKeyIdentifier(header["kek"])
    if kek_id.name.lower() != key_name.lower():
        raise ValueError(f"its DEK is wrapped by {kek_id.name!r}, not {key_name!r}")
    # The key's name and version, in this pool: a file outlives the URL of the pool that
    # wrote it (a pool restored from backup elsewhere unwraps it too).
    version = kek_id.version or ""
    with clients.crypto(f"{clients.url}/keys/{kek_id.name}/{version}") as unwrapping:
        # Unwrapping needs the private key: always a request to the pool, once per file.
        unwrapped = unwrapping.unwrap_key(
            KeyWrapAlgorithm(header["alg"]), base64.b64decode(header["wrapped_dek"])
        )
    nonce = base64.b64decode(header["nonce"])
    return AESGCM(unwrapped.key).decrypt(nonce, ciphertext, header_line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["encrypt", "decrypt"])
    parser.add_argument("--pool", required=True, help="the pool's data dir (or its pool.json)")
    parser.add_argument("--key", required=True, help="the KEK's name in the pool")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)

    # connect() reads pool.json: the URL, the pool CA, the admin credential, and a retry
    # policy with exponential back-off that also retries the (idempotent) wrap/unwrap POSTs.
    with connect(args.pool) as clients:
        data = args.input.read_bytes()
        if args.action == "encrypt":
            args.output.write_bytes(encrypt(clients, args.key, data))
            print(f"encrypted {len(data)} bytes to {args.output}")
            return 0
        try:
            plaintext = decrypt(clients, args.key, data)
        except (ValueError, KeyError, InvalidTag) as e:
            print(f"cannot decrypt {args.input}: {e or 'altered or wrong key'}", file=sys.stderr)
            return 1
        args.output.write_bytes(plaintext)
        print(f"decrypted {len(plaintext)} bytes to {args.output}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
