"""Barrier: record format, path binding, tampering, terms and versions."""

from __future__ import annotations

import os
import struct

import pytest

from openmhsm.barrier.barrier import Barrier, SealError
from openmhsm.barrier.keyring import Keyring

PATH = "/pool1/keys/k1/abc"


@pytest.fixture
def barrier() -> Barrier:
    return Barrier(Keyring({7: os.urandom(32)}, 7))


def test_round_trip_and_format(barrier: Barrier) -> None:
    blob = barrier.seal(PATH, b"secret record")
    assert blob[:5] == struct.pack(">IB", 7, 1)
    assert len(blob) == 5 + 12 + len(b"secret record") + 16
    assert b"secret record" not in blob
    assert barrier.open(PATH, blob) == b"secret record"
    assert Barrier.term_of(blob) == 7


def test_nonces_are_fresh(barrier: Barrier) -> None:
    assert barrier.seal(PATH, b"x") != barrier.seal(PATH, b"x")


def test_empty_plaintext(barrier: Barrier) -> None:
    assert barrier.open(PATH, barrier.seal(PATH, b"")) == b""


def test_record_moved_to_another_path_fails(barrier: Barrier) -> None:
    blob = barrier.seal(PATH, b"v")
    for other in ("/pool1/keys/k1/abd", "/pool2/keys/k1/abc", PATH + "/", ""):
        with pytest.raises(SealError, match="authentication"):
            barrier.open(other, blob)


@pytest.mark.parametrize("index", [5, 10, 17, -1, -16, -17])
def test_tampered_byte_fails(barrier: Barrier, index: int) -> None:
    blob = bytearray(barrier.seal(PATH, b"some plaintext"))
    blob[index] ^= 0x01
    with pytest.raises(SealError):
        barrier.open(PATH, bytes(blob))


def test_truncated_record_fails(barrier: Barrier) -> None:
    blob = barrier.seal(PATH, b"v")
    for cut in (0, 4, 5, 5 + 12 + 15, len(blob) - 1):
        with pytest.raises(SealError):
            barrier.open(PATH, blob[:cut])
    with pytest.raises(SealError):
        Barrier.term_of(blob[:3])


def test_unknown_version_fails(barrier: Barrier) -> None:
    blob = bytearray(barrier.seal(PATH, b"v"))
    blob[4] = 2
    with pytest.raises(SealError, match="version 2"):
        barrier.open(PATH, bytes(blob))


def test_unknown_term_fails(barrier: Barrier) -> None:
    blob = barrier.seal(PATH, b"v")
    with pytest.raises(SealError, match="term 8"):
        barrier.open(PATH, struct.pack(">I", 8) + blob[4:])


def test_relabelled_term_fails_even_with_a_known_term() -> None:
    key = os.urandom(32)
    ring = Keyring({1: key, 2: key}, 1)  # same key under both terms: only the AAD differs
    blob = Barrier(ring).seal(PATH, b"v")
    with pytest.raises(SealError, match="authentication"):
        Barrier(ring).open(PATH, struct.pack(">I", 2) + blob[4:])


def test_rotation_seals_under_the_new_term_and_opens_old_records() -> None:
    old = Barrier(Keyring({1: os.urandom(32)}, 1))
    old_blob = old.seal(PATH, b"old")
    new = Barrier(old.keyring.rotate(os.urandom(32)))
    new_blob = new.seal(PATH, b"new")
    assert Barrier.term_of(new_blob) == 2
    assert new.open(PATH, old_blob) == b"old"
    assert new.open(PATH, new_blob) == b"new"
    with pytest.raises(SealError, match="term 2"):
        old.open(PATH, new_blob)


def test_wrong_key_fails() -> None:
    blob = Barrier(Keyring({1: os.urandom(32)}, 1)).seal(PATH, b"v")
    with pytest.raises(SealError):
        Barrier(Keyring({1: os.urandom(32)}, 1)).open(PATH, blob)
