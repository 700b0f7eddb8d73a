"""crypto/kdf.py: HKDF labels and the SP 800-108 counter-mode KDF (NIST vectors live in
test_crypto_vectors.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from openmhsm.crypto.kdf import derive_key, kbkdf_counter_hmac_sha512, sp800_108_hmac_sha512
from openmhsm.errors import BadParameter

ROOT = bytes(range(32))


def test_derive_key_is_hkdf_sha256_with_prefixed_label() -> None:
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=b"openmhsm/barrier").derive(ROOT)
    assert derive_key(ROOT, "barrier") == expected


def test_derive_key_separates_labels_and_roots() -> None:
    keys = {
        derive_key(ROOT, "barrier"),
        derive_key(ROOT, "backup"),
        derive_key(b"x" * 32, "backup"),
    }
    assert len(keys) == 3


@pytest.mark.parametrize("length", [1, 16, 32, 64, 8160])
def test_derive_key_lengths(length: int) -> None:
    derived = derive_key(ROOT, "label", length)
    assert len(derived) == length
    assert derive_key(ROOT, "label", 8160).startswith(derived)  # HKDF output is a prefix stream


@pytest.mark.parametrize(
    ("root", "label", "length"), [(b"", "x", 32), (ROOT, "", 32), (ROOT, "x", 0), (ROOT, "x", 8161)]
)
def test_derive_key_rejects_bad_input(root: bytes, label: str, length: int) -> None:
    with pytest.raises(BadParameter):
        derive_key(root, label, length)


def test_sp800_108_single_block_matches_the_formula() -> None:
    # API.md §4.2: for L=512 only i=1 is used: HMAC-SHA512(key, 00000001|label|00|ctx|00000200).
    key = b"\x11" * 32
    expected = hmac.digest(
        key, bytes.fromhex("00000001") + b"tag" + b"\x00" + bytes.fromhex("00000200"), "sha512"
    )
    assert sp800_108_hmac_sha512(key, b"tag", b"", 512) == expected


@pytest.mark.parametrize("length_bits", [8, 256, 512, 520, 1024, 1536])
def test_sp800_108_matches_cryptography_kbkdf(length_bits: int) -> None:
    key, label, context = b"\x5c" * 32, b"hsm_backup", b"some context"
    reference = KBKDFHMAC(
        algorithm=hashes.SHA512(),
        mode=Mode.CounterMode,
        length=length_bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)
    assert sp800_108_hmac_sha512(key, label, context, length_bits) == reference


def test_kbkdf_output_is_a_prefix_stream() -> None:
    long = kbkdf_counter_hmac_sha512(b"k", b"fixed", 1024)
    assert long[:64] == hmac.digest(b"k", b"\x00\x00\x00\x01fixed", hashlib.sha512)
    assert long[64:] == hmac.digest(b"k", b"\x00\x00\x00\x02fixed", hashlib.sha512)


@pytest.mark.parametrize("length_bits", [0, -8, 7, 12, 2**32])
def test_sp800_108_rejects_bad_lengths(length_bits: int) -> None:
    with pytest.raises(BadParameter):
        sp800_108_hmac_sha512(b"k", b"label", b"", length_bits)
    with pytest.raises(BadParameter):
        kbkdf_counter_hmac_sha512(b"k", b"fixed", length_bits)
