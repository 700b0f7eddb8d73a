"""An unmodified application using `DefaultAzureCredential()` works against the pool with
nothing but the environment `mhsm env` prints (DESIGN §9)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dev_pool import DevPool

# What an application would contain: no pool-specific code except reading its vault URL.
APP = """
import hashlib
import os

from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

credential = DefaultAzureCredential()
client = KeyClient(vault_url=os.environ["MHSM_URL"], credential=credential)
key = client.create_ec_key("app-signing-key", curve="P-256")
crypto = CryptographyClient(key, credential=credential)
digest = hashlib.sha256(b"hello from an unmodified app").digest()
signed = crypto.sign(SignatureAlgorithm.es256, digest)
assert crypto.verify(SignatureAlgorithm.es256, digest, signed.signature).is_valid
print("signed", key.id, len(signed.signature))
client.close()
crypto.close()
credential.close()
"""
APP_TIMEOUT = 60


def mhsm_env(data_dir: Path) -> dict[str, str]:
    """The variables of `mhsm env --data-dir DIR`, parsed from its `export K=V` lines."""
    out = subprocess.run(
        [sys.executable, "-m", "openmhsm.cli.main", "env", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    env = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2 and "=" in words[1], line
        name, _, value = words[1].partition("=")
        env[name] = value
    return env


@pytest.fixture(scope="module")
def printed_env(dev_pool: DevPool) -> dict[str, str]:
    return mhsm_env(dev_pool.data_dir)


def test_mhsm_env_names_the_pool(dev_pool: DevPool, printed_env: dict[str, str]) -> None:
    env = printed_env
    assert env["MHSM_URL"] == dev_pool.url
    assert Path(env["REQUESTS_CA_BUNDLE"]).read_text().startswith("-----BEGIN CERTIFICATE")
    assert "IDENTITY_ENDPOINT" in env and "IDENTITY_HEADER" in env


@pytest.mark.parametrize(
    "route",
    [
        "everything-mhsm-env-prints",
        "environment-credential-only",  # AZURE_* (client secret); no IDENTITY_*
        "managed-identity-only",  # IDENTITY_ENDPOINT/IDENTITY_HEADER; no AZURE_*
    ],
)
def test_default_azure_credential_app_creates_and_signs(
    printed_env: dict[str, str], tmp_path: Path, route: str
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    printed = printed_env
    dropped = {"environment-credential-only": "IDENTITY_", "managed-identity-only": "AZURE_"}.get(
        route
    )
    if dropped:
        printed = {k: v for k, v in printed.items() if not k.startswith(dropped)}
    # Only what `mhsm env` prints, plus what any process has: nothing from this test run.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **printed}
    try:
        done = subprocess.run(
            [sys.executable, str(app)],
            env=env,
            capture_output=True,
            text=True,
            timeout=APP_TIMEOUT,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the app hung for {APP_TIMEOUT} s: {exc.stderr!r}") from None
    assert done.returncode == 0, (
        f"the unmodified app failed with the environment of `mhsm env`:\n{done.stderr[-3000:]}"
    )
    assert done.stdout.startswith("signed https://")
