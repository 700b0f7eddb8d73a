"""`mhsm security-domain ...` run as real processes (issue 4, client side): activation of a
`--no-activate` pool by download, then disaster recovery into `--recovery` pools through the CLI
alone, with a restore blob and with the wrapping keys directly."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyVaultKey
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dev_pool import DevPool, start_pool

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "openmhsm.cli.main"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def mhsm(*argv: str | Path) -> Run:
    env = {**os.environ, "PYTHONWARNINGS": "error"}  # warnings in the CLI are errors too
    proc = subprocess.run(
        [*CLI, "security-domain", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Run) -> Any:
    assert (result.code, result.stderr) == (0, ""), result.stderr
    return json.loads(result.stdout)


def failed(result: Run, *words: str) -> str:
    assert result.code == 1, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr
    return result.stderr


def state(pool: DevPool) -> str:
    with pool.http() as http:
        return str(http.get("/readyz").json()["state"])


@dataclass
class Activated:
    pool: DevPool
    keys: Path
    sd_file: Path
    backup: bytes
    public: tuple[bytes, bytes]


@pytest.fixture(scope="module")
def activated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Activated]:
    """Three wrapping keys from the CLI, and a `--no-activate` pool activated by
    `security-domain download` to them (quorum 2), holding one backed-up key."""
    tmp = tmp_path_factory.mktemp("cli-sd")
    keys = tmp / "keys"
    made = ok(mhsm("make-wrapping-keys", "--count", "3", "--out", keys))
    assert [Path(m["certificate"]).name for m in made] == ["w0.cer", "w1.cer", "w2.cer"]
    assert stat.S_IMODE((keys / "w0.key").stat().st_mode) == 0o600
    failed(mhsm("make-wrapping-keys", "--out", keys), "already exists")

    pool = start_pool(tmp, "--no-activate")
    try:
        assert state(pool) == "NotActivated"
        # DER certificates work as well as PEM.
        der = keys / "w1-der.cer"
        der.write_bytes(
            x509.load_pem_x509_certificate((keys / "w1.cer").read_bytes()).public_bytes(
                serialization.Encoding.DER
            )
        )
        sd_file = tmp / "sd.json"
        args = ("--data-dir", pool.data_dir, "--security-domain-file", sd_file, "--sd-quorum")
        certs = ("--sd-wrapping-keys", keys / "w0.cer", der, keys / "w2.cer")
        failed(mhsm("download", *args, "4", *certs), "--sd-quorum must be 2 to 3")
        failed(mhsm("download", *args, "2", *certs[:3]), "3 to 10 certificates, not 2")
        assert not sd_file.exists() and state(pool) == "NotActivated"

        out = ok(mhsm("download", *args, "2", *certs))
        assert out["status"] == "Success" and out["quorum"] == 2
        assert stat.S_IMODE(sd_file.stat().st_mode) == 0o600
        document = json.loads(sd_file.read_text())
        assert len(document["SharedKeys"]["enc_shares"]) == 3
        assert state(pool) == "Active"
        failed(mhsm("download", *args, "2", *certs), "already exists")

        pool.grant_key_roles()  # --no-activate: the admin holds Managed HSM Administrator only
        client = pool.key_client()
        key = client.create_ec_key("survivor", curve="P-256")
        backup = client.backup_key("survivor")
        public = _xy(key)
        yield Activated(pool, keys, sd_file, backup, public)
    finally:
        pool.stop()


def _xy(key: KeyVaultKey) -> tuple[bytes, bytes]:
    return getattr(key.key, "x"), getattr(key.key, "y")  # noqa: B009 - dynamic fields


def test_restore_blob_below_quorum_fails_clearly(activated: Activated, tmp_path: Path) -> None:
    out = tmp_path / "blob.json"
    args = ("restore-blob", "--sd-file", activated.sd_file, "--sd-file-restore-blob", out)
    exchange = ("--sd-exchange-key", activated.keys / "w1.cer")  # any RSA certificate will do
    failed(
        mhsm(*args, *exchange, "--sd-wrapping-keys", activated.keys / "w0.key"),
        "open 1 share(s); the quorum is 2",
    )
    failed(mhsm(*args, "--sd-wrapping-keys", activated.keys / "w0.key"), "--sd-exchange-key")
    assert not out.exists()


def test_recovery_through_a_restore_blob(activated: Activated, tmp_path: Path) -> None:
    pool = start_pool(tmp_path, "--recovery")
    try:
        assert state(pool) == "Recovery"
        exchange = tmp_path / "ek.cer"
        data = ("--data-dir", pool.data_dir)
        shown = ok(mhsm("init-recovery", *data, "--sd-exchange-key", exchange))
        assert shown["x5t#S256"] and exchange.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
        failed(mhsm("init-recovery", *data, "--sd-exchange-key", exchange), "already exists")

        # The second key: encrypted, in another folder, its certificate given explicitly.
        secret = tmp_path / "vault" / "second.pem"
        secret.parent.mkdir()
        key = serialization.load_pem_private_key((activated.keys / "w2.key").read_bytes(), None)
        secret.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"s3cret"),
            )
        )
        out = tmp_path / "blob.json"
        args = ("restore-blob", "--sd-file", activated.sd_file, "--sd-exchange-key", exchange,
                "--sd-file-restore-blob", out, "--sd-wrapping-keys", activated.keys / "w0.key",
                secret)  # fmt: skip
        certs = ("--sd-wrapping-certs", activated.keys / "w2.cer")
        failed(mhsm(*args, "--passwords", "", "s3cret"), "no certificate for", "second.pem")
        failed(mhsm(*args, *certs), "second.pem", "encrypted")
        failed(mhsm(*args, *certs, "--passwords", "", "wrong"), "wrong password")
        made = ok(mhsm(*args, *certs, "--passwords", "", "s3cret"))
        assert made["x5t_256"] == shown["x5t#S256"]
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert state(pool) == "Recovery"

        failed(mhsm("upload", *data, "--restore-blob", activated.sd_file), "not a restore blob")
        ok(mhsm("upload", *data, "--restore-blob", out, "--no-wait"))
        assert ok(mhsm("wait", *data, "--target", "upload", "--timeout", "30"))["status"] == (
            "Success"
        )
        assert state(pool) == "Active"
        pool.grant_key_roles()
        restored = pool.key_client().restore_key_backup(activated.backup)
        assert _xy(restored) == activated.public
    finally:
        pool.stop()


def test_recovery_by_upload_with_the_wrapping_keys(activated: Activated, tmp_path: Path) -> None:
    pool = start_pool(tmp_path, "--recovery")
    try:
        exchange = tmp_path / "ek.cer"
        data = ("--data-dir", pool.data_dir)
        ok(mhsm("init-recovery", *data, "--sd-exchange-key", exchange))
        keys = [activated.keys / name for name in ("w1.key", "w2.key")]
        upload = ("upload", *data, "--sd-file", activated.sd_file, "--sd-exchange-key", exchange)
        failed(mhsm(*upload, "--sd-wrapping-keys", keys[0]), "the quorum is 2")
        assert state(pool) == "Recovery"
        status = ok(mhsm(*upload, "--sd-wrapping-keys", *keys))
        assert status["status"] == "Success"
        assert state(pool) == "Active"
        waited = mhsm("wait", *data, "--target-operation", "upload", "-o", "table")
        assert waited.code == 0 and "status         Success" in waited.stdout.splitlines()
        pool.grant_key_roles()
        restored = pool.key_client().restore_key_backup(activated.backup)
        assert _xy(restored) == activated.public
    finally:
        pool.stop()


def test_service_errors_print_key_vault_code(activated: Activated, tmp_path: Path) -> None:
    data = ("--data-dir", activated.pool.data_dir)
    assert ok(mhsm("wait", *data, "--target", "download"))["status"] == "Success"
    # An active pool has no transfer key: Key Vault's `(code) message`, exit 1.
    failed(mhsm("init-recovery", *data, "--sd-exchange-key", tmp_path / "ek.cer"), "(Forbidden)")
    assert not (tmp_path / "ek.cer").exists()
    failed(mhsm("wait", "--data-dir", tmp_path), "no pool.json")
