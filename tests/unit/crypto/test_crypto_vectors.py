"""Known-answer tests for the symmetric primitives, run through our public entry points.

NIST CAVP AES-GCM, SP 800-38F KW/KWP and SP 800-108 KBKDF vectors and RFC 4231 HMAC vectors are
read from the `cryptography_vectors` package; RFC 3394 / RFC 5649 examples are data files under
tests/vectors/crypto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest

from openmhsm.crypto import algorithms as jwa
from openmhsm.crypto.jwk import KeyMaterial
from openmhsm.crypto.kdf import kbkdf_counter_hmac_sha512, sp800_108_hmac_sha512
from openmhsm.errors import CryptoError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "crypto"
Record = dict[str, str]


def nist_records(path: str) -> Iterator[tuple[Record, Record]]:
    """Yield (section headers, record) for each blank-line separated record of a CAVP file.

    `[Name = value]` / `[Name=value]` lines set headers; a bare `FAIL` line marks the record.
    """
    headers: Record = {}
    record: Record = {}
    with cryptography_vectors.open_vector_file(path, "r") as handle:
        for raw in [*handle, ""]:
            line = raw.strip()
            if line.startswith("#"):
                continue
            if not line:
                if record:
                    yield dict(headers), record
                record = {}
            elif line.startswith("["):
                name, _, value = line.strip("[]").partition("=")
                headers[name.strip()] = value.strip()
            elif line == "FAIL":
                record["FAIL"] = ""
            else:
                name, _, value = line.partition("=")
                record[name.strip()] = value.strip()


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def oct_key(key: bytes) -> KeyMaterial:
    return KeyMaterial("oct", key)


# --- AES-GCM (NIST CAVP, 96-bit IV and 128-bit tag: what Key Vault uses) ---------------------


def gcm_records(path: str) -> list[Record]:
    return [
        r
        for headers, r in nist_records(path)
        if headers.get("IVlen") == "96" and headers.get("Taglen") == "128"
    ]


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_gcm_encrypt(bits: int) -> None:
    records = gcm_records(f"ciphers/AES/GCM/gcmEncryptExtIV{bits}.rsp")
    assert len(records) > 100
    for r in records:
        result = jwa.encrypt(
            oct_key(h(r["Key"])), f"A{bits}GCM", h(r["PT"]), iv=h(r["IV"]), aad=h(r["AAD"])
        )
        assert (result.ciphertext, result.tag) == (h(r["CT"]), h(r["Tag"])), r["Count"]


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_gcm_decrypt(bits: int) -> None:
    records = gcm_records(f"ciphers/AES/GCM/gcmDecrypt{bits}.rsp")
    failures = 0
    for r in records:
        key, args = oct_key(h(r["Key"])), {"iv": h(r["IV"]), "aad": h(r["AAD"]), "tag": h(r["Tag"])}
        if "FAIL" in r:
            failures += 1
            with pytest.raises(CryptoError):
                jwa.decrypt(key, f"A{bits}GCM", h(r["CT"]), **args)
        else:
            assert jwa.decrypt(key, f"A{bits}GCM", h(r["CT"]), **args) == h(r["PT"]), r["Count"]
    assert failures > 10 and len(records) - failures > 10


# --- AES key wrap (NIST SP 800-38F KW and KWP, RFC 3394, RFC 5649) ---------------------------


def wrap_names(kind: str, bits: int) -> list[str]:
    if kind == "KWP":
        return ["CKM_AES_KEY_WRAP_PAD"]
    return [f"A{bits}KW", "CKM_AES_KEY_WRAP"]


@pytest.mark.parametrize("kind", ["KW", "KWP"])
@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_key_wrap(kind: str, bits: int) -> None:
    records = [r for _, r in nist_records(f"keywrap/kwtestvectors/{kind}_AE_{bits}.txt")]
    assert len(records) == 500
    for alg in wrap_names(kind, bits):
        for r in records:
            assert jwa.wrap_key(oct_key(h(r["K"])), alg, h(r["P"])) == h(r["C"]), r["COUNT"]


@pytest.mark.parametrize("kind", ["KW", "KWP"])
@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_key_unwrap(kind: str, bits: int) -> None:
    records = [r for _, r in nist_records(f"keywrap/kwtestvectors/{kind}_AD_{bits}.txt")]
    assert sum("FAIL" in r for r in records) > 10
    for alg in wrap_names(kind, bits):
        for r in records:
            key = oct_key(h(r["K"]))
            if "FAIL" in r:
                with pytest.raises(CryptoError):
                    jwa.unwrap_key(key, alg, h(r["C"]))
            else:
                assert jwa.unwrap_key(key, alg, h(r["C"])) == h(r["P"]), r["COUNT"]


@pytest.mark.parametrize(
    ("file", "alg"),
    [("rfc3394_kw.json", "CKM_AES_KEY_WRAP"), ("rfc5649_kwp.json", "CKM_AES_KEY_WRAP_PAD")],
)
def test_rfc_key_wrap_examples(file: str, alg: str) -> None:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / file).read_text())["vectors"]
    for v in vectors:
        key = oct_key(h(v["kek"]))
        names = [alg] if alg.endswith("PAD") else [alg, f"A{key.size}KW"]
        for name in names:
            assert jwa.wrap_key(key, name, h(v["key_data"])) == h(v["ciphertext"]), v["section"]
            assert jwa.unwrap_key(key, name, h(v["ciphertext"])) == h(v["key_data"])


# --- HMAC (RFC 4231) -------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [256, 384, 512])
def test_rfc4231_hmac(bits: int) -> None:
    records = [r for _, r in nist_records(f"HMAC/rfc-4231-sha{bits}.txt")]
    assert len(records) >= 5
    for r in records:
        key = oct_key(h(r["Key"]))  # RFC key sizes are not AES sizes: built directly, not imported
        assert jwa.sign(key, f"HS{bits}", h(r["Msg"])) == h(r["MD"])
        assert jwa.verify(key, f"HS{bits}", h(r["Msg"]), h(r["MD"]))


# --- SP 800-108 KBKDF (counter mode, HMAC-SHA512, 32-bit counter before the fixed data) -------


def test_nist_kbkdf_hmac_sha512_counter() -> None:
    records = [
        r
        for headers, r in nist_records("KDF/nist-800-108-KBKDF-CTR.txt")
        if headers.get("PRF") == "HMAC_SHA512"
        and headers.get("CTRLOCATION") == "BEFORE_FIXED"
        and headers.get("RLEN") == "32_BITS"
    ]
    assert len(records) == 40
    for r in records:
        derived = kbkdf_counter_hmac_sha512(h(r["KI"]), h(r["FixedInputData"]), int(r["L"]))
        assert derived == h(r["KO"]), r["COUNT"]


def test_sp800_108_security_domain_known_answer() -> None:
    # API.md §4.2: the Azure CLI's self-test of its "sp108_kdf".
    derived = sp800_108_hmac_sha512(b"A" * 32, b"label", b"context", 256)
    assert derived.hex().startswith("f0ca51f6") and derived.hex().endswith("9575")
    assert len(derived) == 32
