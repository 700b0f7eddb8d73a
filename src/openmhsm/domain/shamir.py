"""Shamir secret sharing over GF(257), byte by byte, in the Azure security-domain share format.

Each secret byte is the constant term of its own random polynomial of degree threshold - 1 over
GF(257). A share holds one little-endian uint16 word per secret byte, `(x << 9) | v`, where x is the
share index (1..N) and v the polynomial's value at x (0..256): a 32-byte secret gives 64-byte
shares, exactly as `az keyvault security-domain` reads them (API.md §4.2).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence

PRIME = 257
MAX_SHARES = 126  # the Azure CLI's SharedSecret.max_shares; x must also fit in the word's 7 bits
MIN_THRESHOLD = 2
_X_SHIFT = 9
_V_MASK = (1 << _X_SHIFT) - 1
_WORD = 2


def split(secret: bytes, shares: int, threshold: int) -> list[bytes]:
    """Split `secret` into `shares` shares, any `threshold` of which reconstruct it.

    Share i (1-based) is returned at index i - 1. Raises ValueError for an empty secret, a share
    count outside 2..126, or a threshold outside 2..shares.
    """
    if not secret:
        raise ValueError("the secret must not be empty")
    if not MIN_THRESHOLD <= shares <= MAX_SHARES:
        raise ValueError(f"the share count must be {MIN_THRESHOLD} to {MAX_SHARES}")
    if not MIN_THRESHOLD <= threshold <= shares:
        raise ValueError(f"the threshold must be {MIN_THRESHOLD} to the share count")
    words: list[list[int]] = [[] for _ in range(shares)]
    for byte in secret:
        # Fresh coefficients per byte (the CLI reuses one polynomial's for every byte).
        coefficients = [byte] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
        for x in range(1, shares + 1):
            words[x - 1].append((x << _X_SHIFT) | _evaluate(coefficients, x))
    return [struct.pack(f"<{len(secret)}H", *share) for share in words]


def combine(shares: Sequence[bytes]) -> bytes:
    """Reconstruct the secret from at least two shares made by `split` (Lagrange at x = 0).

    Raises ValueError for fewer than two shares, shares of different or odd length, a share whose
    words disagree on its index, a repeated index, a value of 257 or more, or a result that is not
    a byte: every case means a wrong or damaged share. Fewer shares than the threshold give a
    wrong secret, which callers detect by its failing to decrypt what it protects.
    """
    if len(shares) < MIN_THRESHOLD:
        raise ValueError(f"at least {MIN_THRESHOLD} shares are needed")
    length = len(shares[0])
    if length == 0 or length % _WORD or any(len(share) != length for share in shares):
        raise ValueError("shares must be non-empty, of even length, and all the same length")
    count = length // _WORD
    xs: list[int] = []
    values: list[tuple[int, ...]] = []
    for share in shares:
        words = struct.unpack(f"<{count}H", share)
        x = words[0] >> _X_SHIFT
        if x == 0 or any(word >> _X_SHIFT != x for word in words):
            raise ValueError("a share's words disagree on its index")
        if any(word & _V_MASK >= PRIME for word in words):
            raise ValueError("a share holds a value outside GF(257)")
        xs.append(x)
        values.append(tuple(word & _V_MASK for word in words))
    if len(set(xs)) != len(xs):
        raise ValueError("two shares have the same index")
    basis = _lagrange_basis_at_zero(xs)
    secret = bytearray()
    for position in range(count):
        byte = sum(b * v[position] for b, v in zip(basis, values, strict=True)) % PRIME
        if byte > 0xFF:
            raise ValueError("the shares do not reconstruct a byte string")
        secret.append(byte)
    return bytes(secret)


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """The polynomial sum(c[k] * x**k) mod 257, by Horner's rule."""
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value


def _lagrange_basis_at_zero(xs: Sequence[int]) -> list[int]:
    """l_i(0) = prod_{j != i} x_j / (x_j - x_i) mod 257 for each share index x_i."""
    basis = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        basis.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return basis
