"""Helpers for tests that manage principals: the `mhsm principal` CLI, credentials for a new
principal, a credential that remembers every token it was issued, and a role grant that works
whether or not the pool enforces RBAC yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope

CLI = [sys.executable, "-m", "openmhsm.cli.main"]
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"  # "Managed HSM Crypto User" (API §3.1)
ROLE_PREFIX = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def principal_cli(data_dir: Path, verb: str, *rest: str) -> Run:
    """`mhsm principal <verb> --data-dir DIR ...` in a child process (warnings are errors)."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [*CLI, "principal", verb, "--data-dir", str(data_dir), *rest],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Run) -> Any:
    assert (result.code, result.stderr) == (0, ""), result.stderr
    return result.json


class RecordingCredential(ClientSecretCredential):
    """A ClientSecretCredential that keeps every access token it hands out in `issued`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issued: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token = super().get_token(*scopes, **kwargs)
        self.issued.append(token.token)
        return token

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        info = super().get_token_info(*scopes, options=options)
        self.issued.append(info.token)
        return info


def credential(
    doc: dict[str, Any], client_id: str, secret: str, authority: str | None = None
) -> RecordingCredential:
    return RecordingCredential(
        doc["tenant_id"],
        client_id,
        secret,
        authority=authority or doc["authority"],
        disable_instance_discovery=True,
        connection_verify=doc["ca_cert"],
    )


def grant_crypto_user(doc: dict[str, Any], object_id: str) -> None:
    """Assign "Managed HSM Crypto User" at `/` as the administrator. A pool that does not serve
    role assignments yet (404/405: RBAC not there) needs no grant."""
    admin = credential(doc, doc["admin"]["client_id"], doc["admin"]["client_secret"])
    with KeyVaultAccessControlClient(doc["url"], admin, connection_verify=doc["ca_cert"]) as c:
        try:
            c.create_role_assignment(
                KeyVaultRoleScope.GLOBAL, ROLE_PREFIX + CRYPTO_USER, object_id, name=uuid.uuid4()
            )
        except HttpResponseError as e:
            if e.status_code not in (404, 405):
                raise
