"""Keyring: terms, rotation and validation."""

from __future__ import annotations

import os

import pytest

from openmhsm.barrier.keyring import Keyring


def test_rotate_adds_an_active_term_and_keeps_the_old_ones() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    ring = Keyring({1: k1}, 1)
    rotated = ring.rotate(k2)
    assert (rotated.active, rotated.terms) == (2, (1, 2))
    assert rotated.key(1) == k1 and rotated.key(2) == k2
    assert (ring.active, ring.terms) == (1, (1,))


def test_unknown_term_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        Keyring({1: os.urandom(32)}, 1).key(2)


@pytest.mark.parametrize(
    ("terms", "active"),
    [
        ({1: b"short"}, 1),
        ({0: bytes(32)}, 0),
        ({2**32: bytes(32)}, 2**32),
        ({1: bytes(32)}, 2),
        ({}, 1),
    ],
)
def test_invalid_keyrings(terms: dict[int, bytes], active: int) -> None:
    with pytest.raises(ValueError):
        Keyring(terms, active)


def test_rotate_rejects_a_bad_key() -> None:
    with pytest.raises(ValueError):
        Keyring({1: bytes(32)}, 1).rotate(b"too short")


def test_repr_hides_keys() -> None:
    key = bytes(range(32))
    text = repr(Keyring({1: key, 5: key}, 5))
    assert text == "Keyring(terms=[1, 5], active=5)"
