"""Key derivation: HKDF-SHA256 for our own key hierarchy, and SP 800-108 counter-mode KDF with
HMAC-SHA512 as Azure's security-domain format ("sp108_kdf") uses it.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from openmhsm.errors import BadParameter

_HKDF_MAX = 255 * 32
_SHA512_BYTES = 64
_COUNTER_MAX = 2**32 - 1


def derive_key(root: bytes, label: str, length: int = 32) -> bytes:
    """Derive `length` bytes from root with HKDF-SHA256, salt None, info b"openmhsm/" + label.

    Distinct labels give independent keys. Raises BadParameter for an empty root or label, or a
    length outside 1..8160.
    """
    if not root:
        raise BadParameter("Root key must not be empty")
    if not label:
        raise BadParameter("Derivation label must not be empty")
    if not 1 <= length <= _HKDF_MAX:
        raise BadParameter(f"Derived key length must be 1 to {_HKDF_MAX} bytes")
    info = b"openmhsm/" + label.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(root)


def sp800_108_hmac_sha512(key: bytes, label: bytes, context: bytes, length_bits: int) -> bytes:
    """SP 800-108 counter-mode KDF, PRF HMAC-SHA512, 32-bit counter before the fixed input
    label || 0x00 || context || BE32(length_bits).

    Raises BadParameter if length_bits is not a positive multiple of 8 below 2**32.
    """
    _check_length_bits(length_bits)
    fixed = label + b"\x00" + context + length_bits.to_bytes(4, "big")
    return kbkdf_counter_hmac_sha512(key, fixed, length_bits)


def kbkdf_counter_hmac_sha512(key: bytes, fixed_input: bytes, length_bits: int) -> bytes:
    """SP 800-108 counter mode over caller-built fixed input: K(i) = HMAC-SHA512(key,
    BE32(i) || fixed_input) for i = 1..n, truncated to length_bits.

    Raises BadParameter if length_bits is not a positive multiple of 8 below 2**32.
    """
    _check_length_bits(length_bits)
    length = length_bits // 8
    blocks = -(-length // _SHA512_BYTES)  # < 2**32 / 512, so the counter cannot wrap
    output = b"".join(
        hmac.digest(key, i.to_bytes(4, "big") + fixed_input, "sha512") for i in range(1, blocks + 1)
    )
    return output[:length]


def _check_length_bits(length_bits: int) -> None:
    if length_bits <= 0 or length_bits % 8 or length_bits > _COUNTER_MAX:
        raise BadParameter("Output length must be a positive multiple of 8 bits below 2**32")
