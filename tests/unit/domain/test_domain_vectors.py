"""Interop vectors made by the Azure CLI's own security-domain code (tests/vectors/security-domain,
a copy of ../shared/vectors/security-domain): sd.json, restore-blob.json and their keys.
"""

from __future__ import annotations

import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from openmhsm.domain import blob, jwe, shamir
from openmhsm.domain.failures import SecurityDomainError

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS = REPO_ROOT / "tests" / "vectors" / "security-domain"
SHARED = REPO_ROOT.parent / "shared" / "vectors" / "security-domain"
WRAPPING = ("w0", "w1", "w2")
Pair = tuple[rsa.RSAPrivateKey, x509.Certificate]


@cache
def pair(name: str, cert_suffix: str = "cer") -> Pair:
    key = load_pem_private_key((VECTORS / f"{name}.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate((VECTORS / f"{name}.{cert_suffix}").read_bytes())


def exchange() -> Pair:
    return pair("exchange", "pem")


def text(name: str) -> str:
    return (VECTORS / name).read_text()


EXPECTED: dict[str, Any] = json.loads(text("expected.json"))
SD: dict[str, Any] = json.loads(text("sd.json"))
DATA = {tag: bytes.fromhex(value) for tag, value in EXPECTED["data_hex"].items()}


def test_the_copies_match_the_shared_vectors() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    for source in SHARED.iterdir():
        assert (VECTORS / source.name).read_bytes() == source.read_bytes(), source.name


def test_thumbprints_match_the_files() -> None:
    x5t = [share["x5t_256"] for share in SD["SharedKeys"]["enc_shares"]]
    assert x5t == [blob.thumbprint_s256(pair(name)[1]) for name in WRAPPING]
    restore = json.loads(text("restore-blob.json"))
    assert restore["WrappedKey"]["x5t_256"] == blob.thumbprint_s256(exchange()[1])
    assert blob.certificate_from_jwk(blob.certificate_jwk(exchange()[1])) == exchange()[1]


def test_each_share_opens_with_its_own_key_only() -> None:
    shares = SD["SharedKeys"]["enc_shares"]
    for (i, share), (j, name) in itertools.product(enumerate(shares), enumerate(WRAPPING)):
        if i == j:
            assert len(jwe.decrypt_with_rsa(share["enc_key"], pair(name)[0])) == 64
        else:
            with pytest.raises(SecurityDomainError):
                jwe.decrypt_with_rsa(share["enc_key"], pair(name)[0])


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(range(3), 2)))
def test_any_two_shares_give_the_master_key(a: int, b: int) -> None:
    shares = SD["SharedKeys"]["enc_shares"]
    opened = [jwe.decrypt_with_rsa(shares[i]["enc_key"], pair(WRAPPING[i])[0]) for i in (a, b)]
    assert shamir.combine(opened).hex() == EXPECTED["master_key_hex"]


def test_data_keys_open_every_datum() -> None:
    master = bytes.fromhex(EXPECTED["master_key_hex"])
    for datum in SD["EncData"]["data"]:
        key = blob.data_key(master, datum["tag"])
        assert jwe.decrypt_dir(datum["compact_jwe"], key) == DATA[datum["tag"]]


@pytest.mark.parametrize("names", list(itertools.permutations(WRAPPING, 2)))
def test_any_two_keys_read_the_file(names: tuple[str, str]) -> None:
    assert blob.read_download_file(text("sd.json"), [pair(name) for name in names]) == DATA


@pytest.mark.parametrize("name", WRAPPING)
def test_one_key_alone_fails(name: str) -> None:
    with pytest.raises(SecurityDomainError, match="quorum is 2"):
        blob.read_download_file(text("sd.json"), [pair(name)])


def test_the_cli_restore_blob_opens_with_the_exchange_key() -> None:
    restore = json.loads(text("restore-blob.json"))
    master = jwe.decrypt_with_rsa(restore["WrappedKey"]["enc_key"], exchange()[0])
    assert master.hex() == EXPECTED["restore_blob_master_key_hex"]
    assert blob.read_restore_blob(text("restore-blob.json"), *exchange()) == DATA


def test_the_cli_restore_blob_is_refused_by_another_certificate() -> None:
    with pytest.raises(SecurityDomainError, match="another pool's transfer key"):
        blob.read_restore_blob(text("restore-blob.json"), *pair("w0"))


def test_our_restore_blob_from_the_cli_file() -> None:
    keys = [pair(name.removesuffix(".key")) for name in EXPECTED["restore_blob_made_with"]]
    ours = blob.make_restore_blob(text("sd.json"), keys, exchange()[1])
    assert blob.read_restore_blob(ours, *exchange()) == DATA
