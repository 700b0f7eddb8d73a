"""No secret ever reaches a log: after a workload that handles every kind of secret the pool
knows (client secrets, identity headers, access tokens, imported private keys), no file under
the data dir's `logs/` and `audit/`, nor the pool's own stdout/stderr, contains any of them.

The workload runs on a dev pool and on a three-partition pool (where each partition writes its
own audit file and its own log), and the audit log is checked to hold the allowed and the
denied calls, so the scan is not vacuous."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys import JsonWebKey, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from dev_pool import DevPool, free_port, start_pool
from pool_support import PoolProcess
from principal_support import credential, grant_crypto_user, ok, principal_cli

pytestmark = pytest.mark.integration
API = {"api-version": "2025-07-01"}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forms(name: str, raw: bytes) -> dict[str, str]:
    """Every spelling of raw key material a log could carry."""
    return {
        f"{name} b64url": b64u(raw),
        f"{name} b64": base64.b64encode(raw).decode().rstrip("="),
        f"{name} hex": raw.hex(),
        f"{name} HEX": raw.hex().upper(),
    }


@pytest.fixture(scope="module", params=["dev", "pool"])
def pool(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[DevPool]:
    tmp = tmp_path_factory.mktemp(f"secrets-{request.param}")
    started = (
        start_pool(tmp)
        if request.param == "dev"
        else PoolProcess(tmp / "pool", free_port()).start()
    )
    try:
        yield started
    finally:
        started.stop()


def run_workload(pool: DevPool, known: dict[str, str]) -> dict[str, int]:
    """Handle every kind of secret; fill `known` with them; return statuses seen by purpose."""
    doc = pool.doc
    verify = ssl.create_default_context(cafile=pool.ca)
    resource = doc["resource"] + "/.default"
    seen: dict[str, int] = {}
    known["admin secret"] = doc["admin"]["client_secret"]
    admin = credential(doc, doc["admin"]["client_id"], doc["admin"]["client_secret"])

    app = ok(principal_cli(pool.data_dir, "create", "--name", "app1"))
    mi = ok(principal_cli(pool.data_dir, "create", "--name", "mi1", "--managed-identity"))
    known |= {
        "app secret": app["client_secret"],
        "mi secret": mi["client_secret"],
        "mi identity header": mi["identity_header"],
    }
    grant_crypto_user(doc, app["object_id"])

    # The administrator imports private key material and signs with it (remotely: EC private).
    ec_private = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_private.private_numbers()
    d = numbers.private_value.to_bytes(32, "big")
    k = secrets.token_bytes(32)
    known |= forms("ec d", d) | forms("oct k", k)
    x, y = (c.to_bytes(32, "big") for c in (numbers.public_numbers.x, numbers.public_numbers.y))
    name = f"imported-{uuid.uuid4().hex[:8]}"
    with KeyClient(pool.url, admin, connection_verify=pool.ca) as keys:
        keys.import_key(name, JsonWebKey(kty="EC-HSM", crv="P-256", x=x, y=y, d=d))
        keys.import_key(f"{name}-oct", JsonWebKey(kty="oct-HSM", k=k), hardware_protected=True)
        with CryptographyClient(keys.get_key(name), admin, connection_verify=pool.ca) as crypto:
            crypto.sign(SignatureAlgorithm.es256, hashlib.sha256(b"m").digest())

    # The new application gets a token, creates a key and signs with it.
    app_credential = credential(doc, app["client_id"], app["client_secret"])
    with KeyClient(pool.url, app_credential, connection_verify=pool.ca) as keys:
        own = keys.create_ec_key(f"app-{uuid.uuid4().hex[:8]}", curve="P-256")
        with CryptographyClient(own, app_credential, connection_verify=pool.ca) as crypto:
            crypto.sign(SignatureAlgorithm.es256, hashlib.sha256(b"m").digest())

    # Failed authentications: a wrong secret, a forged bearer token, a wrong identity header.
    wrong = "wrong-" + secrets.token_urlsafe(24)
    forged = "forged." + secrets.token_urlsafe(48) + "." + secrets.token_urlsafe(32)
    wrong_header = f"{mi['client_id']}.{secrets.token_urlsafe(32)}"
    known |= {"wrong secret": wrong, "forged token": forged, "wrong header": wrong_header}
    with pytest.raises(ClientAuthenticationError):
        credential(doc, app["client_id"], wrong).get_token(resource)
    with httpx.Client(base_url=pool.url, verify=verify, timeout=30) as http:
        response = http.get("/keys", params=API, headers={"Authorization": f"Bearer {forged}"})
        seen["forged"] = response.status_code
        msi = {"api-version": "2019-08-01", "resource": doc["resource"]}
        seen["wrong header"] = http.get(
            "/msi/token", params=msi, headers={"X-IDENTITY-HEADER": wrong_header}
        ).status_code
        # The managed identity has no role: with RBAC enforced, reading a key is a 403.
        got = http.get(
            "/msi/token", params=msi, headers={"X-IDENTITY-HEADER": mi["identity_header"]}
        )
        mi_token = got.json()["access_token"]
        known["mi token"] = mi_token
        seen["no role"] = http.get(
            f"/keys/{name}/", params=API, headers={"Authorization": f"Bearer {mi_token}"}
        ).status_code

    # Every partition serves a request on its own URL with a token issued there.
    for partition in doc.get("partitions", []):
        if partition.get("url") and partition["url"] != pool.url:
            own_url = partition["url"]
            cred = credential(doc, app["client_id"], app["client_secret"], authority=own_url)
            token = cred.get_token(resource).token
            with httpx.Client(base_url=own_url, verify=verify, timeout=30) as http:
                http.get("/keys", params=API, headers={"Authorization": f"Bearer {token}"})
            known |= {f"token {own_url} {n}": t for n, t in enumerate(cred.issued)}

    reset = ok(principal_cli(pool.data_dir, "reset-secret", "--client-id", app["client_id"]))
    known["app secret after reset"] = reset["client_secret"]
    ok(principal_cli(pool.data_dir, "delete", "--client-id", mi["client_id"]))

    for who, cred in (("admin", admin), ("app", app_credential)):
        assert cred.issued, who
        known |= {f"{who} token {n}": token for n, token in enumerate(cred.issued)}
    return seen


def log_files(pool: DevPool) -> list[Path]:
    data = pool.data_dir
    files = [
        p for folder in (data / "logs", data / "audit") for p in folder.rglob("*") if p.is_file()
    ]
    return [*files, data.parent / f"{data.name}.log"]


def test_no_secret_in_any_log(pool: DevPool) -> None:
    known: dict[str, str] = {}
    seen = run_workload(pool, known)
    assert seen["forged"] == 401 and seen["wrong header"] == 401
    assert seen["no role"] in (200, 403)  # 403 once RBAC is enforced
    pool.stop()

    files = log_files(pool)
    audit = [p for p in files if p.parent.name == "audit"]
    partitions = {p.name for p in audit}
    expected = {f"partition-{n}.jsonl" for n in range(len(pool.doc.get("partitions", [])) or 1)}
    assert expected <= partitions
    if len(expected) > 1:
        assert (pool.data_dir / "logs").is_dir()

    records = [json.loads(line) for p in audit for line in p.read_text().splitlines()]
    statuses = {(r["operation"], r["status"]) for r in records}
    assert ("POST /{tenant}/oauth2/v2.0/token", 200) in statuses
    assert ("POST /{tenant}/oauth2/v2.0/token", 401) in statuses
    assert ("GET /msi/token", 401) in statuses
    assert ("GET /keys", 401) in statuses
    assert ("POST /openmhsm/principals", 201) in statuses
    assert ("PUT /keys/{name}", 200) in statuses
    assert ("POST /keys/{name}/{version}/sign", 200) in statuses
    if seen["no role"] == 403:
        denied = [r for r in records if r["status"] == 403]
        assert any(r.get("error_code") == "Forbidden" and r.get("principal") for r in denied)

    assert len(known) >= 20
    for path in files:
        text = path.read_text(errors="replace")
        leaked = [what for what, value in known.items() if value in text]
        assert not leaked, f"{path} contains: {leaked}"
