"""What the suite measures: each operation with its REST request on the pool, and whether it has
a raw-`cryptography` ceiling and a PyKMIP peer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DIGEST_256 = hashlib.sha256(b"benchmark").digest()
DIGEST_384 = hashlib.sha384(b"benchmark").digest()
PLAINTEXT_4K = bytes(range(256)) * 16
KEY_32 = bytes(range(32))
API_VERSION = "7.6"


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    key: str | None  # the pool key it uses (see KEYS)
    ceiling: bool  # raw `cryptography` can do the same work
    kmip: str | None  # what PyKMIP's server does for it, if it has the operation


# Pool keys the suite creates: name -> KeyCreateParameters.
KEYS: dict[str, dict[str, object]] = {
    "bench-rsa2048": {"kty": "RSA-HSM", "key_size": 2048},
    "bench-rsa3072": {"kty": "RSA-HSM", "key_size": 3072},
    "bench-p256": {"kty": "EC-HSM", "crv": "P-256"},
    "bench-p384": {"kty": "EC-HSM", "crv": "P-384"},
    "bench-aes256": {"kty": "oct-HSM", "key_size": 256},
}

CREATE_BODY: dict[str, object] = {"kty": "EC-HSM", "crv": "P-256"}

NOOP = "noop"

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "rsa2048-sign", "RSA-2048 sign RS256", "bench-rsa2048", True, "Sign RSA-2048 SHA-256"
    ),
    Operation("rsa2048-decrypt", "RSA-2048 decrypt OAEP-256", "bench-rsa2048", True, None),
    Operation("rsa2048-unwrap", "RSA-2048 unwrapkey OAEP-256", "bench-rsa2048", True, None),
    Operation("rsa3072-sign", "RSA-3072 sign RS256", "bench-rsa3072", True, None),
    Operation("p256-sign", "P-256 sign ES256", "bench-p256", True, None),
    Operation("p384-sign", "P-384 sign ES384", "bench-p384", True, None),
    Operation(
        "aes256gcm-encrypt",
        "AES-256-GCM encrypt 4 KiB",
        "bench-aes256",
        True,
        "Encrypt AES-256-GCM 4 KiB",
    ),
    Operation("a256kw-wrap", "A256KW wrapkey", "bench-aes256", True, None),
    Operation("get-key", "get key (P-256)", "bench-p256", False, "Get (AES-256 key)"),
    Operation(
        "create-key", "create key (EC P-256)", None, False, "Create (AES-256; no EC in KMIP)"
    ),
    Operation(NOOP, "no-op (GET /openmhsm/ping)", None, False, "DiscoverVersions"),
)


def by_name(names: str | None) -> tuple[Operation, ...]:
    """The operations named in a comma-separated list (all when `names` is empty). Raises
    ValueError for an unknown name. The no-op always runs: other ratios need it."""
    if not names:
        return OPERATIONS
    wanted = {n.strip() for n in names.split(",") if n.strip()} | {NOOP}
    unknown = wanted - {op.name for op in OPERATIONS}
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}; known: {_known()}")
    return tuple(op for op in OPERATIONS if op.name in wanted)


def _known() -> str:
    return ", ".join(op.name for op in OPERATIONS)
