"""Real dev pools for integration tests: `mhsm up --dev` in a temp dir on a free port, driven by the
Azure SDK clients (and raw HTTPS where the SDK would do the work locally)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from azure.identity import ClientSecretCredential
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import KeyClient

from openmhsm.auth.roles import CRYPTO_OFFICER, CRYPTO_USER

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DevPool:
    """One `mhsm up --dev` process and what its pool.json says."""

    data_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    doc: dict[str, Any] = field(default_factory=dict)

    def start(self) -> DevPool:
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openmhsm.cli.main",
                "up",
                "--dev",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        pool_json = self.data_dir / "pool.json"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pool exited: {self.log_text()}")
            if pool_json.exists():
                doc = json.loads(pool_json.read_text())
                if doc.get("pid") == self.proc.pid:
                    self.doc = doc
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"pool did not start: {self.log_text()}")

    def log_text(self) -> str:
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def url(self) -> str:
        return str(self.doc["url"])

    @property
    def ca(self) -> str:
        return str(self.doc["ca_cert"])

    def credential(self) -> ClientSecretCredential:
        admin = self.doc["admin"]
        return ClientSecretCredential(
            self.doc["tenant_id"],
            admin["client_id"],
            admin["client_secret"],
            authority=self.doc["authority"],
            disable_instance_discovery=True,
            connection_verify=self.ca,
        )

    def key_client(self) -> KeyClient:
        return KeyClient(self.url, self.credential(), connection_verify=self.ca)

    def access_client(self) -> KeyVaultAccessControlClient:
        return KeyVaultAccessControlClient(self.url, self.credential(), connection_verify=self.ca)

    @property
    def admin_object_id(self) -> str:
        return str(json.loads((self.data_dir / "admin.json").read_text())["object_id"])

    def grant_key_roles(self) -> None:
        """Give the admin Crypto Officer and Crypto User at `/`, as `mhsm up` does in its default
        mode; a pool started with --no-activate or --recovery gives it only Managed HSM
        Administrator, which may assign roles but not use keys (as in Managed HSM)."""
        with self.access_client() as client:
            for role in (CRYPTO_OFFICER, CRYPTO_USER):
                client.create_role_assignment(KeyVaultRoleScope.GLOBAL, role, self.admin_object_id)

    def token(self) -> str:
        return self.credential().get_token(self.doc["resource"] + "/.default").token

    def http(self, token: str | None = None) -> httpx.Client:
        """A raw HTTPS client with the admin's bearer token (or the given one)."""
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        tls = ssl.create_default_context(cafile=self.ca)  # httpx deprecates verify=<path>
        return httpx.Client(base_url=self.url, verify=tls, headers=headers, timeout=30)


def start_pool(tmp: Path, *extra: str) -> DevPool:
    return DevPool(tmp / "pool", free_port(), list(extra)).start()
