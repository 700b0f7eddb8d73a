"""`mhsm key ...` run as a real process against a dev pool. Signatures are checked independently
with `cryptography` from the public JWK the CLI prints, and symmetric results through raw HTTP,
so nothing here trusts the SDK's local crypto (API §1.4)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from openmhsm.cli.key_crypto import digest_of

pytestmark = pytest.mark.integration
API = {"api-version": "2025-07-01"}
CLI = [sys.executable, "-m", "openmhsm.cli.main"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


Mhsm = Callable[[str], Run]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run_cli(argv: list[str]) -> Run:
    # Warnings in the CLI process are errors too.
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def mhsm(dev_pool: Any) -> Mhsm:
    """`mhsm("sign --name k ...")` runs `mhsm key sign --data-dir <pool> --name k ...`.
    base64url values go as `--flag=VALUE` because they may start with '-'."""

    def run(command: str) -> Run:
        verb, *rest = shlex.split(command)
        return run_cli(["key", verb, "--data-dir", str(dev_pool.data_dir), *rest])

    return run


def ok(result: Run) -> Any:
    assert (result.code, result.stderr) == (0, ""), result.stderr
    return result.json if result.stdout else None


def failed(result: Run, code: str) -> None:
    assert result.code == 1, result.stdout
    assert f"({code})" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def rsa_public(jwk: dict[str, str]) -> rsa.RSAPublicKey:
    e, n = (int.from_bytes(unb64(jwk[f])) for f in ("e", "n"))
    return rsa.RSAPublicNumbers(e, n).public_key()


def test_create_show_list_three_key_types(mhsm: Mhsm) -> None:
    rsa_name, ec_name, oct_name = unique("rsa"), unique("ec"), unique("oct")
    r = ok(
        mhsm(
            f"create --name {rsa_name} --kty RSA-HSM --size 2048 --ops sign verify "
            "--tags env=dev team=a=b"
        )
    )
    e = ok(mhsm(f"create --name {ec_name} --kty EC-HSM --curve P-384"))
    o = ok(mhsm(f"create --name {oct_name} --kty oct-HSM --size 256"))

    assert (r["kty"], r["name"], r["tags"]) == ("RSA-HSM", rsa_name, {"env": "dev", "team": "a=b"})
    assert r["key"]["key_ops"] == ["sign", "verify"] and r["attributes"]["enabled"] is True
    assert len(unb64(r["key"]["n"])) == 256
    assert (e["kty"], e["key"]["crv"]) == ("EC-HSM", "P-384")
    assert o["kty"] == "oct-HSM" and "k" not in o["key"]

    shown = ok(mhsm(f"show --name {ec_name} --version {e['version']}"))
    assert shown["kid"] == e["kid"] and shown["key"] == e["key"]
    listed = {k["name"]: k for k in ok(mhsm("list"))}
    assert {rsa_name, ec_name, oct_name} <= set(listed)
    assert listed[rsa_name]["tags"] == {"env": "dev", "team": "a=b"}

    second = ok(mhsm(f"create --name {ec_name} --kty EC-HSM --disabled"))
    versions = {v["version"]: v for v in ok(mhsm(f"list-versions --name {ec_name}"))}
    assert set(versions) == {e["version"], second["version"]}
    assert versions[second["version"]]["attributes"]["enabled"] is False


def test_table_output(mhsm: Mhsm) -> None:
    name = unique("tbl")
    ok(mhsm(f"create --name {name} --kty EC-HSM"))
    result = mhsm(f"show --name {name} --output table")
    assert result.code == 0
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert rows["name"] == name and rows["kty"] == "EC-HSM"
    assert rows["attributes.recoveryLevel"] == "Recoverable+Purgeable"


def test_rsa_sign_then_verify_independently(mhsm: Mhsm) -> None:
    name, alg = unique("rsasig"), "RS256"
    key = ok(mhsm(f"create --name {name} --kty RSA-HSM --size 2048"))
    signed = ok(mhsm(f"sign --name {name} --alg {alg} --data hello"))
    assert signed["kid"] == key["kid"]
    public = rsa_public(key["key"])
    public.verify(unb64(signed["signature"]), b"hello", padding.PKCS1v15(), hashes.SHA256())

    sig = f"--signature={signed['signature']}"
    assert ok(mhsm(f"verify --name {name} --alg {alg} --data hello {sig}"))["valid"] is True
    digest = b64(digest_of(alg, b"hello"))
    assert ok(mhsm(f"verify --name {name} --alg {alg} --digest={digest} {sig}"))["valid"] is True


def test_ec_sign_then_verify_independently(mhsm: Mhsm) -> None:
    name = unique("ecsig")
    key = ok(mhsm(f"create --name {name} --kty EC-HSM --curve P-256"))
    digest = b64(hashlib.sha256(b"payload").digest())
    signed = ok(
        mhsm(f"sign --name {name} --version {key['version']} --alg ES256 --digest={digest}")
    )
    raw = unb64(signed["signature"])
    assert len(raw) == 64  # JWS r||s
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    x, y = (int.from_bytes(unb64(key["key"][f])) for f in ("x", "y"))
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    public.verify(der, b"payload", ec.ECDSA(hashes.SHA256()))

    bad = mhsm(f"verify --name {name} --alg ES256 --data other --signature={signed['signature']}")
    assert bad.code == 1 and bad.json["valid"] is False
    assert "not valid" in bad.stderr and "Traceback" not in bad.stderr


def test_rsa_oaep_256_encrypt_decrypt(mhsm: Mhsm) -> None:
    name = unique("rsaenc")
    key = ok(mhsm(f"create --name {name} --kty RSA-HSM"))
    plain = b"attack at dawn"
    sealed = ok(mhsm(f"encrypt --name {name} --alg RSA-OAEP-256 --value={b64(plain)}"))
    opened = ok(mhsm(f"decrypt --name {name} --alg RSA-OAEP-256 --value={sealed['value']}"))
    assert unb64(opened["value"]) == plain

    # A ciphertext made outside the pool decrypts too: the pool holds the private key.
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    outside = b64(rsa_public(key["key"]).encrypt(plain, oaep))
    opened = ok(mhsm(f"decrypt --name {name} --alg RSA-OAEP-256 --value={outside}"))
    assert unb64(opened["value"]) == plain


def test_oct_gcm_is_done_by_the_pool(mhsm: Mhsm, http: httpx.Client) -> None:
    name = unique("gcm")
    key = ok(mhsm(f"create --name {name} --kty oct-HSM --size 256"))
    sealed = ok(
        mhsm(f"encrypt --name {name} --alg A256GCM --value={b64(b'secret')} --aad={b64(b'header')}")
    )
    assert len(unb64(sealed["iv"])) == 12 and len(unb64(sealed["tag"])) == 16
    assert sealed["aad"] == b64(b"header")

    body = {"alg": "A256GCM", **{f: sealed[f] for f in ("value", "iv", "tag", "aad")}}
    response = http.post(f"/keys/{name}/{key['version']}/decrypt", params=API, json=body)
    assert response.status_code == 200, response.text
    assert unb64(response.json()["value"]) == b"secret"

    flags = " ".join(f"--{f}={sealed[f]}" for f in ("value", "iv", "tag", "aad"))
    assert unb64(ok(mhsm(f"decrypt --name {name} --alg A256GCM {flags}"))["value"]) == b"secret"


def test_oct_cbcpad_is_done_by_the_pool(mhsm: Mhsm, http: httpx.Client) -> None:
    """CBCPAD is what the SDK would run locally with a random key (API §1.4)."""
    name = unique("cbc")
    ok(mhsm(f"create --name {name} --kty oct-HSM --size 256 --ops encrypt decrypt"))
    iv = b64(os.urandom(16))
    sealed = ok(mhsm(f"encrypt --name {name} --alg A256CBCPAD --value={b64(b'x' * 20)} --iv={iv}"))
    body = {"alg": "A256CBCPAD", "value": sealed["value"], "iv": iv}
    response = http.post(f"/keys/{name}//decrypt", params=API, json=body)
    assert response.status_code == 200, response.text
    assert unb64(response.json()["value"]) == b"x" * 20


def test_wrap_unwrap(mhsm: Mhsm, http: httpx.Client) -> None:
    oct_name, rsa_name = unique("kek"), unique("rsakek")
    ok(mhsm(f"create --name {oct_name} --kty oct-HSM --size 256"))
    ok(mhsm(f"create --name {rsa_name} --kty RSA-HSM"))
    dek = os.urandom(32)

    wrapped = ok(mhsm(f"wrap --name {oct_name} --alg A256KW --value={b64(dek)}"))["value"]
    assert len(unb64(wrapped)) == 40
    body = {"alg": "A256KW", "value": wrapped}
    response = http.post(f"/keys/{oct_name}//unwrapkey", params=API, json=body)
    assert response.status_code == 200, response.text
    assert unb64(response.json()["value"]) == dek
    unwrapped = ok(mhsm(f"unwrap --name {oct_name} --alg A256KW --value={wrapped}"))
    assert unb64(unwrapped["value"]) == dek

    wrapped = ok(mhsm(f"wrap --name {rsa_name} --alg RSA-OAEP-256 --value={b64(dek)}"))["value"]
    unwrapped = ok(mhsm(f"unwrap --name {rsa_name} --alg RSA-OAEP-256 --value={wrapped}"))
    assert unb64(unwrapped["value"]) == dek


def test_delete_recover_purge(mhsm: Mhsm) -> None:
    name = unique("del")
    key = ok(mhsm(f"create --name {name} --kty EC-HSM"))

    deleted = ok(mhsm(f"delete --name {name}"))
    assert deleted["recoveryId"].endswith(f"/deletedkeys/{name}")
    assert deleted["scheduledPurgeDate"] > deleted["deletedDate"]
    failed(mhsm(f"show --name {name}"), "KeyNotFound")
    assert name in {k["name"] for k in ok(mhsm("list-deleted"))}
    assert ok(mhsm(f"show-deleted --name {name}"))["name"] == name

    recovered = ok(mhsm(f"recover --name {name}"))
    assert recovered["kid"] == key["kid"]
    assert ok(mhsm(f"show --name {name}"))["key"] == key["key"]

    ok(mhsm(f"delete --name {name}"))
    assert ok(mhsm(f"purge --name {name}")) is None
    failed(mhsm(f"show-deleted --name {name}"), "KeyNotFound")
    assert name not in {k["name"] for k in ok(mhsm("list-deleted"))}


def test_errors_are_one_line_without_traceback(mhsm: Mhsm, tmp_path: Path) -> None:
    missing = unique("missing")
    failed(mhsm(f"show --name {missing}"), "KeyNotFound")
    failed(mhsm(f"sign --name {missing} --alg RS256 --data x"), "KeyNotFound")
    failed(mhsm(f"delete --name {missing}"), "KeyNotFound")

    no_pool = run_cli(["key", "list", "--data-dir", str(tmp_path)])
    assert no_pool.code == 1 and "no pool.json" in no_pool.stderr
    assert "Traceback" not in no_pool.stderr


def test_bad_arguments_are_usage_errors(mhsm: Mhsm) -> None:
    result = mhsm("encrypt --name k --alg A256GCM --value=not*base64")
    assert result.code == 2 and "not base64url" in result.stderr
    result = mhsm("sign --name k --alg RSNULL --data x")
    assert result.code == 1 and "--digest" in result.stderr


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("RS256", hashlib.sha256(b"m").digest()),
        ("PS512", hashlib.sha512(b"m").digest()),
        ("ES384", hashlib.sha384(b"m").digest()),
        ("ES256K", hashlib.sha256(b"m").digest()),
        ("HS256", b"m"),
    ],
)
def test_digest_of(alg: str, expected: bytes) -> None:
    assert digest_of(alg, b"m") == expected
