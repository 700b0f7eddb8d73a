"""Every script in examples/ runs, as its docstring says to run it, against a real dev pool; and
each client `openmhsm.client.connect()` builds does one real request.

The examples run as subprocesses with nothing of this test run's environment but PATH (this
interpreter's bin first, for `python` and `mhsm`) and a temporary HOME.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from azure.keyvault.administration import KeyVaultRoleScope
from azure.keyvault.keys import KeyClient
from dev_pool import free_port

from openmhsm.cli.pool import env_lines
from openmhsm.client import connect

if TYPE_CHECKING:
    from dev_pool import DevPool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TIMEOUT = 120  # seconds; a dev pool starts in seconds, but the test machines are shared
CI_TIMEOUT = 240


def clean_env(home: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the venv's bin: not resolved, symlinks and all
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home)}


def run(
    args: list[str], tmp: Path, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args,
            env=env or clean_env(tmp),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args} hung for {timeout} s: {exc.stderr!r}") from None


def example(name: str, *args: str | Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(EXAMPLES / name), *map(str, args)], tmp)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


# --- examples/envelope_encryption.py ----------------------------------------------------------


def test_envelope_encryption_round_trip(
    dev_pool: DevPool, key_client: KeyClient, tmp_path: Path
) -> None:
    plain = tmp_path / "report.txt"
    marker = b"quarterly numbers: confidential\n"
    plain.write_bytes(marker + secrets.token_bytes(200_000))
    size = plain.stat().st_size
    sealed, back = tmp_path / "report.enc", tmp_path / "report.out"
    pool: list[str | Path] = ["--pool", dev_pool.data_dir, "--key", "files-kek"]

    assert f"encrypted {size} bytes" in ok(
        example("envelope_encryption.py", "encrypt", *pool, plain, sealed, tmp=tmp_path)
    )
    header_line, _, ciphertext = sealed.read_bytes().partition(b"\n")
    header = json.loads(header_line)
    assert header["kek"].startswith(f"{dev_pool.url}/keys/files-kek/")
    assert len(base64.b64decode(header["wrapped_dek"])) == 384  # RSA 3072 wraps a 32-byte DEK
    assert marker not in ciphertext and len(ciphertext) == size + 16  # + the GCM tag
    kek = key_client.get_key("files-kek")
    assert kek.key_type == "RSA-HSM" and kek.id == header["kek"]
    assert sorted(kek.key_operations or []) == ["unwrapKey", "wrapKey"]

    ok(example("envelope_encryption.py", "decrypt", *pool, sealed, back, tmp=tmp_path))
    assert back.read_bytes() == plain.read_bytes()

    # One flipped ciphertext bit: GCM refuses it, nothing is written.
    tampered = bytearray(sealed.read_bytes())
    tampered[-1] ^= 1
    sealed.write_bytes(bytes(tampered))
    back.unlink()
    done = example("envelope_encryption.py", "decrypt", *pool, sealed, back, tmp=tmp_path)
    assert done.returncode == 1 and "cannot decrypt" in done.stderr
    assert not back.exists()


# --- examples/default_credential_app.py -------------------------------------------------------


def test_default_credential_app_runs_on_the_env_of_mhsm_env(
    dev_pool: DevPool, key_client: KeyClient, tmp_path: Path
) -> None:
    app = EXAMPLES / "default_credential_app.py"
    # Exactly the documented steps, in a shell: eval "$(mhsm env ...)", then the app.
    script = f'eval "$(mhsm env --data-dir {dev_pool.data_dir})" && exec python {app} app-key'
    out = ok(run(["bash", "-c", script], tmp_path))
    assert f"key: {dev_pool.url}/keys/app-key/" in out
    assert "signature: 64 bytes, valid: True" in out
    assert key_client.get_key("app-key").key_type == "EC-HSM"
    # A second run gets the key it made instead of creating another version.
    ok(run(["bash", "-c", script], tmp_path))
    assert len(list(key_client.list_properties_of_key_versions("app-key"))) == 1


# --- examples/cached_public_key.py ------------------------------------------------------------


def test_cached_public_key_verifies_and_encrypts_locally(dev_pool: DevPool, tmp_path: Path) -> None:
    cache = tmp_path / "orders-key.json"
    args: list[str | Path] = ["--pool", dev_pool.data_dir, "--key", "orders-key", "--cache", cache]
    out = ok(example("cached_public_key.py", *args, tmp=tmp_path))
    assert "signed in the pool: 3 messages (PS256)" in out
    assert "verified locally: True" in out
    assert "tampered message verified locally: False" in out
    assert "encrypted locally: 384 bytes (RSA-OAEP-256)" in out
    assert "decrypted in the pool: matches" in out
    cached = json.loads(cache.read_text())
    assert cached["kid"].startswith(f"{dev_pool.url}/keys/orders-key/")
    assert set(cached) == {"kid", "kty", "n", "e"}  # the public part only

    # Run again: the cache is used as is (not fetched and rewritten) and everything still holds.
    written = cache.stat().st_mtime_ns
    assert "decrypted in the pool: matches" in ok(
        example("cached_public_key.py", *args, tmp=tmp_path)
    )
    assert cache.stat().st_mtime_ns == written


# --- examples/ci_job.sh -----------------------------------------------------------------------


def test_ci_job_script_runs_as_is(tmp_path: Path) -> None:
    data_dir = tmp_path / "ci-pool"
    env = clean_env(tmp_path)
    env.update(MHSM_DATA_DIR=str(data_dir), MHSM_PORT=str(free_port()))
    try:
        out = ok(run(["bash", str(EXAMPLES / "ci_job.sh")], tmp_path, env, timeout=CI_TIMEOUT))
    finally:
        stop_leftover_pool(data_dir)
    assert "OpenMHSM pool serving at https://127.0.0.1:" in out
    assert "signature: 64 bytes, valid: True" in out
    assert "ci job: passed against https://127.0.0.1:" in out
    assert out.rstrip().endswith("pool stopped")  # the EXIT trap ran `mhsm down`
    started = re.search(r"serving at \S+ \(pid (\d+)\)", out)
    assert started is not None and not pid_alive(int(started[1]))
    assert "examples/ci_job.sh" in (EXAMPLES / "ci_job.yml").read_text()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is dead


def stop_leftover_pool(data_dir: Path) -> None:
    """If the script died before its trap, stop the pool it detached (by its own PID)."""
    pool_json = data_dir / "pool.json"
    if pool_json.exists():
        pid = json.loads(pool_json.read_text()).get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


# --- openmhsm.client.connect: each client once ------------------------------------------------


def test_each_client_of_connect_works(dev_pool: DevPool, tmp_path: Path) -> None:
    with connect(dev_pool.data_dir) as clients:
        roles = clients.access_control.list_role_definitions(KeyVaultRoleScope.GLOBAL)
        assert "Managed HSM Crypto User" in {r.role_name for r in roles}
        assert [s.name for s in clients.settings.list_settings()]
        status = clients.security_domain.get_download_status()
        assert status.status == "Success"
        poller = clients.backup.begin_backup(f"file://{tmp_path}", use_managed_identity=True)
        assert str(poller.result().folder_url).startswith(f"file://{tmp_path}/mhsm-")
        key = clients.key_client.create_ec_key("connect-key", curve="P-256")
        assert key.id.startswith(f"{dev_pool.url}/keys/connect-key/")


def test_connect_by_url_uses_default_azure_credential(
    dev_pool: DevPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for line in env_lines(dev_pool.doc):  # what `eval "$(mhsm env)"` would set
        name, _, value = shlex.split(line)[1].partition("=")
        monkeypatch.setenv(name, value)
    with connect(os.environ["MHSM_URL"]) as clients:
        assert clients.ca_cert == dev_pool.ca
        key = clients.key_client.create_rsa_key("url-key", size=2048, hardware_protected=True)
        assert clients.key_client.get_key("url-key").id == key.id
        assert [s.name for s in clients.settings.list_settings()]
