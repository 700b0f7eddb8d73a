"""domain/shamir.py: GF(257) byte-wise sharing in the CLI's little-endian `(x << 9) | v` words."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import struct

import pytest

from openmhsm.domain.shamir import MAX_SHARES, PRIME, combine, split

SECRET = bytes(range(0, 256, 8))  # 32 bytes, 0x00 and 0xF8 included


def words(share: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(share) // 2}H", share)


def test_share_format_is_little_endian_index_and_value_words() -> None:
    shares = split(SECRET, 5, 3)
    assert len(shares) == 5
    for x, share in enumerate(shares, start=1):
        assert len(share) == 2 * len(SECRET)
        assert all(w >> 9 == x and (w & 0x1FF) < PRIME for w in words(share))
        assert (share[0] | share[1] << 8) >> 9 == x  # little-endian: the index is in byte 1


def test_known_answer_in_the_cli_word_format() -> None:
    # Bytes 0x41 and 0xC8 on f(x) = s + a*x mod 257 with a = 5 and a = 100:
    # x=1: 70, 43 (300 mod 257); x=2: 75, 143 (400 mod 257). Words are (x << 9) | v, LE.
    share_1 = bytes.fromhex("4602 2b02")
    share_2 = bytes.fromhex("4b04 8f04")
    assert combine([share_1, share_2]) == b"\x41\xc8"
    assert combine([share_2, share_1]) == b"\x41\xc8"


@pytest.mark.parametrize(
    ("n", "m"), [(n, m) for n in range(2, 6) for m in range(2, n + 1)], ids=lambda v: str(v)
)
def test_every_subset_of_at_least_threshold_reconstructs(n: int, m: int) -> None:
    secret = os.urandom(32)
    shares = split(secret, n, m)
    for size in range(m, n + 1):
        for subset in itertools.combinations(shares, size):
            assert combine(subset) == secret
            assert combine(subset[::-1]) == secret


@pytest.mark.parametrize(("n", "m"), [(3, 2), (5, 3), (5, 5), (10, 4)])
def test_fewer_than_threshold_shares_do_not_reconstruct(n: int, m: int) -> None:
    secret = os.urandom(32)
    shares = split(secret, n, m)
    for subset in itertools.combinations(shares, m - 1):
        if len(subset) < 2:
            continue  # combine refuses a single share outright
        # A ValueError (a 256 in the result) is also a non-reconstruction.
        with contextlib.suppress(ValueError):
            assert combine(subset) != secret  # fails with probability about 257**-32


def test_ten_shares_random_subsets() -> None:
    rng = random.Random(1)  # the subsets, not the shares, are seeded
    secret = os.urandom(32)
    shares = split(secret, 10, 6)
    for _ in range(50):
        size = rng.randint(6, 10)
        assert combine(rng.sample(shares, size)) == secret


def test_limits_of_the_cli_format() -> None:
    shares = split(b"\xff" * 4, MAX_SHARES, MAX_SHARES)
    assert words(shares[-1])[0] >> 9 == MAX_SHARES
    assert combine(shares) == b"\xff" * 4
    assert combine(split(b"\x00", 2, 2)) == b"\x00"


def test_coefficients_are_fresh_for_every_byte() -> None:
    # With one polynomial for all bytes (as the CLI does), equal bytes give equal share values.
    values = {w & 0x1FF for w in words(split(b"\x07" * 32, 3, 3)[0])}
    assert len(values) > 1


@pytest.mark.parametrize(
    ("secret", "n", "m"),
    [(b"", 3, 2), (SECRET, 1, 1), (SECRET, 3, 1), (SECRET, 3, 4), (SECRET, MAX_SHARES + 1, 2)],
)
def test_split_rejects_bad_parameters(secret: bytes, n: int, m: int) -> None:
    with pytest.raises(ValueError):
        split(secret, n, m)


def _word_share(x: int, values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}H", *((x << 9) | v for v in values))


def test_combine_rejects_malformed_shares() -> None:
    a, b, _ = split(SECRET, 3, 2)
    cases = [
        [a],  # a single share
        [],
        [a, b[:-2]],  # different lengths
        [a[:-1], b[:-1]],  # odd length
        [b"", b""],
        [a, a],  # same index twice
        [a, _word_share(1, [0] * 32)],  # another share claiming index 1
        [a, b[:2] + _word_share(3, [0] * 31)],  # words disagree on their index
        [_word_share(0, [1] * 32), b],  # index 0
        [_word_share(1, [257] * 32), b],  # value outside GF(257)
    ]
    for shares in cases:
        with pytest.raises(ValueError):
            combine(shares)


def test_combine_rejects_a_result_that_is_not_a_byte() -> None:
    # f(x) = 256 + 0*x: shares (1, 256) and (2, 256) interpolate to 256 at zero.
    with pytest.raises(ValueError, match="byte"):
        combine([_word_share(1, [256]), _word_share(2, [256])])


def test_a_flipped_value_changes_the_result() -> None:
    a, b, _ = split(SECRET, 3, 2)
    bad = bytearray(a)
    bad[0] ^= 0x01  # the low bit of v in the first word
    with contextlib.suppress(ValueError):
        assert combine([bytes(bad), b]) != SECRET
